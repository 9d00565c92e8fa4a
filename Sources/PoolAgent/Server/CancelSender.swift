// A CancelRequest sent by the agent itself: a non-blocking connect from the event loop to the server's
// address, 16 bytes, then the server's close, all within a deadline; no worker thread waits on a network.

import CPoolIO
import NIOCore
import PGWire

#if canImport(Glibc)
import Glibc
#endif

/// How a cancel request ended.
struct CancelOutcome {
    /// Why it did not complete; nil when the server took it and closed the connection.
    var failure: String?
    /// The request went out but its end was not seen: the server may still act on it.
    var mayStillLand: Bool
}

final class CancelSender: IOHandler, @unchecked Sendable {  // Confined to the loop thread.
    private enum Stage { case connecting, waitingForClose, done }

    private let loop: IOLoop
    private var fd: Int32
    private let packet: [UInt8]
    private var stage = Stage.connecting
    private var timer: Scheduled<Void>?
    private var completion: ((CancelOutcome) -> Void)?

    private init(loop: IOLoop, fd: Int32, packet: [UInt8], completion: @escaping (CancelOutcome) -> Void) {
        self.loop = loop
        self.fd = fd
        self.packet = packet
        self.completion = completion
    }

    /// Asks the server that `serverSocket` is connected to to cancel what backend `processID` runs.
    /// `completion` learns when the server has read the request and closed the connection (as libpq's
    /// PQcancel waits for), or why that did not happen within `timeout`. Call on the loop.
    static func send(processID: Int32, secretKey: Int32, toPeerOf serverSocket: Int32, loop: IOLoop, timeout: TimeAmount,
                     completion: @escaping (CancelOutcome) -> Void) {
        var packet: [UInt8] = []
        for value in [Int32(16), StartupPacket.cancelRequestCode, processID, secretKey] {
            withUnsafeBytes(of: value.bigEndian) { packet.append(contentsOf: $0) }
        }
        let fd = cpoolio_connect_to_peer_of(serverSocket)
        guard fd >= 0 else {
            completion(CancelOutcome(failure: "cannot connect to send the cancel request: \(String(cString: strerror(errno)))", mayStillLand: false))
            return
        }
        let sender = CancelSender(loop: loop, fd: fd, packet: packet, completion: completion)
        do {
            try loop.register(fd, handler: sender, events: UInt32(CPOOLIO_OUT))
        } catch {
            Glibc.close(fd)
            completion(CancelOutcome(failure: "cannot send the cancel request: \(error)", mayStillLand: false))
            return
        }
        sender.timer = loop.scheduleTask(in: timeout) { [sender] in
            sender.finish("the server did not take the cancel request within \(timeout.nanoseconds / 1_000_000_000) s")
        }
    }

    func ioReady(_ events: UInt32) {
        switch self.stage {
        case .connecting:
            // Only the connect's own end counts (an event left over from a descriptor that closed earlier in
            // the same batch and had this number must not).
            guard events & UInt32(CPOOLIO_OUT | CPOOLIO_ERR | CPOOLIO_HUP) != 0 else { return }
            let error = cpoolio_connect_error(self.fd)
            guard error == 0 else {
                self.finish("cannot connect to send the cancel request: \(String(cString: strerror(error)))")
                return
            }
            let sent = self.packet.withUnsafeBytes { cpoolio_send(self.fd, $0.baseAddress, $0.count) }
            if sent < 0, [EAGAIN, EINTR, ENOTCONN, EINPROGRESS].contains(errno) { return }  // not connected yet
            guard sent == self.packet.count else {
                self.finish("cannot send the cancel request: \(String(cString: strerror(errno)))")
                return
            }
            self.stage = .waitingForClose
            self.loop.modify(self.fd, events: UInt32(CPOOLIO_IN))
        case .waitingForClose:
            // PostgreSQL answers nothing: it closes once it has acted on the request.
            var byte: UInt8 = 0
            let read = cpoolio_recv(self.fd, &byte, 1)
            if read < 0, errno == EAGAIN || errno == EINTR { return }
            self.finish(nil)
        case .done:
            break
        }
    }

    private func finish(_ failure: String?) {
        guard self.stage != .done else { return }
        let sent = self.stage == .waitingForClose
        self.stage = .done
        self.timer?.cancel()
        self.timer = nil
        self.loop.deregister(self.fd)
        Glibc.close(self.fd)
        self.fd = -1
        let completion = self.completion
        self.completion = nil
        // Once the 16 bytes are out, only the server's close says it has acted on them.
        completion?(CancelOutcome(failure: failure, mayStillLand: failure != nil && sent))
    }
}
