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
    private var sslRequested = false
    private var gssRequested = false
    private var startup: StartupMessage?
    /// Bytes the client sent while it waits for a server; sent once it has one.
    private var pendingInput: ByteBuffer?
    private(set) var pool: Pool?
    private(set) var server: ServerConnection?
    private(set) var cancelKey: CancelRequest?
    private var scanner = MessageScanner(captureTypes: MessageTypeSet([FrontendMessageID.terminate]))
    /// Named prepared statements of this client (transaction mode), by the client's name.
    var statements: [String: ClientStatement] = [:]
    private var loginTimer: Scheduled<Void>?
    let connectedAt: ContinuousClock.Instant = .now
    /// The last time the client sent anything, for `client_idle_timeout` and `idle_in_transaction_timeout`.
    private(set) var lastActivity: ContinuousClock.Instant = .now
    private(set) var peer = "unknown"
    private(set) var closeReason: String?
    /// The client broke the protocol; its server may hold a partial message.
    private var dirty = false
    /// The login completed: the client has its ReadyForQuery and BackendKeyData.
    private(set) var loggedIn = false
    /// The ParameterStatus values this client has been told, kept in force on whichever server it gets.
    private(set) var reported: [String: String] = [:]
    /// The client's settings from its startup packet (parameters and `options`).
    private(set) var startupSettings: [(String, String)] = []
    /// Equal for clients whose settings are equal: a server last used with the same key needs no sync.
    private(set) var settingsKey = 0
    private var logger: Logger

    static let maximumPendingInput = 1 << 20
    /// Transaction mode holds Parse and Bind whole to rewrite statement names; larger ones are refused.
    static let maximumRewrittenMessage = 64 << 20

    init(id: Int, runtime: AgentRuntime) {
        self.id = id
        self.runtime = runtime
        self.logger = runtime.logger
        self.logger[metadataKey: LogKey.client] = "\(id)"
    }

    var user: String? { self.startup?.user }

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
        self.lastActivity = .now
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
        self.finish(reason: self.closeReason ?? "client disconnected", clean: self.scanner.isAtBoundary && !self.dirty)
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
                // Each may come once, in either order, as PostgreSQL allows (libpq tries GSS, then SSL).
                let isSSL = packet == .sslRequest
                guard isSSL ? !self.sslRequested : !self.gssRequested else {
                    self.fatal(.fatal("08P01", "\(isSSL ? "SSL" : "GSSAPI") encryption was already negotiated on this connection"))
                    return
                }
                if isSSL { self.sslRequested = true } else { self.gssRequested = true }
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
            self.startupSettings = try StartupOptions.settings(of: message)
        } catch {
            self.fatal(.fatal("0A000", error.message))
            return
        }
        guard !self.runtime.isShuttingDown else {
            self.fatal(.fatal("57P03", "the agent is shutting down"))
            return
        }
        self.pool = pool
        if pool.settings.mode == .transaction {
            // Statement names are read from these messages, so they are held until complete.
            self.scanner = MessageScanner(
                captureTypes: MessageTypeSet([
                    FrontendMessageID.terminate, FrontendMessageID.parse, FrontendMessageID.bind,
                    FrontendMessageID.describe, FrontendMessageID.close,
                ]),
                maxCaptureLength: Self.maximumRewrittenMessage
            )
        }
        self.cancelKey = self.runtime.registerCancelKey(for: self)
        if pool.settings.mode == .transaction, let defaults = pool.defaultParameters {
            // Transaction mode logs in without a server: the pool's values, with the client's own on top;
            // its settings reach a server with its first transaction.
            let reported = self.loginExpectations(defaults: defaults)
            self.setReported(reported)
            self.state = .active
            self.completeLogin(parameters: reported)
            if let pending = self.pendingInput {
                self.pendingInput = nil
                self.requestServer(for: pending)
            }
            return
        }
        self.state = .waiting
        pool.acquire(for: self)
    }

    // MARK: Pool outcomes

    func serverAssigned(_ server: ServerConnection) {
        guard self.state == .waiting else {
            server.clientLeft(clean: true)
            return
        }
        self.server = server
        self.state = .syncing
        if self.loggedIn, server.settingsKey == self.settingsKey {
            // The server last served a client with the same settings: nothing to apply.
            self.serverReady()
            return
        }
        // Before login the client expects the pool's defaults (a fresh server's values) with its own on top.
        let plan = SettingsPlan(
            expected: self.loggedIn ? self.reported : self.loginExpectations(defaults: server.link.parameters),
            startup: self.startupSettings,
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
        if server.settingsKey != self.settingsKey || !self.loggedIn {
            self.setReported(server.parameters)
            server.settingsKey = self.settingsKey
        }
        self.state = .active
        if !self.loggedIn {
            self.completeLogin(parameters: server.parameters)
        }
        if let pending = self.pendingInput {
            self.pendingInput = nil
            self.setReading(true)
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

    private func completeLogin(parameters: [String: String]) {
        guard let startup = self.startup, let key = self.cancelKey else { return }
        var buffer = self.channel.allocator.buffer(capacity: 512)
        let options = startup.protocolOptions
        if startup.minorVersion > 0 || !options.isEmpty {
            buffer.writeNegotiateProtocolVersion(minorVersion: 0, unsupportedOptions: options)
        }
        buffer.writeAuthenticationOk()
        for (name, value) in parameters.sorted(by: { $0.key < $1.key }) {
            buffer.writeParameterStatus(name: name, value: value)
        }
        buffer.writeBackendKeyData(key)
        buffer.writeReadyForQuery(.idle)
        self.channel.writeAndFlush(buffer, promise: nil)
        self.loggedIn = true
        self.logger.debug("client logged in")
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
        guard self.reported[name] != value else { return }
        var reported = self.reported
        reported[name] = value
        self.setReported(reported)
        self.server?.settingsKey = self.settingsKey
    }

    /// The reported values a client should see at login: `defaults` with its startup settings on top.
    private func loginExpectations(defaults: [String: String]) -> [String: String] {
        var expected = defaults
        for (name, value) in self.startupSettings {
            if let key = expected.keys.first(where: { $0.lowercased() == name.lowercased() }) { expected[key] = value }
        }
        return expected
    }

    /// Records the values the client has seen and the pool's key for its whole set of settings.
    private func setReported(_ reported: [String: String]) {
        self.reported = reported
        guard let pool = self.pool else { return }
        var text = ""
        for (name, value) in reported.sorted(by: { $0.key < $1.key })
        where SettingsPlan.settableReported.contains(name.lowercased()) {
            text += "\(name)=\(value)\u{0}"
        }
        text += "\u{1}"
        let reportedNames = Set(reported.keys.map { $0.lowercased() })
        for (name, value) in self.startupSettings where !reportedNames.contains(name.lowercased()) {
            text += "\(name.lowercased())=\(value)\u{0}"
        }
        self.settingsKey = pool.settingsKeys.key(for: text)
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
        var tail: ByteBuffer? = nil
        if let pending = self.pendingInput {
            // Whole messages are dropped; an incomplete last one stays, its rest is still to come.
            var cursor = pending.readerIndex
            while pending.writerIndex - cursor >= 5 {
                let type = pending.getInteger(at: cursor, as: UInt8.self)!
                let length = Int(pending.getInteger(at: cursor + 1, as: Int32.self)!)
                guard length >= 4, pending.writerIndex - cursor >= length + 1 else { break }
                if type == FrontendMessageID.query || type == FrontendMessageID.sync || type == FrontendMessageID.functionCall {
                    requests += 1
                }
                cursor += length + 1
            }
            if cursor < pending.writerIndex { tail = pending.getSlice(at: cursor, length: pending.writerIndex - cursor) }
        }
        self.pendingInput = tail
        self.setReading(true)
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
        self.forwardToServer(input, server: server)
    }

    /// Server bytes for the client; `flushFromServer` sends them.
    func writeFromServer(_ buffer: ByteBuffer) {
        guard self.state == .active else { return }
        self.channel.write(buffer, promise: nil)
    }

    func flushFromServer() {
        guard self.state == .active else { return }
        self.channel.flush()
        if !self.channel.isWritable { self.server?.setReading(false) }
    }

    func resumeReading() {
        self.setReading(true)
    }

    func pauseReading() {
        self.setReading(false)
    }

    /// The scanner of client bytes, for the transaction-mode forwarder.
    func joinScanned(_ input: ByteBuffer) -> ByteBuffer {
        self.scanner.join(input)
    }

    func nextScanned(in buffer: ByteBuffer, cursor: inout Int) throws(WireError) -> MessageScanner.Step {
        try self.scanner.next(in: buffer, cursor: &cursor)
    }

    private func setReading(_ on: Bool) {
        guard let channel = self.channel, channel.isActive else { return }
        _ = channel.setOption(ChannelOptions.autoRead, value: on)
    }

    private func holdPendingInput(_ input: ByteBuffer) {
        var pending = self.pendingInput ?? self.channel.allocator.buffer(capacity: input.readableBytes)
        pending.writeImmutableBuffer(input)
        self.pendingInput = pending
        // Past this the client is not read from until it has a server: TCP holds the rest.
        if pending.readableBytes > Self.maximumPendingInput { self.setReading(false) }
    }

    // MARK: Ending

    /// The server went away while linked to this client.
    func serverClosed(reason: String) {
        guard self.state != .closed else { return }
        self.server = nil
        self.fatal(.fatal("08006", "server connection closed: \(reason)"))
    }

    /// The client broke the protocol: whatever it sent last may be half-forwarded, so its server is not reused.
    func protocolViolation(_ message: String) {
        self.dirty = true
        self.fatal(.fatal("08P01", message))
    }

    /// Sends a FATAL error and closes.
    func fatal(_ error: ErrorResponse) {
        guard self.state != .closed, let channel = self.channel else { return }
        self.logger.info("closing client", metadata: [LogKey.reason: "\(error)", LogKey.peer: "\(self.peer)"])
        var buffer = channel.allocator.buffer(capacity: 128)
        error.encode(into: &buffer)
        self.closeReason = error.message
        self.finish(reason: error.message, clean: self.scanner.isAtBoundary && !self.dirty)
        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
    }

    func close(reason: String) {
        if self.closeReason == nil { self.closeReason = reason }
        self.finish(reason: reason, clean: self.scanner.isAtBoundary && !self.dirty)
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
