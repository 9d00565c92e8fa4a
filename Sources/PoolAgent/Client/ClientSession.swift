// One client connection: the startup handshake, waiting for a server, then forwarding in session or transaction mode.

import Logging
import NIOCore
import PGWire
import PoolCore

/// The agent's side of one application connection.
///
/// Startup packets are answered by the agent itself; once a server is assigned and the client's settings
/// are applied to it, bytes flow both ways unparsed, scanned only for message boundaries, Terminate and
/// the requests that await a ReadyForQuery.
final class ClientSession: ChannelInboundHandler, @unchecked Sendable {  // Confined to the agent's event loop.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State: String {
        case startup, waiting, syncing, active, closed
    }

    let id: Int
    private unowned let runtime: AgentRuntime
    private var channel: (any Channel)!
    private(set) var state: State = .startup
    private var startupBuffer: ByteBuffer?
    private var negotiatedEncryption = false
    private var startup: StartupMessage?
    /// Bytes the client sent while it waits for a server; sent once it has one.
    private var pendingInput: ByteBuffer?
    private(set) var pool: Pool?
    private(set) var server: ServerConnection?
    private(set) var cancelKey: CancelRequest?
    private var scanner = MessageScanner(captureTypes: MessageTypeSet([FrontendMessageID.terminate]))
    private var loginTimer: Scheduled<Void>?
    let connectedAt: ContinuousClock.Instant = .now
    private(set) var peer = "unknown"
    private(set) var closeReason: String?
    /// The login completed: the client has its ReadyForQuery and BackendKeyData.
    private(set) var loggedIn = false
    /// The ParameterStatus values this client has been told, kept in force on whichever server it gets.
    private(set) var reported: [String: String] = [:]
    private var logger: Logger

    static let maximumPendingInput = 1 << 20

    init(id: Int, runtime: AgentRuntime) {
        self.id = id
        self.runtime = runtime
        self.logger = runtime.logger
        self.logger[metadataKey: LogKey.client] = "\(id)"
    }

    var user: String? { self.startup?.user }
    var database: String? { self.startup?.database }

    // MARK: Channel events

    func channelActive(context: ChannelHandlerContext) {
        self.channel = context.channel
        self.peer = context.channel.remoteAddress.map { "\($0)" } ?? "unix socket"
        self.runtime.clientOpened(self)
        self.loginTimer = context.eventLoop.scheduleTask(in: self.runtime.configuration.loginTimeout.timeAmount) { [self] in
            guard self.state == .startup else { return }
            self.fatal(.fatal("08006", "login timeout: no startup packet within \(self.runtime.configuration.loginTimeout.configText)"))
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        switch self.state {
        case .active where self.server != nil:
            self.forwardToServer(buffer)
        case .active:
            self.requestServer(for: buffer)
        case .startup:
            self.startupBytes(buffer)
        case .waiting, .syncing:
            self.holdPendingInput(buffer)
        case .closed:
            break
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.server?.setReading(true) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.finish(reason: self.closeReason ?? "client disconnected", clean: self.scanner.isAtBoundary)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.closeReason = "client connection error: \(error)"
        context.close(promise: nil)
    }

    // MARK: Startup

    private func startupBytes(_ input: ByteBuffer) {
        var buffer: ByteBuffer
        if var held = self.startupBuffer {
            held.writeImmutableBuffer(input)
            buffer = held
        } else {
            buffer = input
        }
        self.startupBuffer = nil
        while self.state == .startup {
            let packet: StartupPacket?
            do {
                packet = try StartupPacket.decode(from: &buffer)
            } catch {
                self.fatal(.fatal(error.sqlState, error.description))
                return
            }
            guard let packet else {
                if buffer.readableBytes > 0 { self.startupBuffer = buffer }
                return
            }
            switch packet {
            case .sslRequest, .gssEncRequest:
                guard !self.negotiatedEncryption else {
                    self.fatal(.fatal("08P01", "encryption was already negotiated on this connection"))
                    return
                }
                self.negotiatedEncryption = true
                var answer = self.channel.allocator.buffer(capacity: 1)
                answer.writeInteger(UInt8(ascii: "N"))
                self.channel.writeAndFlush(answer, promise: nil)
            case .cancelRequest(let key):
                self.runtime.cancel(key, from: self.peer)
                self.close(reason: "cancel request handled")
                return
            case .startup(let message):
                if buffer.readableBytes > 0 { self.pendingInput = buffer }
                self.startupReceived(message)
                return
            }
        }
    }

    private func startupReceived(_ message: StartupMessage) {
        self.startup = message
        self.loginTimer?.cancel()
        self.loginTimer = nil
        guard let user = message.user, !user.isEmpty else {
            self.fatal(.fatal("28000", "no PostgreSQL user name specified in startup packet"))
            return
        }
        if let replication = message["replication"], !["false", "off", "no", "0"].contains(replication.lowercased()) {
            self.fatal(.fatal("0A000", "replication connections are not supported by poolagent"))
            return
        }
        let database = message.database ?? user
        self.logger[metadataKey: LogKey.pool] = "\(database)"
        guard let pool = self.runtime.pools[database] else {
            self.fatal(.fatal("3D000", "database \"\(database)\" does not exist", detail: "poolagent has no pool configured for it"))
            return
        }
        do {
            _ = try StartupOptions.settings(of: message)
        } catch {
            self.fatal(.fatal("0A000", error.message))
            return
        }
        guard !self.runtime.isShuttingDown else {
            self.fatal(.fatal("57P03", "the agent is shutting down"))
            return
        }
        self.pool = pool
        self.cancelKey = self.runtime.registerCancelKey(for: self)
        self.state = .waiting
        pool.acquire(for: self)
    }

    // MARK: Pool outcomes

    func serverAssigned(_ server: ServerConnection) {
        guard self.state == .waiting, let startup = self.startup, let settings = try? StartupOptions.settings(of: startup) else {
            server.clientLeft(clean: true)
            return
        }
        self.server = server
        self.state = .syncing
        let plan = SettingsPlan(
            expected: self.loggedIn ? self.reported : nil,
            startup: settings,
            server: server.parameters,
            applied: server.appliedSettings
        )
        guard !plan.isEmpty else {
            self.serverReady()
            return
        }
        server.runInternal([plan.query]) { [self] error in
            guard self.state == .syncing else { return }
            if let error {
                self.fatal(ErrorResponse(.fatal, sqlState: error.sqlState, message: error.message, detail: error.detail, hint: error.hint))
            } else {
                server.appliedSettings = plan.applied(after: server.appliedSettings)
                self.serverReady()
            }
        }
    }

    /// The server now has this client's settings: finish the login, or send what the client is waiting to send.
    private func serverReady() {
        guard let server = self.server else { return }
        self.reported = server.parameters
        self.state = .active
        if !self.loggedIn {
            self.completeLogin(server)
        }
        if let pending = self.pendingInput {
            self.pendingInput = nil
            self.forwardToServer(pending)
        } else {
            self.releaseIfIdle()
        }
    }

    func poolRefused(_ error: PoolError) {
        guard self.state == .waiting, let pool = self.pool else { return }
        switch error {
        case .waitTimeout(let timeout):
            self.fatal(.fatal("53300", "no server connection available in pool \"\(pool.name)\" within wait_timeout \(timeout.configText)"))
        case .connectFailed(let message):
            self.fatal(.fatal("08006", "cannot connect to the upstream of pool \"\(pool.name)\": \(message)"))
        case .shuttingDown:
            self.fatal(.fatal("57P01", "terminating connection because the agent is shutting down"))
        }
    }

    private func completeLogin(_ server: ServerConnection) {
        guard let startup = self.startup, let key = self.cancelKey else { return }
        var buffer = self.channel.allocator.buffer(capacity: 512)
        let options = startup.protocolOptions
        if startup.minorVersion > 0 || !options.isEmpty {
            buffer.writeNegotiateProtocolVersion(minorVersion: 0, unsupportedOptions: options)
        }
        buffer.writeAuthenticationOk()
        for (name, value) in server.parameters.sorted(by: { $0.key < $1.key }) {
            buffer.writeParameterStatus(name: name, value: value)
        }
        buffer.writeBackendKeyData(key)
        buffer.writeReadyForQuery(.idle)
        self.channel.writeAndFlush(buffer, promise: nil)
        self.loggedIn = true
        self.logger.debug("client logged in", metadata: [LogKey.backendPID: "\(server.backendPID)"])
    }

    // MARK: Transaction pooling

    /// In transaction mode, gives the server back once the client has nothing in flight and no open transaction.
    func releaseIfIdle() {
        guard self.pool?.settings.mode == .transaction, self.state == .active, let server = self.server,
            server.isIdleForRelease, self.scanner.isAtBoundary
        else { return }
        self.server = nil
        server.clientLeft(clean: true)
    }

    /// A parameter the server reported while serving this client (after a SET): the client has seen it.
    func parameterChanged(name: String, value: String) {
        self.reported[name] = value
    }

    /// Transaction mode: the client sent something while it holds no server; keep it and queue for one.
    private func requestServer(for input: ByteBuffer) {
        guard let pool = self.pool else { return }
        if self.pendingInput == nil, Self.isOnlyTerminate(input) {
            self.close(reason: "client sent Terminate")
            return
        }
        self.holdPendingInput(input)
        guard self.state == .active else { return }
        self.state = .waiting
        pool.acquire(for: self)
    }

    private static func isOnlyTerminate(_ buffer: ByteBuffer) -> Bool {
        buffer.readableBytes == 5 && buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == FrontendMessageID.terminate
    }

    /// The client cancelled while its request waits for a server: it leaves the queue and gets the answer
    /// PostgreSQL would give, an error and a ReadyForQuery for each request that was waiting.
    func cancelWhileWaiting() {
        guard self.state == .waiting, self.loggedIn, let pool = self.pool else { return }
        pool.cancelWait(for: self)
        self.state = .active
        var requests = 0
        if let pending = self.pendingInput {
            var scanner = MessageScanner(captureTypes: MessageTypeSet())
            var cursor = pending.readerIndex
            while case .message(let type, _, _)? = try? scanner.next(in: pending, cursor: &cursor) {
                if type == FrontendMessageID.query || type == FrontendMessageID.sync || type == FrontendMessageID.functionCall {
                    requests += 1
                }
            }
        }
        self.pendingInput = nil
        var buffer = self.channel.allocator.buffer(capacity: 128)
        let cancelled = ErrorResponse(.error, sqlState: "57014", message: "canceling statement due to user request")
        if requests == 0 { cancelled.encode(into: &buffer) }
        for _ in 0..<requests {
            cancelled.encode(into: &buffer)
            buffer.writeReadyForQuery(.idle)
        }
        self.channel.writeAndFlush(buffer, promise: nil)
    }

    // MARK: Forwarding

    private func forwardToServer(_ input: ByteBuffer) {
        guard let server = self.server else { return }
        let buffer = self.scanner.join(input)
        var cursor = buffer.readerIndex
        var terminateAt: Int? = nil
        var forwardableEnd = cursor
        do {
            scan: while true {
                switch try self.scanner.next(in: buffer, cursor: &cursor) {
                case .message(let type, let start, _):
                    switch type {
                    case FrontendMessageID.query, FrontendMessageID.sync, FrontendMessageID.functionCall:
                        server.outstanding += 1
                    case FrontendMessageID.terminate:
                        terminateAt = start
                        break scan
                    default:
                        break
                    }
                case .end(let end):
                    forwardableEnd = end
                    break scan
                }
            }
        } catch {
            self.fatal(.fatal("08P01", "invalid message from client: \(error)"))
            return
        }
        let end = terminateAt ?? forwardableEnd
        if end > buffer.readerIndex {
            server.send(buffer.getSlice(at: buffer.readerIndex, length: end - buffer.readerIndex)!)
            if !server.isWritable { self.setReading(false) }
        }
        if terminateAt != nil {
            self.close(reason: "client sent Terminate")
        }
    }

    /// Server bytes for the client.
    func forwardFromServer(_ buffer: ByteBuffer) {
        guard self.state == .active else { return }
        self.channel.writeAndFlush(buffer, promise: nil)
        if !self.channel.isWritable { self.server?.setReading(false) }
    }

    func resumeReading() {
        self.setReading(true)
    }

    private func setReading(_ on: Bool) {
        guard let channel = self.channel, channel.isActive else { return }
        _ = channel.setOption(ChannelOptions.autoRead, value: on)
    }

    private func holdPendingInput(_ input: ByteBuffer) {
        var pending = self.pendingInput ?? self.channel.allocator.buffer(capacity: input.readableBytes)
        pending.writeImmutableBuffer(input)
        guard pending.readableBytes <= Self.maximumPendingInput else {
            self.fatal(.fatal("54000", "client sent more than \(Self.maximumPendingInput) bytes while waiting for a server"))
            return
        }
        self.pendingInput = pending
    }

    // MARK: Ending

    /// The server went away while linked to this client.
    func serverClosed(reason: String) {
        guard self.state != .closed else { return }
        self.server = nil
        self.fatal(.fatal("08006", "server connection closed: \(reason)"))
    }

    /// Sends a FATAL error and closes.
    func fatal(_ error: ErrorResponse) {
        guard self.state != .closed, let channel = self.channel else { return }
        self.logger.info("closing client", metadata: [LogKey.reason: "\(error)", LogKey.peer: "\(self.peer)"])
        var buffer = channel.allocator.buffer(capacity: 128)
        error.encode(into: &buffer)
        self.closeReason = error.message
        self.finish(reason: error.message, clean: self.scanner.isAtBoundary)
        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
    }

    func close(reason: String) {
        if self.closeReason == nil { self.closeReason = reason }
        self.finish(reason: reason, clean: self.scanner.isAtBoundary)
        self.channel?.close(promise: nil)
    }

    /// Gives back what the session holds; runs once, whichever way the session ends.
    private func finish(reason: String, clean: Bool) {
        guard self.state != .closed else { return }
        let previous = self.state
        self.state = .closed
        self.loginTimer?.cancel()
        if let key = self.cancelKey { self.runtime.unregisterCancelKey(key) }
        switch previous {
        case .waiting:
            self.pool?.cancelWait(for: self)
        case .syncing, .active:
            let server = self.server
            self.server = nil
            server?.clientLeft(clean: previous == .syncing || clean)
        case .startup, .closed:
            break
        }
        self.runtime.clientClosed(self)
    }

}

extension Duration {
    var timeAmount: TimeAmount { .nanoseconds(Int64(self.seconds * 1e9)) }
}
