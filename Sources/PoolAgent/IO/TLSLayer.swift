// TLS for a transport: NIOSSL's server handler in an embedded channel, fed ciphertext and drained of it.

import NIOCore
import NIOEmbedded
import NIOSSL

/// One TLS connection without a socket of its own: the transport feeds it what it reads and sends what it
/// produces. Clients' sessions are `TLSLayer`s; servers' are `UpstreamTLS`.
protocol TLSSession: AnyObject {
    /// Feeds ciphertext; returns the plaintext it completed.
    func decrypt(_ cipher: ByteBuffer) -> DecryptedInput
    func write(_ plain: ByteBuffer)
    func flush() -> [ByteBuffer]
    /// What to send before the socket closes (a close_notify).
    func close() -> [ByteBuffer]
    /// Why the session can no longer encrypt, once it cannot; the transport then closes.
    var failure: String? { get }
}

extension TLSSession {
    var failure: String? { nil }
}

/// What a TLS session made of ciphertext it was fed.
struct DecryptedInput {
    var plaintext: [ByteBuffer] = []
    var error: (any Error)?
    /// The peer ended TLS (close_notify) or the handshake failed.
    var closed = false
}

/// The server side of one TLS connection, without a socket of its own.
///
/// NIOSSL runs in an `EmbeddedChannel` on the loop thread: ciphertext from the socket goes in as inbound
/// data and comes out as plaintext; plaintext written goes out as ciphertext for the transport to send.
final class TLSLayer: TLSSession {
    private let channel: EmbeddedChannel

    init(context: NIOSSLContext) throws {
        self.channel = EmbeddedChannel()
        try self.channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
        // Connected, as the socket is: the handler waits for the ClientHello.
        self.channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 0), promise: nil)
    }

    func decrypt(_ cipher: ByteBuffer) -> DecryptedInput {
        var result = DecryptedInput()
        do {
            try self.channel.writeInbound(cipher)
            while let plain = try self.channel.readInbound(as: ByteBuffer.self) {
                result.plaintext.append(plain)
            }
        } catch {
            result.error = error
        }
        self.channel.embeddedEventLoop.run()
        result.closed = !self.channel.isActive
        return result
    }

    func write(_ plain: ByteBuffer) {
        self.channel.write(plain, promise: nil)
    }

    func flush() -> [ByteBuffer] {
        self.channel.flush()
        self.channel.embeddedEventLoop.run()
        return self.drainOutbound()
    }

    func close() -> [ByteBuffer] {
        self.channel.close(promise: nil)
        self.channel.embeddedEventLoop.run()
        return self.drainOutbound()
    }

    private func drainOutbound() -> [ByteBuffer] {
        var out: [ByteBuffer] = []
        while let cipher = try? self.channel.readOutbound(as: ByteBuffer.self) {
            out.append(cipher)
        }
        return out
    }
}
