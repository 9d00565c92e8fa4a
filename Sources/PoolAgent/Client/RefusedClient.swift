// A client over a limit, answered as PostgreSQL answers one: its encryption request is answered (TLS where the
// agent offers it, so a client that requires TLS reads the reason too), its startup packet gets the FATAL, and the
// socket closes. A cancel request on such a connection is still carried out.

import NIOCore
import PGWire

final class RefusedClient: TransportDelegate, @unchecked Sendable {  // Confined to the loop thread.
    /// How long a refused client may take to send its startup packet.
    static let timeout: TimeAmount = .seconds(5)

    private unowned(unsafe) let runtime: AgentRuntime
    private let refusal: ClientLimits.Refusal
    private let unix: Bool
    private var transport: Transport?
    private var input = ByteBuffer()
    private var timer: Scheduled<Void>?
    private var done = false

    private init(runtime: AgentRuntime, refusal: ClientLimits.Refusal, unix: Bool) {
        self.runtime = runtime
        self.refusal = refusal
        self.unix = unix
    }

    /// Serves `fd` until it is told; returns false when the socket could not be registered (it is closed).
    static func start(fd: Int32, runtime: AgentRuntime, refusal: ClientLimits.Refusal, unix: Bool) -> Bool {
        let refused = RefusedClient(runtime: runtime, refusal: refusal, unix: unix)
        guard let transport = try? Transport.start(fd: fd, loop: runtime.eventLoop, noDelay: !unix, delegate: refused) else {
            return false
        }
        refused.transport = transport
        refused.timer = runtime.eventLoop.scheduleTask(in: Self.timeout) { [refused] in refused.answer() }
        return true
    }

    func transportRead(_ buffer: ByteBuffer) {
        guard !self.done else { return }
        self.input.writeImmutableBuffer(buffer)
        while !self.done {
            let packet: StartupPacket?
            do {
                packet = try StartupPacket.decode(from: &self.input)
            } catch {
                self.answer()
                return
            }
            switch packet {
            case nil:
                return
            case .sslRequest?, .gssEncRequest?:
                // Bytes sent behind the request are refused, as in a login (they cannot be read either way).
                guard self.input.readableBytes == 0, let transport = self.transport else {
                    self.answer()
                    return
                }
                let auth = self.runtime.authenticator
                let tls = packet == .sslRequest && !self.unix && auth.tlsMode != .disable ? auth.tlsContext : nil
                var answer = ByteBuffer()
                answer.writeInteger(UInt8(ascii: tls != nil ? "S" : "N"))
                transport.writeAndFlush(answer)
                if let tls {
                    do {
                        try transport.startTLS(context: tls.context)
                    } catch {
                        self.finish()
                        transport.close()
                        return
                    }
                }
            case .cancelRequest(let key)?:
                self.runtime.cancel(key, from: "a refused connection")
                self.finish()
                self.transport?.close()
                return
            case .startup?:
                self.answer()
                return
            }
        }
    }

    func transportWritable() {}

    func transportClosed(error: String?) {
        self.finish()
        self.transport = nil
    }

    /// Sends the FATAL and closes.
    private func answer() {
        guard !self.done, let transport = self.transport else { return }
        var buffer = transport.allocator.buffer(capacity: 128)
        self.refusal.error.encode(into: &buffer)
        transport.write(buffer)
        self.finish()
        transport.closeAfterFlush()
    }

    private func finish() {
        guard !self.done else { return }
        self.done = true
        self.timer?.cancel()
        self.timer = nil
        self.input = ByteBuffer()
        self.runtime.refusedClientGone()
    }
}
