// The agent's shared state on its event loop: pools, client sessions, cancel keys and shutdown.

import CPoolIO
import Logging
import NIOCore
import NIOPosix
import PGWire
import PoolCore

#if canImport(Glibc)
import Glibc
#endif

/// Everything client sessions and pools share. Lives on the data event loop; no locks.
final class AgentRuntime: @unchecked Sendable {  // Confined to the agent's event loop.
    private(set) var configuration: AgentConfiguration
    let eventLoop: IOLoop
    let threadPool: NIOThreadPool
    let logger: Logger
    private(set) var pools: [String: Pool] = [:]
    /// The pools made from the template, with when each last had a client.
    private(set) var templatePools: [String: Moment] = [:]
    private(set) var clients: [Int: ClientSession] = [:]
    /// Live clients by the process id of their BackendKeyData; the secret is checked on lookup.
    private var cancelKeys: [Int32: (secret: Int32, client: ClientSession)] = [:]
    private var nextClientID = 0
    private var nextServerID = 0
    private(set) var isShuttingDown = false
    let startedAt: Moment = .now
    private var random = SystemRandomNumberGenerator()
    /// Runs when the last client and server are gone during a graceful shutdown.
    var onDrained: (() -> Void)?
    /// Receives every event for `subscribe`rs of the control socket.
    var onEvent: ((AgentEvent) -> Void)?
    /// The last closed connections with why they closed, for list-clients and list-servers.
    private(set) var recentlyClosedClients: [(id: Int, reason: String)] = []
    private(set) var recentlyClosedServers: [(id: Int, pool: String, backendPID: Int32, reason: String)] = []
    static let recentlyClosedLimit = 50
    private var sweepTask: RepeatedTask?
    /// Client authentication and TLS: methods, secrets, certificates.
    let authenticator: ClientAuthenticator
    /// Clients open, logging in, per pool and per user, against the configured limits.
    private(set) var limits: ClientLimits
    /// Refused connections being told why (`RefusedClient`), and how many may be at once.
    private var refusing = 0
    private var lastShed: Moment?
    static let refusingLimit = 256

    init(configuration: AgentConfiguration, eventLoop: IOLoop, threadPool: NIOThreadPool, logger: Logger) throws {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.threadPool = threadPool
        self.logger = logger
        self.limits = ClientLimits(
            maxClientConnections: configuration.maxClientConnections,
            maxLoginClients: configuration.maxLoginClients,
            maxUserConnections: configuration.maxUserConnections
        )
        do {
            self.authenticator = try ClientAuthenticator(configuration: configuration, eventLoop: eventLoop, threadPool: threadPool)
        } catch {
            throw AgentStartError("\(configuration.path): \(error)")
        }
        for (name, settings) in configuration.pools {
            self.pools[name] = try self.makePool(settings)
        }
        self.reserveDescriptors(for: configuration)
    }

    private func makePool(_ settings: PoolSettings) throws -> Pool {
        try Pool(settings: settings, eventLoop: self.eventLoop, threadPool: self.threadPool, logger: self.logger) { [unowned self] in
            self.nextServerID += 1
            return self.nextServerID
        }
    }

    private func startPool(_ pool: Pool) {
        pool.onServerGone = { [unowned self] in self.checkDrained() }
        pool.onServerClosed = { [unowned self] server in
            self.recentlyClosedServers.append((server.id, pool.name, server.backendPID, server.closeReason ?? "closed"))
            if self.recentlyClosedServers.count > Self.recentlyClosedLimit { self.recentlyClosedServers.removeFirst() }
        }
        pool.onUpstreamChange = { [unowned self] up, message in
            self.onEvent?(.upstream(pool: pool.name, up: up, error: message))
        }
        pool.onPinChange = { [unowned self] client, pins, added, removed in
            self.onEvent?(.pin(pool: pool.name, client: client.id, pins: pins, added: added, removed: removed))
        }
        pool.onListenerChange = { [unowned self] up, message in
            self.onEvent?(.listener(pool: pool.name, up: up, error: message))
        }
        pool.onAutoscale = { [unowned self] decision, applied in
            self.logger.log(level: applied ? .info : .debug, "autoscale decision", metadata: [
                LogKey.pool: "\(pool.name)", "size": "\(decision.size)", "previous": "\(decision.previous)", "applied": "\(applied)",
                "pinned": "\(pool.autoscalePinned)", LogKey.reason: "\(decision.reason)",
                "peak_concurrency": "\(decision.window.peakConcurrency)", "peak_queue": "\(decision.window.peakQueue)",
                "wait_p95_ms": "\(decision.window.waitP95Milliseconds)",
            ])
            self.onEvent?(.autoscale(pool: pool.name, decision: decision, applied: applied, pinned: pool.autoscalePinned))
        }
        pool.start(poolCount: self.pools.count)
    }

    func start() {
        for pool in self.pools.values { self.startPool(pool) }
        self.sweepTask = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [unowned self] _ in
            self.janitor()
        }
    }

    /// A client connected on a listener: its socket becomes a session, unless a limit refuses it.
    func accepted(_ fd: Int32, unix: Bool) {
        if let refusal = self.limits.accept(fd: fd) {
            self.refuse(fd, refusal, unix: unix)
            if case .descriptors = refusal { self.shedLoggingIn() }
            return
        }
        self.nextClientID += 1
        let client = ClientSession(id: self.nextClientID, runtime: self)
        do {
            let transport = try Transport.start(fd: fd, loop: self.eventLoop, noDelay: !unix, delegate: client)
            client.start(transport: transport, unix: unix)
        } catch {
            self.limits.left(nil)
            self.logger.warning("cannot serve an accepted connection", metadata: [LogKey.error: "\(error)"])
        }
    }

    func clientOpened(_ client: ClientSession) {
        self.clients[client.id] = client
    }

    func clientClosed(_ client: ClientSession) {
        self.clients.removeValue(forKey: client.id)
        self.limits.left(client.admission)
        self.recentlyClosedClients.append((client.id, client.closeReason ?? "client disconnected"))
        if self.recentlyClosedClients.count > Self.recentlyClosedLimit { self.recentlyClosedClients.removeFirst() }
        self.checkDrained()
    }

    // MARK: Limits

    /// Tells a client over a limit why, after its encryption request if it sends one (see `RefusedClient`).
    /// Past `refusingLimit` such connections at once, the error goes out at once on the new socket instead
    /// (a client that sent an SSLRequest then reads only that the server answered with an error).
    private func refuse(_ fd: Int32, _ refusal: ClientLimits.Refusal, unix: Bool) {
        let refused = self.limits.refused[refusal.key, default: 0]
        self.logger.log(level: refused % 1000 == 1 ? .warning : .debug, "client refused", metadata: [
            LogKey.reason: "\(refusal)", "refused_so_far": "\(refused)",
        ])
        var explained = true
        if case .descriptors = refusal { explained = false }  // no descriptor to spare for the exchange
        if explained, self.refusing < Self.refusingLimit {
            self.refusing += 1
            if RefusedClient.start(fd: fd, runtime: self, refusal: refusal, unix: unix) { return }
            self.refusing -= 1
            return
        }
        var buffer = Transport.allocator.buffer(capacity: 128)
        refusal.error.encode(into: &buffer)
        _ = buffer.withUnsafeReadableBytes { cpoolio_send(fd, $0.baseAddress, $0.count) }
        Glibc.close(fd)
    }

    private func reserveDescriptors(for configuration: AgentConfiguration) {
        let limit = DescriptorLimit.current.soft
        self.limits.reserveDescriptors(DescriptorLimit.serverReserve(for: configuration, limit: limit), limit: Int(clamping: limit))
    }

    func refusedClientGone() {
        self.refusing -= 1
    }

    /// Out of descriptors: the newest clients still logging in are closed (a tenth of them, at least 16), so
    /// server connects and established clients keep working. A flood of idle unauthenticated sockets costs
    /// its own newest members, not the pools.
    func shedLoggingIn() {
        // Once per 100 ms at most: a flood at the ceiling must not scan every client per connection, nor cost
        // more logins than it brings.
        let now = self.eventLoop.time
        if let last = self.lastShed, last.duration(to: now) < .milliseconds(100) { return }
        self.lastShed = now
        let loggingIn = self.clients.values.filter { $0.state == .startup }.sorted { $0.id > $1.id }
        guard !loggingIn.isEmpty else { return }
        let count = min(loggingIn.count, max(16, loggingIn.count / 10))
        self.logger.warning("out of file descriptors: closing the newest clients still logging in", metadata: [
            "closing": "\(count)", "logging_in": "\(loggingIn.count)", "clients": "\(self.clients.count)",
        ])
        self.limits.noteShed(count)
        let error = ClientLimits.Refusal.descriptors(limit: self.limits.descriptorReserve).error
        for client in loggingIn.prefix(count) { client.fatal(error) }
    }

    /// A client proved who it is and joins `pool`: nil when the pool's and the user's limits let it.
    func admit(_ admission: ClientLimits.Admission, to pool: Pool?) -> ClientLimits.Refusal? {
        let refusal = self.limits.admit(admission, poolLimit: pool?.settings.maxClients ?? 0)
        if let refusal {
            self.logger.info("client refused", metadata: [LogKey.reason: "\(refusal)"])
        }
        return refusal
    }

    // MARK: Admin console

    /// The control plane, for the admin console's commands; set by the agent.
    weak var control: ControlService?

    /// Whether a client asking for `database` gets the admin console: the database `pgbouncer`, when
    /// `admin_users` or `stats_users` is set.
    func isAdminConsole(_ database: String) -> Bool {
        database == AdminConsole.database && (!self.configuration.adminUsers.isEmpty || !self.configuration.statsUsers.isEmpty)
    }

    /// What `user` may do on the admin console; nil: nothing.
    func adminAccess(of user: String) -> AdminConsole.Access? {
        if self.configuration.adminUsers.contains(user) { return .admin }
        if self.configuration.statsUsers.contains(user) { return .stats }
        return nil
    }

    // MARK: Pools made from the template

    /// The pool a logged-in client of `database` joins: its configured pool, else one made from the template
    /// now. Nil with the error for the client when there is neither, or the template's `max_pools` are made.
    func pool(for database: String) -> (Pool?, ErrorResponse?) {
        if let pool = self.pools[database] {
            if self.templatePools[database] != nil { self.templatePools[database] = .now }
            return (pool, nil)
        }
        guard !self.isShuttingDown else { return (nil, .fatal("57P03", "the agent is shutting down")) }
        guard let template = self.configuration.template, self.configuration.pools[database] == nil else {
            return (nil, .fatal("3D000", "database \"\(database)\" does not exist", detail: "poolagent has no pool configured for it"))
        }
        guard self.templatePools.count < template.maxPools else {
            self.logger.warning("pool template full", metadata: [LogKey.pool: "\(database)", "max_pools": "\(template.maxPools)"])
            return (nil, .fatal("53300", "no pool for database \"\(database)\": the pool template has made its max_pools (\(template.maxPools))"))
        }
        do {
            let pool = try self.makePool(template.settings(for: database))
            self.pools[database] = pool
            self.templatePools[database] = .now
            self.startPool(pool)
            self.logger.info("pool made from the template", metadata: [LogKey.pool: "\(database)"])
            return (pool, nil)
        } catch {
            return (nil, .fatal("08006", "cannot make a pool for database \"\(database)\": \(error)"))
        }
    }

    /// Removes the pools made from the template that have had no client for its `unused_timeout`.
    func removeUnusedTemplatePools(now: Moment) {
        guard !self.templatePools.isEmpty else { return }
        let timeout = self.configuration.template?.unusedTimeout ?? .zero
        for (name, lastUsed) in self.templatePools {
            guard let pool = self.pools[name] else { continue }
            if self.limits.clients(of: name) > 0 || pool.leasedCount > 0 || pool.waitingCount > 0 {
                self.templatePools[name] = now
            } else if pool.lastContact == nil && pool.lastError != nil && pool.openingCount == 0 {
                // Never reached (a database that does not exist, say): it holds no place among max_pools.
                self.removePool(pool, because: "could not connect: \(pool.lastError ?? "")")
            } else if lastUsed.duration(to: now) >= timeout {
                self.removePool(pool, because: "went unused for \(timeout.configText)")
            }
        }
    }

    /// Shuts a pool down: its clients get 57P01, its servers close.
    private func removePool(_ pool: Pool, because reason: String) {
        pool.shutdown()
        for client in self.clients.values where client.pool === pool {
            client.fatal(.fatal("57P01", "terminating connection because pool \"\(pool.name)\" \(reason)"))
        }
        pool.closeAll(reason: "pool \(reason)")
        self.pools.removeValue(forKey: pool.name)
        if self.templatePools.removeValue(forKey: pool.name) != nil {
            self.logger.info("pool made from the template removed", metadata: [LogKey.pool: "\(pool.name)", LogKey.reason: "\(reason)"])
        }
    }

    // MARK: Cancel keys

    /// Issues a BackendKeyData unique among live clients.
    func registerCancelKey(for client: ClientSession) -> CancelRequest {
        while true {
            let key = CancelRequest(
                processID: Int32.random(in: 1...Int32.max, using: &self.random),
                secretKey: Int32.random(in: Int32.min...Int32.max, using: &self.random)
            )
            if self.cancelKeys[key.processID] == nil {
                self.cancelKeys[key.processID] = (key.secretKey, client)
                return key
            }
        }
    }

    func unregisterCancelKey(_ key: CancelRequest) {
        if self.cancelKeys[key.processID]?.secret == key.secretKey {
            self.cancelKeys.removeValue(forKey: key.processID)
        }
    }

    /// Forwards a CancelRequest to the server serving that client now, and only while it runs something.
    func cancel(_ key: CancelRequest, from peer: String) {
        guard let entry = self.cancelKeys[key.processID], entry.secret == key.secretKey else {
            self.logger.info("cancel request with an unknown key ignored", metadata: [LogKey.peer: "\(peer)"])
            return
        }
        let client = entry.client
        if client.state == .waiting {
            client.cancelWhileWaiting()
            return
        }
        if client.state == .syncing {
            // The agent is applying the client's settings; its own request has not been sent yet.
            self.logger.debug("cancel request during the settings sync ignored", metadata: [LogKey.client: "\(client.id)"])
            return
        }
        guard let server = client.server, server.isBusy else {
            self.logger.debug("cancel request for an idle client ignored", metadata: [LogKey.client: "\(client.id)"])
            return
        }
        server.cancel(threadPool: self.threadPool, logger: self.logger)
    }

    // MARK: Shutdown

    /// Graceful: refuse new clients and waiters, let sessions end, close servers as they come back.
    func beginShutdown() {
        guard !self.isShuttingDown else { return }
        self.sweepTask?.cancel()
        self.isShuttingDown = true
        for pool in self.pools.values { pool.shutdown() }
        self.checkDrained()
    }

    /// Immediate: every client gets 57P01 and every server is closed.
    func terminateAll(reason: String) {
        self.isShuttingDown = true
        for pool in self.pools.values { pool.shutdown() }
        for client in self.clients.values {
            client.fatal(.fatal("57P01", "terminating connection because the agent is \(reason)"))
        }
        for pool in self.pools.values { pool.closeAll(reason: "agent \(reason)") }
    }

    func checkDrained() {
        guard self.isShuttingDown, self.clients.isEmpty,
            self.pools.values.allSatisfy({ $0.openCount == 0 && $0.openingCount == 0 })
        else { return }
        let onDrained = self.onDrained
        self.onDrained = nil
        onDrained?()
    }

    // MARK: Reload

    /// Re-reads the configuration file (with the auth file and certificates) on a worker, then applies it on
    /// the loop. A bad file changes nothing and the errors come back; otherwise pool limits and policies apply
    /// at once, new pools start, removed pools drain and close, and a changed upstream replaces its servers
    /// as they are released. Listener and socket changes need a restart. The future fails with `ReloadError`.
    func reload() -> EventLoopFuture<ReloadOutcome> {
        guard !self.isShuttingDown else { return self.eventLoop.makeFailedFuture(ReloadError.shuttingDown) }
        let path = self.configuration.path
        return self.threadPool.runIfActive(eventLoop: self.eventLoop) { () throws -> AgentConfiguration in
            do throws(ConfigError) {
                return try ConfigLoader.load(path: path)
            } catch {
                throw ReloadError.invalidConfiguration(file: error.file, errors: [error.description])
            }
        }.flatMapThrowing { [self] next in try self.apply(next) }
    }

    /// Applies a configuration read by `reload`; on the loop, no file is read here.
    private func apply(_ next: AgentConfiguration) throws(ReloadError) -> ReloadOutcome {
        guard !self.isShuttingDown else { throw .shuttingDown }
        for (name, settings) in next.pools where self.pools[name] != nil {
            do {
                try UpstreamConninfo(parsing: settings.upstream).checkFiles()
            } catch {
                throw .invalidConfiguration(file: next.path, errors: ["pools.\(name).upstream: \(error.description)"])
            }
        }
        if let template = next.template, !self.templatePools.isEmpty {
            do {
                try UpstreamConninfo(parsing: template.settings.upstream).checkFiles()
            } catch {
                throw .invalidConfiguration(file: next.path, errors: ["pools.\"*\".upstream: \(error.description)"])
            }
        }
        do {
            // ConfigLoader read the auth file and certificates again, even where their paths did not change.
            try self.authenticator.reload(next)
        } catch {
            throw .invalidConfiguration(file: next.path, errors: [error.description])
        }
        var outcome = ReloadOutcome(file: next.path)
        if next.listen != self.configuration.listen { outcome.requiresRestart.append("agent.listen") }
        if next.unixSocketDirectory != self.configuration.unixSocketDirectory || next.unixSocketPort != self.configuration.unixSocketPort {
            outcome.requiresRestart.append("agent.unix_socket_dir")
        }
        if next.controlSocket != self.configuration.controlSocket { outcome.requiresRestart.append("agent.control_socket") }
        if next.ioUring != self.configuration.ioUring { outcome.requiresRestart.append("agent.io_uring") }
        // A pool made from the template follows the template, unless the file now configures it by name.
        var nextSettings = next.pools
        for name in self.templatePools.keys {
            if next.pools[name] != nil {
                self.templatePools.removeValue(forKey: name)
            } else if let template = next.template {
                nextSettings[name] = template.settings(for: name)
            }
        }
        for (name, settings) in nextSettings.sorted(by: { $0.key < $1.key }) {
            guard let pool = self.pools[name] else {
                do {
                    let pool = try self.makePool(settings)
                    self.pools[name] = pool
                    self.startPool(pool)
                    outcome.added.append(name)
                } catch {
                    outcome.requiresRestart.append("pools.\(name)")
                }
                continue
            }
            guard pool.settings != settings else { continue }
            if pool.settings.mode != settings.mode {
                outcome.requiresRestart.append("pools.\(name).mode")
            }
            pool.apply(settings)
            outcome.changed.append(name)
        }
        for (name, pool) in self.pools where nextSettings[name] == nil {
            outcome.removed.append(name)
            self.removePool(pool, because: "was removed from the configuration")
        }
        self.configuration = next
        self.limits.maxClientConnections = next.maxClientConnections
        self.limits.maxLoginClients = next.maxLoginClients
        self.limits.maxUserConnections = next.maxUserConnections
        self.reserveDescriptors(for: next)
        self.onEvent?(.reload(outcome))
        return outcome
    }
}
