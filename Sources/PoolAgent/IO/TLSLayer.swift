// TLS for a transport: NIOSSL's server handler in an embedded channel, fed ciphertext and drained of it.

import NIOCore
import NIOEmbedded
import NIOSSL

/// The server side of one TLS connection, without a socket of its own.
///
/// NIOSSL runs in an `EmbeddedChannel` on the loop thread: ciphertext from the socket goes in as inbound
/// data and comes out as plaintext; plaintext written goes out as ciphertext for the transport to send.
final class TLSLayer {
    private let channel: EmbeddedChannel

    init(context: NIOSSLContext) throws {
        self.channel = EmbeddedChannel()
        try self.channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
        // Connected, as the socket is: the handler waits for the ClientHello.
        self.channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 0), promise: nil)
    }

    struct Decrypted {
        var plaintext: [ByteBuffer] = []
        var error: (any Error)?
        /// The peer ended TLS (close_notify) or the handshake failed.
        var closed = false
    }

    /// Feeds ciphertext; returns the plaintext it completed.
    func decrypt(_ cipher: ByteBuffer) -> Decrypted {
        var result = Decrypted()
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

    /// Encrypts `plain`; `flush` gives the ciphertext.
    func write(_ plain: ByteBuffer) {
        self.channel.write(plain, promise: nil)
    }

    /// The ciphertext to send: records of what was written, handshake messages and alerts.
    func flush() -> [ByteBuffer] {
        self.channel.flush()
        self.channel.embeddedEventLoop.run()
        return self.drainOutbound()
    }

    /// A close_notify to send before the socket closes.
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
