// One connected socket on the IOLoop: reads handed to a delegate, writes queued and sent per flush, optional TLS.

import CPoolIO
import NIOCore
import NIOSSL
import PGWire

#if canImport(Glibc)
import Glibc
#endif

/// Receives a transport's events on the loop.
protocol TransportDelegate: AnyObject {
    /// Bytes arrived (decrypted when TLS is on).
    func transportRead(_ buffer: ByteBuffer)
    /// Queued output fell back under the low watermark after the transport was not writable.
    func transportWritable()
    /// The socket is closed: by the peer, by an error (`error` says which) or by `close()`. Called once,
    /// after the call that closed it has returned.
    func transportClosed(error: String?)
}

/// A connected, non-blocking socket driven by the loop.
///
/// A read makes one `recv(2)` straight into one of the loop's read buffers (`IOReadBuffers`) and hands the
/// delegate that buffer; what the delegate keeps past the loop turn it compacts, so the buffer is free again
/// for a later turn. Writes are queued; `flush` asks the loop to send them when it has handled every ready
/// socket, with one `send(2)` or `sendmsg(2)` per transport (socket calls skip the file layer that
/// `read`/`write` go through, and MSG_NOSIGNAL turns a vanished peer into EPIPE, not SIGPIPE). What the
/// kernel does not take waits for EPOLLOUT. The transport reports itself not writable above
/// `highWatermark` queued bytes, and writable again under `lowWatermark`.
final class Transport: IOHandler, @unchecked Sendable {  // Confined to the loop thread.
    static let highWatermark = 256 << 10
    static let lowWatermark = 64 << 10
    static let allocator = ByteBufferAllocator()
    /// Buffers one send takes, batched or not.
    private static let maximumIOVectors = Int(CPOOLIO_BATCH_VECTORS)

    private(set) var fd: Int32
    let loop: IOLoop
    /// Held strongly while the socket is open (the session or server lives as long as its socket); let go
    /// once it has been told the socket closed.
    var delegate: (any TransportDelegate)?
    private var output: [ByteBuffer] = []
    private var outputBytes = 0
    private var reading = true
    private var waitingForWritable = false
    private var reportedUnwritable = false
    private var closeWhenFlushed = false
    /// Ends a `closeAfterFlush` whose peer does not read; cancelled when the socket closes first.
    private var closeTimer: Scheduled<Void>?
    private var flushPending = false
    /// Sent before other transports at the end of a loop turn (server connections).
    var flushesFirst = false
    private var tls: (any TLSSession)?

    var allocator: ByteBufferAllocator { Self.allocator }
    var isOpen: Bool { self.fd >= 0 }
    var isWritable: Bool { self.outputBytes < Self.highWatermark }

    /// Takes ownership of `fd`, which must be connected; it is made non-blocking and watched for reads.
    init(fd: Int32, loop: IOLoop, noDelay: Bool) throws(IOError) {
        self.fd = fd
        self.loop = loop
        guard cpoolio_set_nonblocking(fd) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw IOError(errnoCode: code, reason: "fcntl(O_NONBLOCK)")
        }
        if noDelay { _ = cpoolio_set_nodelay(fd) }
    }

    /// A transport for `fd` that reports to `delegate`, watched from now on.
    static func start(fd: Int32, loop: IOLoop, noDelay: Bool, delegate: any TransportDelegate) throws(IOError) -> Transport {
        let transport = try Transport(fd: fd, loop: loop, noDelay: noDelay)
        transport.delegate = delegate
        try transport.register()
        return transport
    }

    /// Starts watching the socket.
    private func register() throws(IOError) {
        do {
            try self.loop.register(self.fd, handler: self, events: UInt32(CPOOLIO_IN))
        } catch {
            Glibc.close(self.fd)
            self.fd = -1
            self.delegate = nil
            throw error
        }
    }

    // MARK: Reading

    func ioReady(_ events: UInt32) {
        if events & UInt32(CPOOLIO_OUT) != 0 {
            self.writeQueued()
        }
        if self.fd >= 0, events & UInt32(CPOOLIO_IN | CPOOLIO_HUP | CPOOLIO_ERR) != 0, self.reading {
            self.readOnce()
        } else if self.fd >= 0, events & UInt32(CPOOLIO_HUP | CPOOLIO_ERR) != 0 {
            // Not reading, but the socket is gone both ways: nothing more can be sent or received.
            self.fail(events & UInt32(CPOOLIO_ERR) != 0 ? "connection error" : "connection closed by the peer")
        }
    }

    private func readOnce() {
        let buffers = self.loop.readBuffers
        var buffer = buffers.next()
        var count = 0
        var code: Int32 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { space in
            count = cpoolio_recv(self.fd, space.baseAddress, space.count)
            if count < 0 { code = errno }
            return max(count, 0)
        }
        buffers.keep(buffer)
        if count > 0 {
            if let tls = self.tls {
                self.readEncrypted(buffer, tls: tls)
            } else {
                self.delegate?.transportRead(buffer)
            }
        } else if count == 0 {
            self.closeNow(error: nil)
        } else {
            if code == EAGAIN || code == EWOULDBLOCK || code == EINTR { return }
            self.fail(String(cString: strerror(code)))
        }
    }

    /// Turns reading on or off; only a change costs a system call.
    func setReading(_ on: Bool) {
        guard on != self.reading, self.fd >= 0 else { return }
        self.reading = on
        self.updateInterest()
    }

    private func updateInterest() {
        var events: UInt32 = 0
        if self.reading { events |= UInt32(CPOOLIO_IN) }
        if self.waitingForWritable { events |= UInt32(CPOOLIO_OUT) }
        self.loop.modify(self.fd, events: events)
    }

    // MARK: Writing

    /// Queues `buffer`; `flush` sends it.
    func write(_ buffer: ByteBuffer) {
        guard self.fd >= 0, !self.closeWhenFlushed, buffer.readableBytes > 0 else { return }
        if let tls = self.tls {
            tls.write(buffer)
            return
        }
        self.enqueue(buffer)
    }

    /// Bytes for the socket as they are (plaintext, or TLS records).
    private func enqueue(_ buffer: ByteBuffer) {
        self.output.append(buffer)
        self.outputBytes += buffer.readableBytes
        if self.outputBytes >= Self.highWatermark { self.reportedUnwritable = true }
    }

    func flush() {
        guard self.fd >= 0 else { return }
        if let tls = self.tls {
            for cipher in tls.flush() { self.enqueue(cipher) }
            if let failure = tls.failure {
                self.fail("TLS: \(failure)")
                return
            }
        }
        guard !self.waitingForWritable, !self.flushPending, !self.output.isEmpty else { return }
        // Sent when the loop has handled every ready socket: wake-ups of peers come together, at the end.
        self.flushPending = true
        self.loop.flushLater(self)
    }

    /// The loop's end-of-turn flush.
    func flushNow() {
        guard self.flushPending else { return }
        self.flushPending = false
        guard self.fd >= 0, !self.waitingForWritable else { return }
        self.writeQueued()
    }

    func writeAndFlush(_ buffer: ByteBuffer) {
        self.write(buffer)
        self.flush()
    }

    /// What `addSend(to:)` did.
    enum BatchedSend {
        case added
        case nothingToSend
        case batchFull
        /// The batch cannot hold this send: it is to be made directly.
        case refused
    }

    /// The loop's end-of-turn flush, made as one send of the loop's batch: `sentInBatch` and then
    /// `finishBatchedSend` get its result once the batch is submitted.
    func addSend(to batch: OpaquePointer) -> BatchedSend {
        guard self.flushPending else { return .nothingToSend }
        guard self.fd >= 0, !self.waitingForWritable, !self.output.isEmpty else {
            self.flushPending = false
            return .nothingToSend
        }
        // The buffers stay in `output`, unchanged, until the batch is submitted.
        let index = self.withOutputVectors { cpoolio_batch_add(batch, self.fd, $0, $1) }
        guard index >= 0 else { return index == -1 ? .batchFull : .refused }
        self.flushPending = false
        return .added
    }

    /// Takes out of the queue what the batch sent: every transport of a batch does this before any of them
    /// reacts (`finishBatchedSend`), so that nothing already sent can be sent again by a reaction.
    func sentInBatch(_ result: Int32) {
        if result > 0, self.fd >= 0 { self.consume(Int(result)) }
    }

    /// Acts on the result of the batch's send: waits for the socket to drain, fails, or sends the rest.
    func finishBatchedSend(_ result: Int32) {
        guard self.fd >= 0 else { return }
        if result >= 0 {
            if self.output.isEmpty {
                self.wrote()
                return
            }
        } else if result != Int32(CPOOLIO_BATCH_NOT_SENT), -result != EINTR {
            self.sendFailed(-result)
            return
        }
        // Sent in part (more buffers than one send takes, or the kernel took only some of them), or not at
        // all: the rest goes out directly.
        self.writeQueued()
    }

    /// Sends what is queued until done or the kernel is full.
    private func writeQueued() {
        while !self.output.isEmpty, self.fd >= 0 {
            let written: Int
            if self.output.count == 1 {
                written = self.output[0].withUnsafeReadableBytes { cpoolio_send(self.fd, $0.baseAddress, $0.count) }
            } else {
                written = self.writeVector()
            }
            if written < 0 {
                let code = errno
                if code == EINTR { continue }
                self.sendFailed(code)
                return
            }
            self.consume(written)
        }
        self.wrote()
    }

    /// After output was sent: the socket's interest, the delegate's writability and a close that waited.
    private func wrote() {
        guard self.fd >= 0 else { return }
        if self.waitingForWritable {
            self.waitingForWritable = false
            self.updateInterest()
        }
        if self.reportedUnwritable, self.outputBytes < Self.lowWatermark {
            self.reportedUnwritable = false
            self.delegate?.transportWritable()
        }
        if self.closeWhenFlushed, self.output.isEmpty { self.closeNow(error: nil) }
    }

    /// A send failed with `code` (not EINTR): a full socket waits for EPOLLOUT, anything else closes it.
    private func sendFailed(_ code: Int32) {
        if code == EAGAIN || code == EWOULDBLOCK {
            self.awaitWritable()
        } else {
            self.fail(String(cString: strerror(code)))
        }
    }

    private func writeVector() -> Int {
        // The buffers stay alive in `output` for the call; their storage does not move.
        self.withOutputVectors { cpoolio_sendv(self.fd, $0, $1) }
    }

    /// Calls `body` with vectors for the first queued buffers (at most `maximumIOVectors`) and their count.
    private func withOutputVectors<Result>(_ body: (UnsafePointer<iovec>, Int32) -> Result) -> Result {
        let count = min(self.output.count, Self.maximumIOVectors)
        return withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { vectors in
            for index in 0..<count {
                self.output[index].withUnsafeReadableBytes { bytes in
                    vectors[index] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                }
            }
            return body(UnsafePointer(vectors.baseAddress!), Int32(count))
        }
    }

    private func consume(_ written: Int) {
        var left = written
        self.outputBytes -= written
        var done = 0
        while left > 0, done < self.output.count {
            let size = self.output[done].readableBytes
            if size <= left {
                left -= size
                done += 1
            } else {
                self.output[done].moveReaderIndex(forwardBy: left)
                left = 0
            }
        }
        if done == self.output.count {
            // A server's storage (usually for one buffer or a few) is kept for its next messages; a client's is
            // let go, so that an idle client holds none: one small allocation per reply costs less than that.
            if done <= 4, self.flushesFirst {
                self.output.removeAllKeepingStorage()
            } else {
                self.output.removeAll()
            }
        } else if done > 0 {
            self.output.removeFirst(done)
        }
    }

    private func awaitWritable() {
        guard !self.waitingForWritable else { return }
        self.waitingForWritable = true
        self.updateInterest()
    }

    // MARK: TLS

    /// Everything read and written from now on is TLS; the peer's ClientHello comes next.
    func startTLS(context: NIOSSLContext) throws {
        self.tls = try TLSLayer(context: context)
    }

    /// Everything read and written from now on goes through `session`, whose handshake is done (a server's).
    func startTLS(session: any TLSSession) {
        self.tls = session
    }

    private func readEncrypted(_ cipher: ByteBuffer, tls: any TLSSession) {
        let result = tls.decrypt(cipher)
        for plain in result.plaintext {
            guard self.fd >= 0 else { return }
            self.delegate?.transportRead(plain)
        }
        guard self.fd >= 0 else { return }
        // Handshake messages and alerts go out at once.
        self.flush()
        if let error = result.error {
            self.fail("TLS: \(error)")
        } else if result.closed {
            self.close()
        }
    }

    // MARK: Closing

    /// Sends what is queued, then closes; gives up on a peer that does not read within five seconds.
    func closeAfterFlush() {
        guard self.fd >= 0 else { return }
        self.flush()
        self.flushNow()
        guard self.fd >= 0, !self.output.isEmpty else {
            self.close()
            return
        }
        self.closeWhenFlushed = true
        self.setReading(false)
        self.closeTimer = self.loop.scheduleTask(in: .seconds(5)) { [self] in self.close() }
    }

    func close() {
        guard self.fd >= 0 else { return }
        // A close_notify, sent if the kernel takes it now; not behind records still queued (the peer would
        // read a gap in the stream, not a clean end).
        if let tls = self.tls, self.output.isEmpty {
            for cipher in tls.close() {
                _ = cipher.withUnsafeReadableBytes { cpoolio_send(self.fd, $0.baseAddress, $0.count) }
            }
        }
        self.closeNow(error: nil)
    }

    private func fail(_ error: String) {
        self.closeNow(error: error)
    }

    private func closeNow(error: String?) {
        guard self.fd >= 0 else { return }
        self.loop.deregister(self.fd)
        Glibc.close(self.fd)
        self.fd = -1
        self.closeTimer?.cancel()
        self.closeTimer = nil
        self.output.removeAll()
        self.outputBytes = 0
        self.tls = nil
        self.loop.executeSoon { [self] in
            let delegate = self.delegate
            self.delegate = nil
            delegate?.transportClosed(error: error)
        }
    }

    // MARK: Peer

    /// The peer's IP address and port; nil for a Unix socket, or when the socket has no peer.
    func peerAddress() -> PeerAddress? {
        var family: Int32 = 0
        var port: Int32 = 0
        var bytes = [UInt8](repeating: 0, count: 16)
        guard cpoolio_peer_address(self.fd, &family, &bytes, &port) == 0 else { return nil }
        switch family {
        case AF_INET: return PeerAddress(bytes: Array(bytes[0..<4]), port: Int(port))
        case AF_INET6: return PeerAddress(bytes: bytes, port: Int(port))
        default: return nil
        }
    }

    /// SO_PEERCRED, for peer authentication on the Unix socket.
    func peerCredentials() throws(IOError) -> PeerCredentials {
        var credentials = PeerCredentials()
        guard cpoolio_peer_credentials(self.fd, &credentials.pid, &credentials.uid, &credentials.gid) == 0 else {
            throw IOError(errnoCode: errno, reason: "getsockopt(SO_PEERCRED)")
        }
        return credentials
    }
}

/// A loop's read buffers, taken in turn from the first one at every loop turn: reads in one turn use
/// different buffers, as their bytes wait in output queues until the turn's flush, and the next turn reads
/// into the same few buffers again (warm in the cache) without allocating. One whose bytes are still held
/// somewhere, by output the kernel could not take yet, is replaced by a fresh one, which `clear()` does by
/// itself.
final class IOReadBuffers: @unchecked Sendable {  // Used only on its loop's thread.
    static let capacity = 16 << 10
    private var buffers: [ByteBuffer?] = Array(repeating: nil, count: 256)
    private var index = 0

    /// An empty buffer for the next read.
    func next() -> ByteBuffer {
        self.index = (self.index + 1) & (self.buffers.count - 1)
        guard var buffer = self.buffers[self.index] else { return Transport.allocator.buffer(capacity: Self.capacity) }
        self.buffers[self.index] = nil
        buffer.clear()
        return buffer
    }

    /// Starts the next loop turn at the first buffer.
    func rewind() {
        self.index = self.buffers.count - 1
    }

    /// Keeps the buffer just read into for a later turn.
    func keep(_ buffer: ByteBuffer) {
        self.buffers[self.index] = buffer
    }
}
