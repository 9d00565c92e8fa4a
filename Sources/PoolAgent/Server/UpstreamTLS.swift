// TLS to a server after libpq's login: libpq's own OpenSSL session, carried on by the agent's loop over memory
// buffers, and the context cancel requests open new sessions with.

import CPoolIO
import NIOCore

/// An error OpenSSL reported, in its words.
struct TLSFailure: Error, CustomStringConvertible {
    var description: String
}

/// The TLS session of one server connection, fed and drained by its transport.
///
/// The session is libpq's (`PQsslStruct`): the handshake, certificate checks and SCRAM channel binding were done
/// by libpq. Adopting it moves it off libpq's socket onto memory buffers, so the loop reads and writes the
/// socket as for plaintext (one `recv` per readable socket, batched sends) and OpenSSL only encrypts and
/// decrypts. The `PGconn` keeps owning it; `UpstreamLink.finish` lets go of it before `PQfinish` frees it.
final class UpstreamTLS: TLSSession, @unchecked Sendable {  // Made on the loop and used only there.
    private var session: UnsafeMutableRawPointer?
    private var pending: [ByteBuffer] = []
    private var pendingBytes = 0
    /// Where several writes of one flush are joined, so they become one run of records.
    private var joined = Transport.allocator.buffer(capacity: 0)
    private(set) var isClosed = false
    private(set) var failure: String?
    /// Where the C side writes an error's text.
    private let message = TLSMessage()

    init(adopting session: UnsafeMutableRawPointer) throws(TLSFailure) {
        guard cpoolio_tls_adopt(session) == 0 else { throw TLSFailure(description: "out of memory adopting the server's TLS session") }
        self.session = session
    }

    func decrypt(_ cipher: ByteBuffer) -> DecryptedInput {
        var result = DecryptedInput()
        guard let session = self.session, !self.isClosed else {
            result.closed = true
            return result
        }
        let fed = cipher.withUnsafeReadableBytes { cpoolio_tls_feed(session, $0.baseAddress, Int32($0.count)) }
        guard fed == 0 else {
            result.error = TLSFailure(description: "out of memory")
            return result
        }
        // Records are never larger decrypted than encrypted: one buffer of the ciphertext's size is usually enough.
        var plain = Transport.allocator.buffer(capacity: max(cipher.readableBytes, 1024))
        while true {
            if plain.writableBytes < 512 { plain.reserveCapacity(minimumWritableBytes: 16 << 10) }
            var status: Int32 = 0
            plain.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { space in
                status = cpoolio_tls_read(session, space.baseAddress, Int32(min(space.count, Int(Int32.max))), self.message.pointer, TLSMessage.capacity)
                return max(Int(status), 0)
            }
            if status > 0 { continue }
            if status == -1 { result.closed = true }
            if status == -2 { result.error = TLSFailure(description: self.message.text) }
            break
        }
        if plain.readableBytes > 0 { result.plaintext.append(plain) }
        return result
    }

    func write(_ plain: ByteBuffer) {
        guard self.session != nil, !self.isClosed else { return }
        self.pending.append(plain)
        self.pendingBytes += plain.readableBytes
    }

    func flush() -> [ByteBuffer] {
        guard let session = self.session, !self.isClosed else { return [] }
        if !self.pending.isEmpty {
            var status: Int32 = 0
            if self.pending.count == 1 {
                status = self.pending[0].withUnsafeReadableBytes { cpoolio_tls_write(session, $0.baseAddress, Int32($0.count), self.message.pointer, TLSMessage.capacity) }
            } else {
                self.joined.clear()
                self.joined.reserveCapacity(self.pendingBytes)
                for var buffer in self.pending { self.joined.writeBuffer(&buffer) }
                status = self.joined.withUnsafeReadableBytes { cpoolio_tls_write(session, $0.baseAddress, Int32($0.count), self.message.pointer, TLSMessage.capacity) }
                if self.joined.capacity > 256 << 10 { self.joined = Transport.allocator.buffer(capacity: 0) }
            }
            self.pending.removeAll(keepingCapacity: self.pending.count <= 16)
            self.pendingBytes = 0
            // Writing into memory fails only without memory or after a fatal error: the session is of no use.
            if status != 0 {
                self.isClosed = true
                self.failure = self.message.text
            }
        }
        return self.takeOutput(session)
    }

    /// A Terminate and a close_notify, as libpq's `PQfinish` would send; nothing once closed.
    func close() -> [ByteBuffer] {
        guard let session = self.session, !self.isClosed else { return [] }
        var output = self.flush()
        self.isClosed = true
        let terminate: [UInt8] = [UInt8(ascii: "X"), 0, 0, 0, 4]
        _ = terminate.withUnsafeBytes { cpoolio_tls_write(session, $0.baseAddress, Int32($0.count), self.message.pointer, TLSMessage.capacity) }
        cpoolio_tls_shutdown(session)
        output += self.takeOutput(session)
        return output
    }

    /// libpq is about to free the session: nothing may touch it from now on.
    func release() {
        self.session = nil
        self.isClosed = true
        self.pending = []
    }

    private func takeOutput(_ session: UnsafeMutableRawPointer) -> [ByteBuffer] {
        let length = Int(cpoolio_tls_output_length(session))
        guard length > 0 else { return [] }
        var cipher = Transport.allocator.buffer(capacity: length)
        cipher.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { space in
            Int(cpoolio_tls_take_output(session, space.baseAddress, Int32(length)))
        }
        return [cipher]
    }
}

/// Room for an error text from the C side.
final class TLSMessage {
    static let capacity = 256
    let pointer = UnsafeMutablePointer<CChar>.allocate(capacity: TLSMessage.capacity)

    init() { self.pointer.initialize(to: 0) }

    var text: String { String(cString: self.pointer) }

    deinit { self.pointer.deallocate() }
}

/// How cancel requests reach a server whose connection is TLS: a new session per request from libpq's
/// context (roots, CRLs, client certificate and key, protocol versions), with the same SNI and host name
/// check as the login.
final class CancelTLS: @unchecked Sendable {  // Immutable after init; the C context is only read.
    private let client: OpaquePointer
    /// SNI sent with the ClientHello (libpq's sslsni, for a host name that is not an IP address).
    let serverName: String?
    /// The name or address the certificate must match (sslmode=verify-full), else nil.
    let verifyHost: String?
    /// sslmode=prefer: a server that declines TLS takes the request in plaintext; stricter modes fail.
    let plaintextIfDeclined: Bool

    init?(session: UnsafeMutableRawPointer, serverName: String?, verifyHost: String?, plaintextIfDeclined: Bool) {
        guard let client = cpoolio_tls_client_from(session) else { return nil }
        self.client = client
        self.serverName = serverName
        self.verifyHost = verifyHost
        self.plaintextIfDeclined = plaintextIfDeclined
    }

    /// A new client session, handshake not started; freed with `cpoolio_tls_free`.
    func newSession() -> Result<UnsafeMutableRawPointer, TLSFailure> {
        let message = TLSMessage()
        guard let session = cpoolio_tls_client_session(self.client, self.serverName, self.verifyHost, message.pointer, TLSMessage.capacity) else {
            return .failure(TLSFailure(description: message.text))
        }
        return .success(session)
    }

    deinit { cpoolio_tls_client_free(self.client) }
}
