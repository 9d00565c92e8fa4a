// One client connection: the startup handshake, waiting for a server, then forwarding in session or transaction mode.

import Logging
import NIOCore
import NIOSSL
import PGWire
import PoolCore

#if canImport(Glibc)
import Glibc
#endif

/// The agent's side of one application connection.
///
/// Startup packets are answered by the agent itself; once a server is assigned and the client's settings
/// are applied to it, bytes flow both ways unparsed, scanned only for message boundaries, Terminate and
/// the requests that await a ReadyForQuery.
final class ClientSession: TransportDelegate, @unchecked Sendable {  // Confined to the agent's event loop.

    enum State: String {
        case startup, authenticating, waiting, syncing, active, closed
    }

    /// Where the password exchange stands while the state is `authenticating`.
    enum PasswordExchange {
        /// The secret is being looked up; nothing has been asked of the client yet.
        case lookingUp
        case scramInitial(ScramExchange)
        case scramFinal(ScramExchange)
        /// md5: the response that proves the password.
        case md5(expected: [UInt8])
    }

    let id: Int
    /// The runtime outlives every session.
    private unowned(unsafe) let runtime: AgentRuntime
    /// The client's socket; set by `start`.
    private var transport: Transport!
    /// The client came in on the Unix socket.
    private var isUnixSocket = false
    /// The client's IP address as bytes (4 or 16), for address rules.
    private var remoteAddressBytes: [UInt8]?
    private(set) var state: State = .startup
    private var startupBuffer: ByteBuffer?
    private var sslRequested = false
    private var gssRequested = false
    /// TLS was negotiated: everything after the SSLRequest is encrypted.
    private(set) var tlsActive = false
    /// The certificate hash this connection's TLS uses, for SCRAM-SHA-256-PLUS.
    private var serverEndPoint: [UInt8]?
    private var exchange: PasswordExchange?
    /// Bytes of the password exchange not yet read.
    private var authInput: ByteBuffer?
    private var startup: StartupMessage?
    /// Bytes the client sent while it waits for a server; sent once it has one.
    private var pendingInput: ByteBuffer?
    private(set) var pool: Pool?
    private(set) var server: ServerConnection?
    private(set) var cancelKey: CancelRequest?
    private var scanner = MessageScanner(captureTypes: MessageTypeSet([FrontendMessageID.terminate]))
    /// Named prepared statements of this client (transaction mode), by the client's name.
    var statements = ClientStatements()
    /// Bytes from a message on that waits for the server's answer to an earlier one (see `forwardToServer`).
    private var stalledInput: ByteBuffer?
    private var loginTimer: Scheduled<Void>?
    let connectedAt: Moment = .now
    /// The last time the client sent anything, for `client_idle_timeout` and `idle_in_transaction_timeout`.
    private(set) var lastActivity: Moment = .now
    private(set) var peer = "unknown"
    /// The peer without its port, for messages to the client.
    private var peerHost = "unknown"
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

    // MARK: Transport events

    /// The client connected: its socket is `transport`, accepted from a Unix listener when `unix`.
    func start(transport: Transport, unix: Bool) {
        self.transport = transport
        self.isUnixSocket = unix
        if !unix, let address = transport.peerAddress(), !address.address.isEmpty {
            self.remoteAddressBytes = address.address
            self.peerHost = "host \"\(Self.text(ofAddress: address.address))\""
            self.peer = "\(self.peerHost) port \(address.port)"
        } else {
            self.peerHost = "the Unix socket"
            self.peer = self.peerHost
        }
        self.runtime.clientOpened(self)
        self.loginTimer = transport.loop.scheduleTask(in: self.runtime.configuration.loginTimeout.timeAmount) { [self] in
            guard self.state == .startup || self.state == .authenticating else { return }
            let stage = self.state == .startup ? "no startup packet" : "authentication not completed"
            self.fatal(.fatal("08006", "login timeout: \(stage) within \(self.runtime.configuration.loginTimeout.configText)"))
        }
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
            self.startupBytes(buffer)
        case .authenticating:
            self.authenticationBytes(buffer)
        case .waiting, .syncing:
            self.holdPendingInput(buffer)
        case .closed:
            break
        }
    }

    func transportWritable() {
        self.server?.setReading(true)
    }

    func transportClosed(error: String?) {
        if let error, self.closeReason == nil { self.closeReason = "client connection error: \(error)" }
        self.finish(reason: self.closeReason ?? "client disconnected", clean: self.scanner.isAtBoundary && !self.dirty)
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
                if buffer.readableBytes > 0 { self.startupBuffer = buffer.compacted }
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
                let auth = self.runtime.authenticator
                let tlsContext = isSSL && self.connectionKind != .local && auth.tlsMode != .disable ? auth.tlsContext : nil
                if tlsContext != nil, buffer.readableBytes > 0 {
                    // Bytes sent before the handshake could be injected by anyone on the path (CVE-2021-23214).
                    self.fatal(.fatal("08P01", "received unencrypted data after SSL request"))
                    return
                }
                var answer = self.transport.allocator.buffer(capacity: 1)
                answer.writeInteger(UInt8(ascii: tlsContext == nil ? "N" : "S"))
                self.transport.writeAndFlush(answer)
                if let tlsContext {
                    do {
                        try self.transport.startTLS(context: tlsContext.context)
                    } catch {
                        self.close(reason: "cannot start TLS: \(error)")
                        return
                    }
                    self.tlsActive = true
                    self.serverEndPoint = tlsContext.serverEndPoint
                }
            case .cancelRequest(let key):
                self.runtime.cancel(key, from: self.peer)
                self.close(reason: "cancel request handled")
                return
            case .startup(let message):
                if buffer.readableBytes > 0 { self.pendingInput = buffer.compacted }
                self.startupReceived(message)
                return
            }
        }
    }

    private func startupReceived(_ message: StartupMessage) {
        self.startup = message
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
        self.authenticate(user: user, database: database, pool: pool)
    }

    /// The client proved who it is (or needed not): the session joins its pool.
    private func loginAuthorized(pool: Pool) {
        self.loginTimer?.cancel()
        self.loginTimer = nil
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

    // MARK: Authentication

    /// How this client reached the agent, for auth rules and `client_tls = require`.
    var connectionKind: ConnectionKind {
        if self.isUnixSocket { return .local }
        return self.tlsActive ? .hostssl : .hostnossl
    }

    private func authenticate(user: String, database: String, pool: Pool) {
        let auth = self.runtime.authenticator
        let kind = self.connectionKind
        if let startup = self.startup, startup.minorVersion > 0 || !startup.protocolOptions.isEmpty {
            // As PostgreSQL does: right after the startup packet, before any authentication request.
            var buffer = self.transport.allocator.buffer(capacity: 64)
            buffer.writeNegotiateProtocolVersion(minorVersion: 0, unsupportedOptions: startup.protocolOptions)
            self.transport.write(buffer)
        }
        if kind != .local && auth.tlsMode == .require && !self.tlsActive {
            self.fatal(.fatal("28000", "TLS is required: this agent refuses unencrypted connections from \(self.peerHost)",
                              detail: "Connect with sslmode=require (client_tls = require)."))
            return
        }
        let (method, rule) = auth.method(kind: kind, address: self.remoteAddressBytes, database: database, user: user)
        let ruleText = rule.map { "auth rule \($0)" } ?? "the default for \(kind == .local ? "auth.unix" : "auth.tcp")"
        self.logger.debug("authenticating", metadata: ["user": "\(user)", "method": "\(method.rawValue)", "by": "\(ruleText)"])
        switch method {
        case .trust:
            self.loginAuthorized(pool: pool)
        case .reject:
            let encryption = kind == .hostssl ? "TLS" : kind == .local ? "Unix socket" : "no encryption"
            self.fatal(.fatal("28000", "connection rejected for \(self.peerHost), user \"\(user)\", database \"\(database)\", \(encryption)",
                              detail: "Refused by \(ruleText)."))
        case .peer:
            self.authenticatePeer(user: user, pool: pool)
        case .scramSHA256, .md5:
            self.state = .authenticating
            self.exchange = .lookingUp
            if let pending = self.pendingInput {
                self.pendingInput = nil
                self.authInput = pending
            }
            auth.secret(for: user, pool: pool.name, stillWanted: { [weak self] in self?.state == .authenticating }).whenComplete { [self] result in
                guard self.state == .authenticating else { return }
                switch result {
                case .success(.failed(let message)):
                    // The detail (upstream errors, the query's result) is for the operator, not an unauthenticated client.
                    self.logger.warning("password lookup failed", metadata: ["user": "\(user)", LogKey.reason: "\(message)"])
                    self.fatal(.fatal("08006", "cannot look up the password of user \"\(user)\"; the agent's log says why"))
                case .success(let outcome):
                    self.startPasswordExchange(method: method, user: user, outcome: outcome)
                case .failure(let error):
                    self.logger.warning("password lookup failed", metadata: ["user": "\(user)", LogKey.reason: "\(error)"])
                    self.fatal(.fatal("08006", "cannot look up the password of user \"\(user)\"; the agent's log says why"))
                }
            }
        }
    }

    private func authenticatePeer(user: String, pool: Pool) {
        guard let credentials = try? self.transport.peerCredentials(), let name = systemUserName(uid: credentials.uid) else {
            self.fatal(.fatal("28000", "peer authentication failed for user \"\(user)\"", detail: "Cannot map the peer's uid to a user name."))
            return
        }
        guard name == user else {
            self.logger.info("peer authentication failed", metadata: ["user": "\(user)", "os_user": "\(name)"])
            self.fatal(.fatal("28000", "peer authentication failed for user \"\(user)\"",
                              detail: "The connecting process runs as OS user \"\(name)\"."))
            return
        }
        self.loginAuthorized(pool: pool)
    }

    private func startPasswordExchange(method: AuthMethod, user: String, outcome: AuthQueryOutcome) {
        let auth = self.runtime.authenticator
        var buffer = self.transport.allocator.buffer(capacity: 64)
        var random = SystemRandomNumberGenerator()
        var secret: StoredSecret? = nil
        var refusal = "no password"
        switch outcome {
        case .secret(let found): secret = found
        case .refused(let reason), .failed(let reason): refusal = reason
        }
        // As in PostgreSQL: md5 with a SCRAM verifier runs SCRAM; SCRAM with an md5 hash cannot succeed. A user
        // without a secret gets SCRAM too, so the first request does not tell who exists.
        var md5Stored: String? = nil
        switch secret {
        case .md5(let stored)? where method == .md5: md5Stored = stored
        case .plaintext(let password)? where method == .md5: md5Stored = MD5Password.stored(password: password, user: user)
        default: break
        }
        if let md5Stored {
            let salt = (0..<4).map { _ in UInt8.random(in: .min ... .max, using: &random) }
            self.exchange = .md5(expected: MD5Password.expectedResponse(stored: md5Stored, salt: salt))
            buffer.writeAuthenticationMD5Password(salt: salt)
        } else {
            let nonce = Base64.encode((0..<18).map { _ in UInt8.random(in: .min ... .max, using: &random) })
            let exchange: ScramExchange
            let binding = self.serverEndPoint
            if let secret, let scram = auth.scramSecret(user: user, secret) {
                exchange = ScramExchange(secret: scram, serverNonce: nonce, channelBinding: binding)
            } else {
                if secret != nil { refusal = "user has only an md5 password, which cannot answer SCRAM-SHA-256" }
                exchange = ScramExchange(doomedFor: user, reason: refusal, mockKey: auth.mockKey, serverNonce: nonce, channelBinding: binding)
            }
            self.exchange = .scramInitial(exchange)
            buffer.writeAuthenticationSASL(mechanisms: exchange.mechanisms)
        }
        self.transport.writeAndFlush(buffer)
        if let input = self.authInput {
            self.authInput = nil
            self.authenticationBytes(input)
        }
    }

    /// PostgreSQL's limit for one authentication message.
    static let maximumAuthMessage = 65535

    /// Reads password messages (`p`) while authenticating; anything else ends the connection.
    private func authenticationBytes(_ input: ByteBuffer) {
        var buffer = input
        if var held = self.authInput {
            held.writeImmutableBuffer(input)
            buffer = held
        }
        self.authInput = nil
        guard buffer.readableBytes <= Self.maximumAuthMessage * 2 else {
            self.fatal(.fatal("08P01", "too much data sent during authentication"))
            return
        }
        while self.state == .authenticating {
            if case .lookingUp? = self.exchange {
                if buffer.readableBytes > 0 { self.authInput = buffer.compacted }
                return
            }
            guard buffer.readableBytes >= 5, let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
                let length = buffer.getInteger(at: buffer.readerIndex + 1, as: Int32.self)
            else {
                if buffer.readableBytes > 0 { self.authInput = buffer.compacted }
                return
            }
            if type == FrontendMessageID.terminate {
                self.close(reason: "client sent Terminate during authentication")
                return
            }
            guard type == FrontendMessageID.passwordMessage else {
                self.fatal(.fatal("08P01", "expected password response, got message type \(Self.describeType(type))"))
                return
            }
            guard length >= 4, Int(length) <= Self.maximumAuthMessage else {
                self.fatal(.fatal("08P01", "invalid password message length \(length)"))
                return
            }
            guard buffer.readableBytes >= Int(length) + 1 else {
                self.authInput = buffer.compacted
                return
            }
            buffer.moveReaderIndex(forwardBy: 5)
            var body = buffer.readSlice(length: Int(length) - 4)!
            if let pool = self.passwordMessage(&body) {
                // Bytes pipelined after the last password message are the client's first requests.
                if buffer.readableBytes > 0 { self.pendingInput = buffer.compacted }
                self.exchange = nil
                self.state = .startup
                self.loginAuthorized(pool: pool)
                return
            }
        }
    }

    private static func describeType(_ type: UInt8) -> String {
        (0x21...0x7E).contains(type) ? "\"\(Character(Unicode.Scalar(type)))\"" : "0x\(String(type, radix: 16))"
    }

    /// Handles one password message; returns the pool once the client is authenticated.
    private func passwordMessage(_ body: inout ByteBuffer) -> Pool? {
        guard let exchange = self.exchange, let user = self.startup?.user, let pool = self.runtime.pools[self.startup?.database ?? user] else {
            self.close(reason: "authentication state lost")
            return nil
        }
        do throws(AuthFailure) {
            switch exchange {
            case .lookingUp:
                return nil
            case .scramInitial(var scram):
                let initial: SASLInitialResponse
                do {
                    initial = try SASLInitialResponse.decode(from: &body)
                } catch {
                    throw .malformed("malformed SASL message: \(error.description)")
                }
                guard scram.mechanisms.contains(initial.mechanism) else {
                    throw .malformed("client selected an invalid SASL authentication mechanism")
                }
                guard let data = initial.data else { throw .malformed("malformed SCRAM message: the initial response is missing") }
                let serverFirst = try scram.receiveClientFirst(data, mechanism: initial.mechanism)
                self.exchange = .scramFinal(scram)
                var buffer = self.transport.allocator.buffer(capacity: serverFirst.count + 9)
                buffer.writeAuthenticationSASL(code: AuthenticationCode.saslContinue, data: serverFirst)
                self.transport.writeAndFlush(buffer)
                return nil
            case .scramFinal(var scram):
                let serverFinal = try scram.receiveClientFinal(body.readBytes(length: body.readableBytes) ?? [])
                var buffer = self.transport.allocator.buffer(capacity: serverFinal.count + 9)
                buffer.writeAuthenticationSASL(code: AuthenticationCode.saslFinal, data: serverFinal)
                self.transport.write(buffer)
                return pool
            case .md5(let expected):
                let bytes = body.readBytes(length: body.readableBytes) ?? []
                guard let terminator = bytes.firstIndex(of: 0), terminator == bytes.count - 1 else {
                    throw .malformed("invalid password message: not one NUL-terminated string")
                }
                let response = Array(bytes[..<terminator])
                guard constantTimeEquals(response, expected) else { throw .refused("wrong password (md5 response did not match)") }
                return pool
            }
        } catch {
            self.exchange = nil
            switch error {
            case .malformed(let message): self.protocolViolation(message)
            case .unsupported(let message): self.fatal(.fatal("0A000", message))
            case .refused(let reason):
                self.logger.info("password authentication failed", metadata: ["user": "\(user)", LogKey.reason: "\(reason)", LogKey.peer: "\(self.peer)"])
                self.fatal(.fatal("28P01", "password authentication failed for user \"\(user)\""))
            }
            return nil
        }
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
        guard self.startup != nil, let key = self.cancelKey else { return }
        var buffer = self.transport.allocator.buffer(capacity: 512)
        buffer.writeAuthenticationOk()
        for (name, value) in parameters.sorted(by: { $0.key < $1.key }) {
            buffer.writeParameterStatus(name: name, value: value)
        }
        buffer.writeBackendKeyData(key)
        buffer.writeReadyForQuery(.idle)
        self.transport.writeAndFlush(buffer)
        self.loggedIn = true
        self.logger.debug("client logged in")
    }

    // MARK: Transaction pooling

    /// In transaction mode, gives the server back once the client has nothing in flight and no open transaction.
    func releaseIfIdle() {
        guard self.pool?.settings.mode == .transaction, self.state == .active, let server = self.server,
            server.isIdleForRelease, self.scanner.isAtBoundary, self.stalledInput == nil
        else { return }
        self.server = nil
        server.clientLeft(clean: true)
    }

    /// The server answered something: input waiting for it goes on, then the server may go back.
    func serverAnswered() {
        if let stalled = self.stalledInput, let server = self.server {
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

    /// The server's refusal of a duplicate Parse (intent `id`), naming the client's statement, not the agent's.
    func renamingDuplicate(_ id: Int, in body: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        var message = allocator.buffer(capacity: body.readableBytes + 64)
        var renamed = body
        if case .duplicate(let name, let statement)? = self.statements.change(of: id), let pool = self.pool,
            let rewritten = ErrorResponse.renaming(pool.statements.serverName(statement), to: name, inBody: body)
        {
            renamed = rewritten
        }
        message.writeMessage(BackendMessageID.errorResponse) { $0.writeImmutableBuffer(renamed) }
        return message
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
        switch previous {
        case .waiting:
            self.pool?.cancelWait(for: self)
        case .syncing, .active:
            let server = self.server
            self.server = nil
            server?.clientLeft(clean: previous == .syncing || clean)
        case .startup, .authenticating, .closed:
            break
        }
        self.runtime.clientClosed(self)
    }

}

extension Duration {
    var timeAmount: TimeAmount { .nanoseconds(Int64(self.seconds * 1e9)) }
}
