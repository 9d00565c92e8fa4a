// The sd_notify protocol, spoken by the agent itself: datagrams to the socket systemd names in NOTIFY_SOCKET.

import CPoolIO
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Tells systemd (`Type=notify`) how the agent is doing: `READY=1` once it serves, `RELOADING=1` and `READY=1`
/// around a SIGHUP reload, `STOPPING=1`, a `STATUS=` line with each, and `WATCHDOG=1` at half of
/// `WatchdogSec` from the event loop itself, so a wedged loop stops the pings and systemd restarts the agent.
/// Without NOTIFY_SOCKET (not started by systemd) it does nothing.
final class SystemdNotifier: Sendable {
    private let socket: String?
    /// Half the watchdog interval systemd asked for (WATCHDOG_USEC, for this process per WATCHDOG_PID).
    let watchdogInterval: TimeAmount?

    init(environment: (String) -> String? = SystemdNotifier.processEnvironment) {
        self.socket = environment("NOTIFY_SOCKET").flatMap { $0.isEmpty ? nil : $0 }
        let forThisProcess = environment("WATCHDOG_PID").map { Int32($0) == getpid() } ?? true
        if forThisProcess, let text = environment("WATCHDOG_USEC"), let microseconds = Int64(text), microseconds > 0 {
            self.watchdogInterval = .microseconds(max(microseconds / 2, 1000))
        } else {
            self.watchdogInterval = nil
        }
    }

    static func processEnvironment(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

    var isActive: Bool { self.socket != nil }

    /// Sends `fields` (`NAME=value` lines) as one datagram; a failure is returned, never thrown.
    @discardableResult
    func notify(_ fields: [String]) -> String? {
        guard let socket = self.socket else { return nil }
        let message = fields.joined(separator: "\n")
        guard cpoolio_notify(socket, message) == 0 else { return String(cString: strerror(errno)) }
        return nil
    }

    func ready(status: String) { self.notify(["READY=1", "STATUS=\(status)"]) }

    /// RELOADING=1 with the monotonic time systemd 253+ wants alongside it.
    func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let microseconds = Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
        self.notify(["RELOADING=1", "MONOTONIC_USEC=\(microseconds)", "STATUS=reloading the configuration"])
    }

    func stopping(status: String) { self.notify(["STOPPING=1", "STATUS=\(status)"]) }

    /// Pings the watchdog from `loop` for as long as the loop runs.
    func startWatchdog(on loop: any EventLoop) {
        guard self.isActive, let interval = self.watchdogInterval else { return }
        loop.scheduleRepeatedTask(initialDelay: .zero, delay: interval) { _ in
            self.notify(["WATCHDOG=1"])
        }
    }
}
