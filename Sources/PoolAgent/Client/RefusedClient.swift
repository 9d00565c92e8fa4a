// A client over a limit, answered as PostgreSQL answers one: its encryption request gets N, its startup packet
// the FATAL, and the socket closes. A cancel request on such a connection is still carried out.

import NIOCore
import PGWire

final class RefusedClient: TransportDelegate, @unchecked Sendable {  // Confined to the loop thread.
    /// How long a refused client may take to send its startup packet.
    static let timeout: TimeAmount = .seconds(5)

    private unowned(unsafe) let runtime: AgentRuntime
    private let refusal: ClientLimits.Refusal
    private var transport: Transport?
    private var input = ByteBuffer()
    private var timer: Scheduled<Void>?
    private var done = false

    private init(runtime: AgentRuntime, refusal: ClientLimits.Refusal) {
        self.runtime = runtime
        self.refusal = refusal
    }

    /// Serves `fd` until it is told; returns false when the socket could not be registered (it is closed).
    static func start(fd: Int32, runtime: AgentRuntime, refusal: ClientLimits.Refusal) -> Bool {
        let refused = RefusedClient(runtime: runtime, refusal: refusal)
        guard let transport = try? Transport.start(fd: fd, loop: runtime.eventLoop, noDelay: true, delegate: refused) else {
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
                // No TLS for a connection that is refused anyway; a client that prefers TLS goes on in
                // plaintext and reads the reason.
                var answer = ByteBuffer()
                answer.writeInteger(UInt8(ascii: "N"))
                self.transport?.writeAndFlush(answer)
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
