// A listening socket on the IOLoop: accepts clients in batches and hands each descriptor on.

import CPoolIO
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A TCP or Unix listening socket whose connections become client sessions.
final class Listener: IOHandler, @unchecked Sendable {  // Confined to the loop thread.
    /// Connections accepted per readiness event, so a storm of connects cannot starve established clients.
    private static let acceptBatch = 256

    private(set) var fd: Int32
    let loop: IOLoop
    private let logger: Logger
    private let accepted: (Int32) -> Void
    private var paused = false
    /// Called when accept fails for lack of descriptors, before retrying: the runtime sheds clients then.
    var onDescriptorsExhausted: (() -> Void)?

    private init(fd: Int32, loop: IOLoop, logger: Logger, accepted: @escaping (Int32) -> Void) {
        self.fd = fd
        self.loop = loop
        self.logger = logger
        self.accepted = accepted
    }

    /// Listens on `host`:`port` (or the Unix socket `path`) with a backlog of `backlog`.
    static func open(host: String? = nil, port: Int = 0, path: String? = nil, backlog: Int32, loop: IOLoop, logger: Logger,
                     accepted: @escaping (Int32) -> Void) throws -> Listener {
        let fd: Int32
        if let path {
            fd = cpoolio_listen_unix(path, backlog)
        } else {
            fd = cpoolio_listen_tcp(host, Int32(port), backlog)
        }
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: path == nil ? "bind/listen" : "bind/listen \(path!)") }
        return Listener(fd: fd, loop: loop, logger: logger, accepted: accepted)
    }

    /// Starts accepting; call on the loop.
    func start() throws(IOError) {
        try self.loop.register(self.fd, handler: self, events: UInt32(CPOOLIO_IN))
    }

    func ioReady(_ events: UInt32) {
        for _ in 0..<Self.acceptBatch {
            guard self.fd >= 0 else { return }
            let client = cpoolio_accept(self.fd)
            if client >= 0 {
                self.accepted(client)
                continue
            }
            let code = errno
            switch code {
            case EAGAIN, EWOULDBLOCK:
                return
            case EINTR, ECONNABORTED, EPROTO:
                continue
            case EMFILE, ENFILE:
                // Out of descriptors: clients still logging in make room, so server connects do not starve;
                // the connection waits in the backlog meanwhile.
                self.logger.warning("cannot accept a connection, retrying in 100 ms", metadata: [LogKey.error: "\(String(cString: strerror(code)))"])
                self.onDescriptorsExhausted?()
                self.pause(for: .milliseconds(100))
                return
            case ENOBUFS, ENOMEM:
                // The connection waits in the backlog; retry shortly instead of spinning on the ready socket.
                self.logger.warning("cannot accept a connection, retrying in 100 ms", metadata: [LogKey.error: "\(String(cString: strerror(code)))"])
                self.pause(for: .milliseconds(100))
                return
            default:
                self.logger.error("accept failed", metadata: [LogKey.error: "\(String(cString: strerror(code)))"])
                self.pause(for: .milliseconds(100))
                return
            }
        }
    }

    private func pause(for delay: TimeAmount) {
        guard !self.paused else { return }
        self.paused = true
        self.loop.modify(self.fd, events: 0)
        _ = self.loop.scheduleTask(in: delay) { [self] in
            self.paused = false
            if self.fd >= 0 { self.loop.modify(self.fd, events: UInt32(CPOOLIO_IN)) }
        }
    }

    func close() {
        guard self.fd >= 0 else { return }
        self.loop.deregister(self.fd)
        Glibc.close(self.fd)
        self.fd = -1
    }
}
