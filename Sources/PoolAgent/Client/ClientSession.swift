// One client connection: its state from login to close, waiting for a server, and what it holds.

import Logging
import NIOCore
import PGWire
import PoolCore

#if canImport(Glibc)
import Glibc
#endif

/// The agent's side of one application connection.
///
/// The login is a `LoginMachine` whose actions `ClientSession+Login` runs; once a server is assigned and the
/// client's settings are applied to it, bytes flow both ways as slices (`ClientSession+Forwarding`), every
/// message told to the server's protocol machine.
final class ClientSession: TransportDelegate, @unchecked Sendable {  // Confined to the agent's event loop.

    enum State: String {
        /// Logging in: `login` says where.
        case startup
        case waiting, syncing, active, closed
        /// On the admin console (`AdminConsole`), not in a pool.
        case admin
    }

    let id: Int
    /// The runtime outlives every session.
    unowned(unsafe) let runtime: AgentRuntime
    /// The client's socket; set by `start`.
    private(set) var transport: Transport!
    /// The client came in on the Unix socket.
    private(set) var isUnixSocket = false
    /// The client's IP address and TCP port (nil on the Unix socket), for address rules and messages.
    private(set) var remoteAddress: PeerAddress?
    var state: State = .startup
    /// The login, until the client has logged in: then let go, so an idle client does not keep it.
    var login: LoginMachine {
        get { self.loginBox?.machine ?? LoginMachine(tlsOffered: false, tlsRequired: false) }
        _modify {
            if self.loginBox == nil { self.loginBox = LoginBox(LoginMachine(tlsOffered: false, tlsRequired: false)) }
            yield &self.loginBox!.machine
        }
    }
    private var loginBox: LoginBox? = LoginBox(LoginMachine(tlsOffered: false, tlsRequired: false))
    /// TLS was negotiated: everything after the SSLRequest is encrypted.
    var tlsActive: Bool { self.loginBox?.machine.tlsActive ?? self.loggedInWithTLS }
    private var loggedInWithTLS = false
    /// The certificate hash this connection's TLS uses, for SCRAM-SHA-256-PLUS.
    var serverEndPoint: [UInt8]?
    /// The startup packet, from when the login passed it until the client has logged in.
    var startup: StartupMessage?
    var pool: Pool?
    /// The admin console session, in state `admin`.
    var adminConsole: AdminConsole?
    /// The pool and user this client counts against once admitted (see `ClientLimits`).
    var admission: ClientLimits.Admission?
    private(set) var server: ServerConnection?
    var cancelKey: CancelRequest?
    var scanner = MessageScanner(captureTypes: MessageTypeSet([FrontendMessageID.terminate]))
    var loginTimer: Scheduled<Void>?
    let connectedAt: Moment = .now
    /// The last time the client sent anything, for `client_idle_timeout` and `idle_in_transaction_timeout`.
    private(set) var lastActivity: Moment = .now
    /// The peer as messages and logs name it: made when needed, not kept for every idle client.
    var peer: String {
        guard let address = self.remoteAddress else { return self.peerHost }
        return "\(self.peerHost) port \(address.port)"
    }
    /// The peer without its port, for messages to the client.
    var peerHost: String {
        guard let address = self.remoteAddress else { return self.transport == nil ? "unknown" : "the Unix socket" }
        return "host \"\(Self.text(ofAddress: address.bytes))\""
    }
    private(set) var closeReason: String?
    /// The client broke the protocol; its server may hold a partial message.
    private var dirty = false
    /// The login completed: the client has its ReadyForQuery and BackendKeyData.
    private(set) var loggedIn = false
    /// The ParameterStatus values this client has been told, kept in force on whichever server it gets.
    private(set) var reported: [String: String] = [:]
    /// The client's settings from its startup packet (parameters and `options`).
    var startupSettings: [(String, String)] = []
    /// Equal for clients whose settings are equal: a server last used with the same key needs no sync.
    private(set) var settingsKey = 0
    /// What a client keeps once it sends requests; nil for one that has only logged in (see `Working`).
    private var workingState: Working?
    /// The client's `Working`, made on first use.
    private var working: Working {
        if let working = self.workingState { return working }
        let working = Working()
        self.workingState = working
        return working
    }

    /// Bytes the client sent while it waits for a server; sent once it has one.
    var pendingInput: ByteBuffer? {
        get { self.workingState?.pendingInput }
        set { if newValue != nil || self.workingState != nil { self.working.pendingInput = newValue } }
    }
    /// Bytes from a message on that waits for the server's answer to an earlier one (see `forwardToServer`).
    private var stalledInput: ByteBuffer? {
        get { self.workingState?.stalledInput }
        set { if newValue != nil || self.workingState != nil { self.working.stalledInput = newValue } }
    }
    /// Named prepared statements of this client (transaction mode), by the client's name.
    var statements: ClientStatements {
        _read {
            if let working = self.workingState { yield working.statements } else { yield ClientStatements() }
        }
        _modify { yield &self.working.statements }
    }
    /// Transaction mode: the client's non-reported settings as its server last showed them (its startup
    /// ones and its own SETs), by lowercased name; nil until a request of its changed settings.
    var sessionSettings: [String: String]? {
        get { self.workingState?.sessionSettings }
        set { if newValue != nil || self.workingState != nil { self.working.sessionSettings = newValue } }
    }
    /// Transaction mode: session state that keeps the client on its server, as the server last showed it.
    var pins: SessionEffects.Pins {
        get { self.workingState?.pins ?? [] }
        set { if !newValue.isEmpty || self.workingState != nil { self.working.pins = newValue } }
    }
    /// The client holds one of the pool's `max_pinned` slots (pinned, or about to be).
    var pinSlot: Bool {
        get { self.workingState?.pinSlot ?? false }
        set { if newValue || self.workingState != nil { self.working.pinSlot = newValue } }
    }
    /// Transaction mode: channels the client listens on through the pool's listener.
    var listenChannels: Set<String> {
        _read {
            if let working = self.workingState { yield working.listenChannels } else { yield [] }
        }
        _modify { yield &self.working.listenChannels }
    }
    /// The ReadyForQuery of a request whose session state is being read back, sent once it has been.
    var heldReady: ByteBuffer? {
        get { self.workingState?.heldReady }
        set { if newValue != nil || self.workingState != nil { self.working.heldReady = newValue } }
    }
    /// Notifications and notices waiting for the client's stream to be between messages and writable.
    var asyncMessages: [ByteBuffer] {
        _read {
            if let working = self.workingState { yield working.asyncMessages } else { yield [] }
        }
        _modify { yield &self.working.asyncMessages }
    }
    /// The client ran LISTEN (in transaction mode its notifications come only while it holds a server).
    var listened: Bool {
        get { self.workingState?.listened ?? false }
        set { if newValue || self.workingState != nil { self.working.listened = newValue } }
    }

    /// The agent's logger with this client's id and pool: made for a message that is logged, not kept by every
    /// idle client (a logger of its own is two allocations).
    var logger: Logger {
        var logger = self.runtime.logger
        logger[metadataKey: LogKey.client] = "\(self.id)"
        if let pool = self.pool?.name ?? (self.adminConsole != nil ? AdminConsole.database : self.startup?.database) {
            logger[metadataKey: LogKey.pool] = .string(pool)
        }
        return logger
    }

    /// Whether a message at `level` would be logged, before `logger` is made for it.
    func logs(_ level: Logger.Level) -> Bool { self.runtime.logger.logLevel <= level }

    static let maximumPendingInput = 1 << 20
    /// Transaction mode holds Parse and Bind whole to rewrite statement names; larger ones are refused.
    static let maximumRewrittenMessage = 64 << 20

    init(id: Int, runtime: AgentRuntime) {
        self.id = id
        self.runtime = runtime
    }

    var user: String? { self.startup?.user ?? self.loggedInUser }
    /// The user once logged in, when the startup packet (all its parameters) is no longer kept.
    private var loggedInUser: String?

    // MARK: Transport events

    /// The client connected: its socket is `transport`, accepted from a Unix listener when `unix`.
    func start(transport: Transport, unix: Bool) {
        self.transport = transport
        self.isUnixSocket = unix
        if !unix { self.remoteAddress = transport.peerAddress() }
        self.runtime.clientOpened(self)
        let auth = self.runtime.authenticator
        self.login = LoginMachine(
            tlsOffered: !unix && auth.tlsMode != .disable && auth.tlsContext != nil,
            tlsRequired: !unix && auth.tlsMode == .require
        )
        self.loginTimer = transport.loop.scheduleTask(in: self.runtime.configuration.loginTimeout.timeAmount) { [self] in
            guard self.state == .startup else { return }
            let stage = self.login.startup == nil ? "no startup packet" : "authentication not completed"
            self.fatal(.fatal("08006", "login timeout: \(stage) within \(self.runtime.configuration.loginTimeout.configText)"))
        }
    }

    /// The client's address and port as SHOW CLIENTS prints them; `unix` on the Unix socket.
    var peerAddressText: (host: String, port: Int) {
        guard let address = self.remoteAddress else { return ("unix", 0) }
        return (Self.text(ofAddress: address.bytes), Int(address.port))
    }

    /// An address as PostgreSQL prints it: dotted IPv4, or IPv6 text.
    private static func text(ofAddress bytes: [UInt8]) -> String {
        var text = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        guard bytes.withUnsafeBytes({ inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }) != nil else { return "unknown" }
        return String(cString: text)
    }

    func transportRead(_ buffer: ByteBuffer) {
        self.lastActivity = self.transport.loop.time
        switch self.state {
        case .active where self.stalledInput != nil:
            self.holdStalled(buffer)
        case .active where self.server != nil:
            self.forwardToServer(buffer)
        case .active:
            self.requestServer(for: buffer)
        case .startup:
            self.run(self.login.received(buffer))
        case .waiting, .syncing:
            self.holdPendingInput(buffer)
        case .admin:
            self.adminConsole?.received(buffer)
        case .closed:
            break
        }
    }

    func transportWritable() {
        self.server?.setReading(true)
        self.deliverQueued()
        if self.state == .admin { self.adminConsole?.writable() }
    }

    /// The admin console reads the socket only while it has nothing waiting.
    func setAdminReading(_ on: Bool) {
        self.setReading(on)
    }

    func transportClosed(error: String?) {
        if let error, self.closeReason == nil { self.closeReason = "client connection error: \(error)" }
        self.finish(reason: self.closeReason ?? "client disconnected", clean: self.scanner.isAtBoundary && !self.dirty)
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
            applied: server.appliedSettings,
            session: self.sessionSettings
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

    func completeLogin(parameters: [String: String]) {
        self.completeLogin(parameterStatus: Self.parameterStatus(parameters))
    }

    /// ParameterStatus messages for `parameters`, by name.
    static func parameterStatus(_ parameters: [String: String]) -> ByteBuffer {
        var buffer = Transport.allocator.buffer(capacity: 512)
        for (name, value) in parameters.sorted(by: { $0.key < $1.key }) {
            buffer.writeParameterStatus(name: name, value: value)
        }
        return buffer
    }

    /// Completes the login with `parameterStatus` (ParameterStatus messages) between AuthenticationOk and
    /// BackendKeyData.
    func completeLogin(parameterStatus: ByteBuffer) {
        guard self.startup != nil, let key = self.cancelKey else { return }
        var buffer = self.transport.allocator.buffer(capacity: parameterStatus.readableBytes + 64)
        buffer.writeAuthenticationOk()
        buffer.writeImmutableBuffer(parameterStatus)
        buffer.writeBackendKeyData(key)
        buffer.writeReadyForQuery(.idle)
        self.transport.writeAndFlush(buffer)
        self.loggedIn = true
        self.loggedInWithTLS = self.tlsActive
        self.loginBox = nil
        // Its settings are in `startupSettings`; of the packet only the user is read from here on.
        self.loggedInUser = self.startup?.user
        self.startup = nil
        if self.logs(.debug) { self.logger.debug("client logged in") }
    }

    // MARK: Transaction pooling

    /// In transaction mode, gives the server back once the client has nothing in flight and no open transaction,
    /// after reading its session state back if the client's SQL may have changed it; a pinned client keeps it.
    func releaseIfIdle() {
        guard self.pool?.settings.mode == .transaction, self.state == .active, let server = self.server,
            server.isIdleForRelease, self.scanner.isAtBoundary, self.stalledInput == nil
        else {
            self.sendHeldReady()
            return
        }
        if server.sessionStateChanged {
            self.probeSessionState(server)
            return
        }
        self.sendHeldReady()
        guard self.pins.isEmpty else { return }
        self.server = nil
        server.clientLeft(clean: true)
        self.deliverQueued()
    }

    /// The server answered something: input waiting for it goes on, then the server may go back.
    func serverAnswered() {
        if let stalled = self.stalledInput, let server = self.server {
            self.sendHeldReady()
            self.stalledInput = nil
            self.setReading(true)
            self.forwardToServer(stalled, server: server)
        } else {
            self.releaseIfIdle()
        }
    }

    /// Holds `input` (from a message boundary) until the server has answered what it depends on.
    func stall(_ input: ByteBuffer) {
        self.stalledInput = input.compacted
        if input.readableBytes > Self.maximumPendingInput { self.setReading(false) }
    }

    private func holdStalled(_ input: ByteBuffer) {
        self.stalledInput!.writeImmutableBuffer(input)
        // Past this the client is not read from until the server answers: TCP holds the rest.
        if self.stalledInput!.readableBytes > Self.maximumPendingInput { self.setReading(false) }
    }

    // MARK: Statements (transaction mode)

    /// The server answered the client's statement change `id`; false when it is not the one expected next.
    func intentResolved(_ id: Int, done: Bool) -> Bool {
        guard let released = self.statements.resolve(id, done: done) else { return false }
        self.pool?.statements.release(released)
        return true
    }

    /// A DISCARD ALL or DEALLOCATE ALL ran for this client: its statements are gone, as in PostgreSQL.
    func statementsDropped() {
        self.pool?.statements.release(self.statements.dropCommitted())
    }

    /// An ErrorResponse for this client with the agent's statement names in its message replaced by the
    /// client's (the refusal of a duplicate Parse, intent `duplicate`, by the name it was sent for); nil when
    /// it names none of them.
    func renamingStatements(in body: ByteBuffer, message: String, duplicate: Int?, allocator: ByteBufferAllocator) -> ByteBuffer? {
        guard let pool = self.pool else { return nil }
        var renamed = body
        var changed = false
        func rename(_ statement: Int, to name: String) {
            guard let rewritten = ErrorResponse.renaming(pool.statements.serverName(statement), to: name, inBody: renamed) else { return }
            renamed = rewritten
            changed = true
        }
        if let duplicate, case .duplicate(let name, let statement)? = self.statements.change(of: duplicate) {
            rename(statement, to: name)
        }
        for statement in StatementRegistry.statements(mentionedIn: message) {
            if let name = self.statements.name(of: statement) { rename(statement, to: name) }
        }
        guard changed else { return nil }
        var out = allocator.buffer(capacity: renamed.readableBytes + 5)
        out.writeMessage(BackendMessageID.errorResponse) { $0.writeImmutableBuffer(renamed) }
        return out
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
    func loginExpectations(defaults: [String: String]) -> [String: String] {
        var expected = defaults
        for (name, value) in self.startupSettings {
            if let key = expected.keys.first(where: { $0.lowercased() == name.lowercased() }) { expected[key] = value }
        }
        return expected
    }

    /// Takes the values a transaction-mode login tells the client, and their key, from `template`.
    func setReported(from template: LoginTemplate) {
        self.reported = template.reported
        self.settingsKey = template.settingsKey
    }

    /// Records the values the client has seen and the pool's key for its whole set of settings.
    func setReported(_ reported: [String: String]) {
        self.reported = reported
        guard let pool = self.pool else { return }
        var text = ""
        for (name, value) in reported.sorted(by: { $0.key < $1.key })
        where SettingsPlan.settableReported.contains(name.lowercased()) {
            text += "\(name)=\(value)\u{0}"
        }
        text += "\u{1}"
        let reportedNames = Set(reported.keys.map { $0.lowercased() })
        if let session = self.sessionSettings {
            for (name, value) in session.sorted(by: { $0.key < $1.key }) where !reportedNames.contains(name) {
                text += "\(name)=\(value)\u{0}"
            }
        } else {
            for (name, value) in self.startupSettings where !reportedNames.contains(name.lowercased()) {
                text += "\(name.lowercased())=\(value)\u{0}"
            }
        }
        self.settingsKey = pool.settingsKeys.key(for: text)
    }

    /// Transaction mode: the client sent something while it holds no server; keep it and queue for one.
    func requestServer(for input: ByteBuffer) {
        guard let pool = self.pool else { return }
        if self.pendingInput == nil, Self.isOnlyTerminate(input) {
            self.close(reason: "client sent Terminate")
            return
        }
        // Usually an idle server is handed over within `acquire` and the request goes out straight from the
        // read buffer; only a request still waiting after it is copied out (`holdPendingInput`).
        let first = self.pendingInput == nil
        if first { self.pendingInput = input } else { self.holdPendingInput(input) }
        if self.state == .active {
            self.state = .waiting
            pool.acquire(for: self)
        }
        if first, let pending = self.pendingInput { self.pendingInput = pending.compacted }
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
        var buffer = self.transport.allocator.buffer(capacity: 128)
        let cancelled = ErrorResponse(.error, sqlState: "57014", message: "canceling statement due to user request")
        if requests == 0 { cancelled.encode(into: &buffer) }
        for _ in 0..<requests {
            cancelled.encode(into: &buffer)
            buffer.writeReadyForQuery(.idle)
        }
        self.transport.writeAndFlush(buffer)
    }

    // MARK: Forwarding

    private func forwardToServer(_ input: ByteBuffer) {
        guard let server = self.server else { return }
        self.forwardToServer(input, server: server)
    }

    /// Server bytes for the client; `flushFromServer` sends them.
    func writeFromServer(_ buffer: ByteBuffer) {
        guard self.state == .active else { return }
        self.transport.write(buffer)
    }

    func flushFromServer() {
        guard self.state == .active else { return }
        if !self.asyncMessages.isEmpty { self.deliverQueued() }
        self.transport.flush()
        if !self.transport.isWritable { self.server?.setReading(false) }
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
        // Called for every transaction; the transport makes a system call only for a change.
        self.transport?.setReading(on)
    }

    private func holdPendingInput(_ input: ByteBuffer) {
        guard var pending = self.pendingInput else {
            // The common case, one request while holding no server: the read as it is, unless it is a small
            // part of the loop's read buffer.
            self.pendingInput = input.compacted
            return
        }
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
        guard self.state != .closed, let transport = self.transport else { return }
        self.logger.info("closing client", metadata: [LogKey.reason: "\(error)", LogKey.peer: "\(self.peer)"])
        var buffer = transport.allocator.buffer(capacity: 128)
        error.encode(into: &buffer)
        self.closeReason = error.message
        self.finish(reason: error.message, clean: self.scanner.isAtBoundary && !self.dirty)
        transport.write(buffer)
        transport.closeAfterFlush()
    }

    func close(reason: String) {
        if self.closeReason == nil { self.closeReason = reason }
        self.finish(reason: reason, clean: self.scanner.isAtBoundary && !self.dirty)
        self.transport?.close()
    }

    /// Gives back what the session holds; runs once, whichever way the session ends.
    private func finish(reason: String, clean: Bool) {
        guard self.state != .closed else { return }
        let previous = self.state
        self.state = .closed
        self.loginTimer?.cancel()
        if let key = self.cancelKey { self.runtime.unregisterCancelKey(key) }
        self.stalledInput = nil
        self.pool?.statements.release(self.statements.removeAll())
        self.releaseSessionState()
        switch previous {
        case .waiting:
            self.pool?.cancelWait(for: self)
        case .syncing, .active:
            let server = self.server
            self.server = nil
            server?.clientLeft(clean: previous == .syncing || clean)
        case .admin:
            self.adminConsole?.close()
            self.adminConsole = nil
        case .startup, .closed:
            break
        }
        self.runtime.clientClosed(self)
    }

}

extension Duration {
    var timeAmount: TimeAmount { .nanoseconds(Int64(self.seconds * 1e9)) }
}

/// What a client keeps once it sends requests: held input, statement names, session state and queued
/// notifications. A client that has only logged in has none of it, so 10,000 idle clients do not hold 10,000 of
/// these; the session's properties of the same names read defaults while it is absent.
final class Working {
    var pendingInput: ByteBuffer?
    var stalledInput: ByteBuffer?
    var statements = ClientStatements()
    var sessionSettings: [String: String]?
    var pins: SessionEffects.Pins = []
    var pinSlot = false
    var listenChannels: Set<String> = []
    var heldReady: ByteBuffer?
    var asyncMessages: [ByteBuffer] = []
    var listened = false
}

/// The login machine of a client still logging in, held by reference so a logged-in client drops it.
final class LoginBox {
    var machine: LoginMachine

    init(_ machine: LoginMachine) {
        self.machine = machine
    }
}
