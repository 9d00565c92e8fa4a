// A CancelRequest sent by the agent itself: a non-blocking connect from the event loop to the server's
// address, TLS where the server connection has it, 16 bytes, then the server's close, all within a deadline;
// no worker thread waits on a network.

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
    private enum Stage { case connecting, awaitingTLSAnswer, handshaking, waitingForClose, done }

    private let loop: IOLoop
    private var fd: Int32
    private let packet: [UInt8]
    private let tls: CancelTLS?
    private var session: UnsafeMutableRawPointer?
    private let message = TLSMessage()
    private var stage = Stage.connecting
    private var timer: Scheduled<Void>?
    private var completion: ((CancelOutcome) -> Void)?

    private init(loop: IOLoop, fd: Int32, packet: [UInt8], tls: CancelTLS?, completion: @escaping (CancelOutcome) -> Void) {
        self.loop = loop
        self.fd = fd
        self.packet = packet
        self.tls = tls
        self.completion = completion
    }

    /// Asks the server that `serverSocket` is connected to to cancel what backend `processID` runs.
    /// `completion` learns when the server has read the request and closed the connection (as libpq's
    /// PQcancel waits for), or why that did not happen within `timeout`. With `tls` the request goes inside
    /// a TLS session negotiated as libpq 17 does for the connection's sslmode. Call on the loop.
    static func send(processID: Int32, secretKey: Int32, toPeerOf serverSocket: Int32, tls: CancelTLS?, loop: IOLoop,
                     timeout: TimeAmount, completion: @escaping (CancelOutcome) -> Void) {
        var packet: [UInt8] = []
        for value in [Int32(16), StartupPacket.cancelRequestCode, processID, secretKey] {
            withUnsafeBytes(of: value.bigEndian) { packet.append(contentsOf: $0) }
        }
        let fd = cpoolio_connect_to_peer_of(serverSocket)
        guard fd >= 0 else {
            completion(CancelOutcome(failure: "cannot connect to send the cancel request: \(String(cString: strerror(errno)))", mayStillLand: false))
            return
        }
        let sender = CancelSender(loop: loop, fd: fd, packet: packet, tls: tls, completion: completion)
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
            // Over TLS an SSLRequest goes first, which the server answers with one byte.
            let first = self.tls != nil ? StartupPacket.sslRequestPacket : self.packet
            let sent = first.withUnsafeBytes { cpoolio_send(self.fd, $0.baseAddress, $0.count) }
            if sent < 0, [EAGAIN, EINTR, ENOTCONN, EINPROGRESS].contains(errno) { return }  // not connected yet
            guard sent == first.count else {
                self.finish("cannot send the cancel request: \(String(cString: strerror(errno)))")
                return
            }
            self.stage = self.tls != nil ? .awaitingTLSAnswer : .waitingForClose
            self.loop.modify(self.fd, events: UInt32(CPOOLIO_IN))
        case .awaitingTLSAnswer:
            var answer: UInt8 = 0
            let read = cpoolio_recv(self.fd, &answer, 1)
            if read < 0, errno == EAGAIN || errno == EINTR { return }
            guard read == 1, let tls = self.tls else {
                self.finish("the server closed the connection before answering the SSLRequest of the cancel request")
                return
            }
            if answer == UInt8(ascii: "S") {
                switch tls.newSession() {
                case .success(let session):
                    self.session = session
                    self.stage = .handshaking
                    self.handshake()
                case .failure(let failure):
                    self.finish("cannot start TLS for the cancel request: \(failure)")
                }
            } else if answer == UInt8(ascii: "N"), tls.plaintextIfDeclined {
                self.sendRequest(self.packet)
            } else {
                self.finish("the server does not support TLS for the cancel request")
            }
        case .handshaking:
            guard let session = self.session, let input = self.receive() else { return }
            guard cpoolio_tls_feed(session, input, Int32(input.count)) == 0 else {
                self.finish("out of memory in the cancel request's TLS handshake")
                return
            }
            self.handshake()
        case .waitingForClose:
            // PostgreSQL answers nothing: it closes once it has acted on the request (after a close_notify or
            // a session ticket over TLS).
            var scratch = [UInt8](repeating: 0, count: 512)
            let read = scratch.withUnsafeMutableBytes { cpoolio_recv(self.fd, $0.baseAddress, $0.count) }
            if read > 0 { return }
            if read < 0, errno == EAGAIN || errno == EINTR { return }
            self.finish(nil)
        case .done:
            break
        }
    }

    /// What the socket holds now; nil when it is empty, or closed (then the request has failed).
    private func receive() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        let read = buffer.withUnsafeMutableBytes { cpoolio_recv(self.fd, $0.baseAddress, $0.count) }
        if read < 0, errno == EAGAIN || errno == EINTR { return nil }
        guard read > 0 else {
            self.finish("the server closed the connection during the cancel request's TLS handshake")
            return nil
        }
        return Array(buffer[0..<read])
    }

    /// Takes the handshake a step; once done, sends the request inside the session.
    private func handshake() {
        guard let session = self.session else { return }
        let done = cpoolio_tls_handshake(session, self.message.pointer, TLSMessage.capacity)
        guard done >= 0 else {
            self.finish("TLS handshake of the cancel request failed: \(self.message.text)")
            return
        }
        guard self.sendTLSOutput(session) else { return }
        guard done == 1 else { return }
        let written = self.packet.withUnsafeBytes { cpoolio_tls_write(session, $0.baseAddress, Int32($0.count), self.message.pointer, TLSMessage.capacity) }
        guard written == 0 else {
            self.finish("cannot encrypt the cancel request: \(self.message.text)")
            return
        }
        var output: [UInt8] = []
        self.takeTLSOutput(session, into: &output)
        self.sendRequest(output)
    }

    private func takeTLSOutput(_ session: UnsafeMutableRawPointer, into output: inout [UInt8]) {
        let length = Int(cpoolio_tls_output_length(session))
        guard length > 0 else { return }
        var bytes = [UInt8](repeating: 0, count: length)
        let taken = bytes.withUnsafeMutableBytes { Int(cpoolio_tls_take_output(session, $0.baseAddress, Int32(length))) }
        output += bytes[0..<taken]
    }

    private func sendTLSOutput(_ session: UnsafeMutableRawPointer) -> Bool {
        var output: [UInt8] = []
        self.takeTLSOutput(session, into: &output)
        return output.isEmpty || self.sendAll(output)
    }

    /// Sends `bytes` whole: a few hundred bytes on a new connection, which the kernel takes at once.
    private func sendAll(_ bytes: [UInt8]) -> Bool {
        let sent = bytes.withUnsafeBytes { cpoolio_send(self.fd, $0.baseAddress, $0.count) }
        guard sent == bytes.count else {
            let reason = sent < 0 ? String(cString: strerror(errno)) : "the kernel took \(sent) of \(bytes.count) bytes"
            self.finish("cannot send the cancel request: \(reason)")
            return false
        }
        return true
    }

    /// Sends the request (plain, or its TLS records) and waits for the server's close.
    private func sendRequest(_ bytes: [UInt8]) {
        guard self.sendAll(bytes) else { return }
        self.stage = .waitingForClose
        self.loop.modify(self.fd, events: UInt32(CPOOLIO_IN))
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
        if let session = self.session {
            self.session = nil
            cpoolio_tls_free(session)
        }
        let completion = self.completion
        self.completion = nil
        // Once the 16 bytes are out, only the server's close says it has acted on them.
        completion?(CancelOutcome(failure: failure, mayStillLand: failure != nil && sent))
    }
}
