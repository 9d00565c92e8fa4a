// The login's actions run against the real connection: answers, TLS, the pool and method, secrets, peers.

import Logging
import NIOCore
import PGWire

extension ClientSession {
    /// Runs what the login machine asked for, in order; some actions feed the machine again.
    func run(_ actions: [LoginMachine.Action]) {
        for action in actions {
            guard self.state == .startup else { return }
            switch action {
            case .answerEncryption(let accept):
                var answer = self.transport.allocator.buffer(capacity: 1)
                answer.writeInteger(UInt8(ascii: accept ? "S" : "N"))
                self.transport.writeAndFlush(answer)
                if accept, let tls = self.runtime.authenticator.tlsContext {
                    do {
                        try self.transport.startTLS(context: tls.context)
                    } catch {
                        self.close(reason: "cannot start TLS: \(error)")
                        return
                    }
                    self.serverEndPoint = tls.serverEndPoint
                }
            case .cancel(let key):
                self.runtime.cancel(key, from: self.peer)
                self.close(reason: "cancel request handled")
                return
            case .decide(let startup):
                self.run(self.login.decided(self.decide(startup), peerHost: self.peerHost))
            case .checkPeer:
                // The user database may be NSS over the network: looked up on a worker, never on the loop.
                let uid = (try? self.transport.peerCredentials())?.uid
                self.transport.flush()
                self.runtime.threadPool.runIfActive(eventLoop: self.transport.loop) { uid.flatMap { systemUserName(uid: $0) } }
                    .whenComplete { [self] result in
                        guard self.state == .startup else { return }
                        self.run(self.login.peerChecked(osUser: (try? result.get()) ?? nil))
                    }
                return
            case .lookUpSecret(let startup, let method):
                self.lookUpSecret(startup, method: method)
            case .write(let buffer):
                self.transport.write(buffer)
            case .authorized(let startup, let pending) where self.runtime.isAdminConsole(startup.database):
                self.transport.flush()
                self.adminLogin(pending: pending)
                return
            case .authorized(let startup, let pending):
                let (found, refusal) = self.runtime.pool(for: startup.database)
                guard let pool = found else {
                    self.fatal(refusal ?? .fatal("3D000", "database \"\(startup.database)\" does not exist"))
                    return
                }
                self.pendingInput = pending
                self.transport.flush()
                self.loginAuthorized(pool: pool)
            case .fail(let error, let note):
                if let note { self.log(note) }
                self.fatal(error)
                return
            case .close(let reason):
                self.close(reason: reason)
                return
            }
        }
        self.transport?.flush()
    }

    /// How this client reached the agent, for auth rules and `client_tls = require`.
    var connectionKind: ConnectionKind {
        if self.isUnixSocket { return .local }
        return self.tlsActive ? .hostssl : .hostnossl
    }

    /// The pool and method for a startup that passed the login's own checks.
    private func decide(_ startup: LoginMachine.Startup) -> LoginMachine.Decision {
        self.startup = startup.message
        // A database no pool is configured for is served by the template, whose pool is made after the login.
        let name: String
        if self.runtime.isAdminConsole(startup.database) {
            // Whether the user may use the console is told after authentication, not to anyone who asks.
            name = AdminConsole.database
        } else if let settings = self.runtime.configuration.poolSettings(for: startup.database) {
            name = settings.name
        } else {
            return .refuse(.fatal("3D000", "database \"\(startup.database)\" does not exist", detail: "poolagent has no pool configured for it"))
        }
        do {
            self.startupSettings = try StartupOptions.settings(of: startup.message)
        } catch {
            return .refuse(.fatal("0A000", error.message))
        }
        guard !self.runtime.isShuttingDown else {
            return .refuse(.fatal("57P03", "the agent is shutting down"))
        }
        let kind = self.connectionKind
        let (method, rule) = self.runtime.authenticator.method(
            kind: kind, address: self.remoteAddress?.bytes, database: name, user: startup.user
        )
        let ruleText = rule.map { "auth rule \($0)" } ?? "the default for \(kind == .local ? "auth.unix" : "auth.tcp")"
        if self.logs(.debug) { self.logger.debug("authenticating", metadata: ["user": "\(startup.user)", "method": "\(method.rawValue)", "by": "\(ruleText)"]) }
        switch method {
        case .trust:
            return .trust
        case .peer:
            return .peer
        case .scramSHA256, .md5:
            return .password(method)
        case .reject:
            let encryption = kind == .hostssl ? "TLS" : kind == .local ? "Unix socket" : "no encryption"
            return .refuse(.fatal("28000", "connection rejected for \(self.peerHost), user \"\(startup.user)\", database \"\(startup.database)\", \(encryption)",
                                  detail: "Refused by \(ruleText)."))
        }
    }

    /// Looks the user's secret up (the auth file, or auth_query on a worker) and hands the login what the
    /// challenge is made of.
    private func lookUpSecret(_ startup: LoginMachine.Startup, method: AuthMethod) {
        let auth = self.runtime.authenticator
        // A pool made from the template looks passwords up with the template's auth_query; the admin console
        // only in the auth file.
        let configured = self.runtime.configuration.pools[startup.database] != nil
        let lookupPool = configured || self.runtime.isAdminConsole(startup.database) ? startup.database : PoolTemplate.name
        auth.secret(for: startup.user, pool: lookupPool, stillWanted: { [weak self] in self?.login.isAuthenticating == true })
            .whenComplete { [self] result in
                guard self.state == .startup, self.login.isAuthenticating else { return }
                var random = SystemRandomNumberGenerator()
                let outcome: AuthQueryOutcome
                switch result {
                case .success(let found): outcome = found
                case .failure(let error): outcome = .failed("\(error)")
                }
                var scram: ScramSecret? = nil
                if case .secret(let secret) = outcome { scram = auth.scramSecret(user: startup.user, secret) }
                let material = LoginMachine.SecretMaterial(
                    outcome: outcome,
                    scram: scram,
                    mockKey: auth.mockKey,
                    nonce: Base64.encode((0..<18).map { _ in UInt8.random(in: .min ... .max, using: &random) }),
                    md5Salt: (0..<4).map { _ in UInt8.random(in: .min ... .max, using: &random) },
                    channelBinding: self.serverEndPoint
                )
                self.run(self.login.secretFound(material))
            }
    }

    private func log(_ note: LoginMachine.Note) {
        switch note {
        case .lookupFailed(let user, let reason):
            self.logger.warning("password lookup failed", metadata: ["user": "\(user)", LogKey.reason: "\(reason)"])
        case .passwordRefused(let user, let reason):
            self.logger.info("password authentication failed", metadata: ["user": "\(user)", LogKey.reason: "\(reason)", LogKey.peer: "\(self.peer)"])
        case .peerRefused(let user, let osUser):
            self.logger.info("peer authentication failed", metadata: ["user": "\(user)", "os_user": "\(osUser)"])
        }
    }

    /// The client proved who it is on the admin console's database: the session answers its commands.
    private func adminLogin(pending: ByteBuffer?) {
        self.loginTimer?.cancel()
        self.loginTimer = nil
        let user = self.startup?.user ?? ""
        guard let access = self.runtime.adminAccess(of: user) else {
            self.fatal(.fatal("28000", "not allowed: user \"\(user)\" is in neither admin_users nor stats_users"))
            return
        }
        // Counted as a logged-in client of the user (max_user_connections), no longer as logging in.
        let admission = ClientLimits.Admission(pool: AdminConsole.database, user: user)
        if let refusal = self.runtime.admit(admission, to: nil) {
            self.fatal(refusal.error)
            return
        }
        self.admission = admission
        self.cancelKey = self.runtime.registerCancelKey(for: self)
        let console = AdminConsole(session: self, access: access)
        self.adminConsole = console
        self.state = .admin
        self.completeLogin(parameters: AdminConsole.parameters)
        if let pending { console.received(pending) }
    }

    /// The client proved who it is (or needed not): the session joins its pool.
    private func loginAuthorized(pool: Pool) {
        self.loginTimer?.cancel()
        self.loginTimer = nil
        let admission = ClientLimits.Admission(pool: pool.name, user: self.startup?.user ?? "")
        if let refusal = self.runtime.admit(admission, to: pool) {
            self.fatal(refusal.error)
            return
        }
        self.admission = admission
        self.pool = pool
        if pool.settings.mode == .transaction {
            // Statement names and texts are read from these messages, so they are held until complete.
            self.scanner = MessageScanner(
                captureTypes: MessageTypeSet([
                    FrontendMessageID.terminate, FrontendMessageID.query, FrontendMessageID.parse, FrontendMessageID.bind,
                    FrontendMessageID.describe, FrontendMessageID.close,
                ]),
                maxCaptureLength: Self.maximumRewrittenMessage
            )
        }
        self.cancelKey = self.runtime.registerCancelKey(for: self)
        if pool.settings.mode == .transaction, let defaults = pool.defaultParameters {
            // Transaction mode logs in without a server: the pool's values, with the client's own on top;
            // its settings reach a server with its first transaction.
            // Clients of one application log in with the same settings: what the last one was told is reused.
            let template: LoginTemplate
            if let last = pool.loginTemplate, last.matches(self.startupSettings) {
                template = last
                self.setReported(from: template)
            } else {
                let reported = self.loginExpectations(defaults: defaults)
                self.setReported(reported)
                template = LoginTemplate(
                    startupSettings: self.startupSettings, reported: reported, settingsKey: self.settingsKey,
                    parameterStatus: Self.parameterStatus(reported)
                )
                pool.loginTemplate = template
            }
            self.state = .active
            self.completeLogin(parameterStatus: template.parameterStatus)
            if let pending = self.pendingInput {
                self.pendingInput = nil
                self.requestServer(for: pending)
            }
            return
        }
        self.state = .waiting
        pool.acquire(for: self)
    }
}

/// What a transaction-mode login tells a client with these startup settings, worked out once for the clients
/// after it with the same ones: the reported values (the pool's server defaults with the client's settings on
/// top), their settings key, and their ParameterStatus messages. The pool forgets it when its server defaults
/// change.
struct LoginTemplate {
    let startupSettings: [(String, String)]
    let reported: [String: String]
    let settingsKey: Int
    let parameterStatus: ByteBuffer

    func matches(_ settings: [(String, String)]) -> Bool {
        settings.count == self.startupSettings.count
            && zip(settings, self.startupSettings).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }
}
