// A configured pool at run time: performs the PoolStateMachine's actions with real connections and its wait timer.

import Logging
import NIOCore
import NIOPosix
import PGWire
import PoolCore

final class Pool: @unchecked Sendable {  // Confined to the agent's event loop.
    typealias Machine = PoolStateMachine<SerialID, SerialID, Moment>

    var settings: PoolSettings
    let eventLoop: IOLoop
    let threadPool: NIOThreadPool
    var connectParameters: [(String, String)]
    var machine: Machine
    private(set) var servers: [SerialID: ServerConnection] = [:]
    private var waiters: [SerialID: ClientSession] = [:]
    /// When each waiting client asked, for the wait-time histogram.
    private var waitingSince: [SerialID: Moment] = [:]
    /// One timer for the whole wait queue, set for the earliest deadline.
    private var waitTimer: Scheduled<Void>?
    let logger: Logger
    private let nextServerID: () -> Int
    let stats = PoolStatistics()
    let statements: StatementRegistry
    let settingsKeys = SettingsKeys()
    /// ParameterStatus values of a fresh server of this pool, for transaction-mode logins.
    private(set) var defaultParameters: [String: String]?
    /// The last transaction-mode login's outcome, for the next client with the same startup settings; nil once
    /// `defaultParameters` change.
    var loginTemplate: LoginTemplate?
    var lastError: String?
    var lastContact: Moment?
    private var drainPromises: [EventLoopPromise<Void>] = []
    /// Tells the agent a server closed or failed to open, so a shutdown can finish when the last is gone.
    var onServerGone: (() -> Void)?
    /// Tells the agent which server closed and why.
    var onServerClosed: ((ServerConnection) -> Void)?
    /// Tells the agent the upstream went down (with libpq's message) or came back.
    var onUpstreamChange: ((Bool, String?) -> Void)?
    var lastErrorAt: Moment?
    /// Transaction mode: clients holding a slot of `max_pinned`.
    var pinnedClients = 0
    /// Transaction mode: pinned clients allowed at once now.
    var pinnedLimit: Int { self.settings.pinnedLimit(size: self.configuration.size) }
    /// Tells the agent a client's pins changed: (client, pins now, added, removed).
    var onPinChange: ((ClientSession, SessionEffects.Pins, SessionEffects.Pins, SessionEffects.Pins) -> Void)?
    /// Tells the agent the listener connection went down (with why) or came back.
    var onListenerChange: ((Bool, String?) -> Void)?
    /// The LISTEN connection of a transaction-mode pool; made on first use.
    private(set) var existingListener: NotificationListener?
    var notificationListener: NotificationListener {
        if let listener = self.existingListener { return listener }
        let listener = NotificationListener(pool: self)
        self.existingListener = listener
        return listener
    }

    init(settings: PoolSettings, eventLoop: IOLoop, threadPool: NIOThreadPool, logger: Logger, nextServerID: @escaping () -> Int) throws {
        self.settings = settings
        self.eventLoop = eventLoop
        self.threadPool = threadPool
        self.machine = Machine(configuration: settings.poolConfiguration)
        self.statements = StatementRegistry(budget: settings.statementBudget)
        let conninfo = try UpstreamConninfo(parsing: settings.upstream)
        self.connectParameters = conninfo.connectParameters(
            poolName: settings.name,
            serverSettings: settings.serverSettings,
            connectTimeout: settings.connectTimeout
        )
        var logger = logger
        logger[metadataKey: LogKey.pool] = "\(settings.name)"
        self.logger = logger
        self.nextServerID = nextServerID
    }

    // Sizing and the upstream probe (Pool+Upstream).
    /// The inputs of `size = "auto"`, shown by `stats` and `config`.
    var autoSizing: (machine: AutoSize.MachineSize, upstreamAvailable: Int?, share: Int?)?
    var probing = false

    // Load windows and autoscaling (Pool+Autoscaling).
    var autoscaler: Autoscaler?
    /// `resize` pins the size; autoscaling resumes with `resize autoscale: true`.
    var autoscalePinned = false
    var lastDecision: Autoscaler.Decision?
    /// When the current load window ends; nil while no window runs.
    var windowEnds: Moment?
    var windowPeakConcurrency = 0
    var windowPeakQueue = 0
    var windowWait = LatencyHistogram()
    /// Receives each autoscaling decision, for the log and for subscribers.
    var onAutoscale: ((Autoscaler.Decision, Bool) -> Void)?

    var name: String { self.settings.name }
    var idleCount: Int { self.machine.idle.count }
    var leasedCount: Int { self.machine.leased.count }
    var openingCount: Int { self.machine.opening }
    var waitingCount: Int { self.machine.waiting }
    var openCount: Int { self.machine.openConnections }
    /// How long the longest-waiting client has waited; nil when none waits.
    var longestWait: Duration? { self.waitingSince.values.min().map { $0.duration(to: .now) } }

    /// Where the servers connect, from the parameters libpq gets (the first host of a list).
    private func parameter(_ keyword: String) -> String? { self.connectParameters.last { $0.0 == keyword }?.1 }
    var upstreamUser: String { self.parameter("user") ?? "" }
    var upstreamDatabase: String { self.parameter("dbname") ?? self.name }
    var upstreamHost: (host: String?, port: String) {
        let host = (self.parameter("host") ?? self.parameter("hostaddr"))?.split(separator: ",").first.map(String.init)
        let port = self.parameter("port")?.split(separator: ",").first.map(String.init) ?? "5432"
        return (host, port)
    }

    /// Opens `min_idle` connections; the agent's janitor does the rest of the upkeep. `poolCount` is how many
    /// pools share the agent, for the upstream share of `size = "auto"`.
    func start(poolCount: Int = 1) {
        self.upkeep(now: .now)
        if let autoscale = self.settings.autoscale {
            self.autoscaler = Autoscaler(minimum: autoscale.minimum, maximum: autoscale.maximum)
        }
        if self.settings.autoscale != nil || self.settings.adaptiveRecycle { self.startWindows() }
        if self.settings.adaptiveRecycle { self.machine.setPolicy(maxLifetime: .some(AdaptiveLifetime.longest), idleTimeout: nil) }
        if self.settings.sizeIsAuto { self.sizeFromUpstream(poolCount: poolCount) }
    }

    func closeServers(_ ids: [SerialID], reason: String) {
        for id in ids { self.servers[id]?.close(reason: reason) }
    }

    func openServers(_ count: Int) {
        for _ in 0..<count { self.openServer() }
    }

    // MARK: Operations

    /// Settings from a reload: limits and policies now; a new upstream replaces servers as they come back.
    func apply(_ next: PoolSettings) {
        let upstreamChanged = next.upstream != self.settings.upstream || !next.serverSettings.elementsEqual(self.settings.serverSettings) { $0 == $1 }
            || next.connectTimeout != self.settings.connectTimeout
        let mode = self.settings.mode
        self.settings = next
        self.settings.mode = mode  // a mode change needs a restart: sessions in flight depend on it
        self.statements.budget = next.statementBudget
        if upstreamChanged, let conninfo = try? UpstreamConninfo(parsing: next.upstream) {
            self.connectParameters = conninfo.connectParameters(
                poolName: next.name, serverSettings: next.serverSettings, connectTimeout: next.connectTimeout
            )
            _ = self.reconnect()
        }
        self.machine.setPolicy(waitTimeout: next.waitTimeout, maxLifetime: .some(next.maxLifetime), idleTimeout: .some(next.idleTimeout))
        _ = self.resize(size: next.size, minIdle: next.minIdle, maxOverflow: next.maxOverflow)
    }

    var configuration: PoolConfiguration { self.machine.configuration }
    var isDraining: Bool { self.machine.isDraining }

    /// New limits now: idle servers above the size close at once, busy ones when released.
    func resize(size: Int, minIdle: Int, maxOverflow: Int) -> (closed: Int, opening: Int) {
        let (close, open) = self.machine.resize(size: size, minIdle: minIdle, maxOverflow: maxOverflow, now: .now)
        self.closeServers(close, reason: "pool resized to \(size)")
        self.openServers(open)
        return (close.count, open)
    }

    /// New recycling policy, judged against existing servers from the next upkeep on.
    func setRecycle(maxLifetime: Duration??, idleTimeout: Duration??) {
        self.machine.setPolicy(maxLifetime: maxLifetime, idleTimeout: idleTimeout)
        self.upkeep(now: .now)
    }

    /// Replaces every server: idle ones now, busy ones as they are released.
    func reconnect() -> Int {
        let (close, open) = self.machine.retireAll(now: .now)
        self.closeServers(close, reason: "reconnect requested")
        self.openServers(open)
        return close.count
    }

    /// Holds new work and closes every server as in-flight work finishes; the future completes when none
    /// is left.
    func drain() -> EventLoopFuture<Void> {
        let close = self.machine.drain()
        self.closeServers(close, reason: "pool drained")
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.drainPromises.append(promise)
        self.checkDrained()
        return promise.futureResult
    }

    /// Lifts a drain: waiting clients get servers again.
    func resume() {
        let (open, next) = self.machine.resume(now: .now)
        for promise in self.drainPromises { promise.fail(PoolOperationError.resumed) }
        self.drainPromises.removeAll()
        self.openServers(open)
        if let next, self.waitTimer == nil { self.scheduleWaitTimer(at: next) }
    }

    private func checkDrained() {
        guard self.machine.isDrained, !self.drainPromises.isEmpty else { return }
        let promises = self.drainPromises
        self.drainPromises.removeAll()
        for promise in promises { promise.succeed(()) }
    }

    // MARK: Requests from clients

    func acquire(for client: ClientSession) {
        self.stats.checkouts += 1
        let id = SerialID(client.id)
        let now = self.eventLoop.time
        let action = self.machine.leaseRequested(id, now: now)
        // The common case, an idle server at once: the client never enters the waiting tables.
        if case .lease(let serverID, let leased) = action.primary, leased == id, let server = self.servers[serverID] {
            self.hand(server, to: client, waitingSince: now)
            self.openServers(action.open)
            return
        }
        self.waiters[id] = client
        self.waitingSince[id] = now
        self.perform(action)
    }

    /// A waiting client went away before it got a server.
    func cancelWait(for client: ClientSession) {
        guard self.waiters.removeValue(forKey: SerialID(client.id)) != nil else { return }
        self.waitingSince.removeValue(forKey: SerialID(client.id))
        self.perform(self.machine.requestCancelled(SerialID(client.id)))
    }

    /// A server comes back from its client (after its reset) or must be thrown away.
    func release(_ server: ServerConnection, reusable: Bool, reason: String?) {
        if !reusable, let reason { server.noteCloseReason(reason) }
        self.stats.releases += 1
        let now = self.eventLoop.time
        // Recycled at release (lifetime, reconnect) counts as the janitor's recycling does.
        if reusable, self.machine.checkRetired(SerialID(server.id), now: now) { self.stats.recycles += 1 }
        self.perform(self.machine.connectionReleased(SerialID(server.id), reusable: reusable, now: now))
    }

    func serverClosed(_ server: ServerConnection) {
        guard self.servers.removeValue(forKey: SerialID(server.id)) != nil else { return }
        // An idle server that died (backend terminated, network gone) is discarded before anyone used it.
        if server.diedWhileIdle { self.stats.prePingFailures += 1 }
        // The last server went away by itself: the upstream may be down; upkeep probes it.
        if server.closedByServer, self.servers.isEmpty, self.lastError == nil {
            let message = "every server connection closed: \(server.closeReason ?? "server closed the connection")"
            self.lastError = message
            self.lastErrorAt = .now
            self.onUpstreamChange?(false, message)
        }
        self.onServerClosed?(server)
        self.perform(self.machine.connectionClosed(SerialID(server.id), now: .now))
        self.checkDrained()
        self.onServerGone?()
    }

    /// Stops taking clients: waiters are refused, idle servers closed; leased ones close when released.
    func shutdown() {
        self.windowEnds = nil
        let (refused, close) = self.machine.shutdown()
        for request in refused { self.fail(request, .shuttingDown) }
        for id in close { self.servers[id]?.close(reason: "agent shutting down") }
        self.existingListener?.close(reason: "agent shutting down")
    }

    /// Closes every server at once, leased or not.
    func closeAll(reason: String) {
        for server in self.servers.values { server.close(reason: reason) }
        self.existingListener?.close(reason: reason)
    }

    // MARK: Actions

    private func perform(_ action: Machine.Action) {
        switch action.primary {
        case .none:
            break
        case .lease(let serverID, let clientID):
            // The machine and these tables change together; a mismatch is a bug, logged and undone, not a crash.
            guard let server = self.servers[serverID] else {
                self.logger.error("pool leased an unknown server", metadata: [LogKey.server: "\(serverID)"])
                self.perform(self.machine.connectionClosed(serverID, now: .now))
                self.fail(clientID, .connectFailed("internal error: the leased server was lost"))
                break
            }
            guard let client = self.waiters.removeValue(forKey: clientID) else {
                self.logger.error("pool leased to an unknown client", metadata: [LogKey.client: "\(clientID)"])
                self.perform(self.machine.connectionReleased(serverID, reusable: true, now: .now))
                break
            }
            self.hand(server, to: client, waitingSince: self.waitingSince.removeValue(forKey: clientID))
        case .wait(_, let deadline):
            self.stats.waits += 1
            self.noteLoad()
            if self.waitTimer == nil { self.scheduleWaitTimer(at: deadline) }
        case .fail(let clientID, let error):
            self.fail(clientID, error)
        case .close(let serverID):
            self.servers[serverID]?.close(reason: "closed by pool")
        }
        self.openServers(action.open)
    }

    /// Gives `server` to `client`, first checking with an empty query a server idle longer than
    /// `pre_ping_after`; a dead one is discarded and the client asks again, without seeing an error.
    private func hand(_ server: ServerConnection, to client: ClientSession, waitingSince: Moment?) {
        if let since = waitingSince {
            let waited = since.microseconds(to: self.eventLoop.time)
            self.stats.waitTime.record(microseconds: waited)
            self.windowWait.record(microseconds: waited)
        }
        self.noteLoad()
        self.stats.overflowPeak = max(self.stats.overflowPeak, self.openCount - self.configuration.size)
        guard let after = self.settings.prePingAfter, server.lastUsedAt.duration(to: self.eventLoop.time) >= after else {
            server.link(to: client)
            client.serverAssigned(server)
            return
        }
        server.prePing { [self] healthy in
            if healthy {
                server.link(to: client)
                client.serverAssigned(server)
                return
            }
            // Counted when the server closes: it was idle, so it died before use.
            self.release(server, reusable: false, reason: "pre-ping failed")
            guard client.state == .waiting else { return }
            self.waiters[SerialID(client.id)] = client
            self.waitingSince[SerialID(client.id)] = waitingSince ?? self.eventLoop.time
            self.perform(self.machine.leaseRequested(SerialID(client.id), now: .now))
        }
    }

    private func fail(_ clientID: SerialID, _ error: PoolError) {
        guard let client = self.waiters.removeValue(forKey: clientID) else { return }
        self.waitingSince.removeValue(forKey: clientID)
        if case .waitTimeout = error { self.stats.waitTimeouts += 1 }
        client.poolRefused(error)
    }

    private func scheduleWaitTimer(at deadline: Moment) {
        let delay = max(.zero, Moment.now.duration(to: deadline))
        self.waitTimer = self.eventLoop.scheduleTask(in: delay.timeAmount + .milliseconds(1)) { [self] in
            self.waitTimer = nil
            let (expired, next) = self.machine.expireWaiters(now: .now)
            for clientID in expired { self.fail(clientID, .waitTimeout(self.settings.waitTimeout)) }
            if let next { self.scheduleWaitTimer(at: next) }
        }
    }

    private func openServer() {
        self.stats.connectAttempts += 1
        self.connectUpstream { [self] result in
            switch result {
            case .success(let link): self.attach(link)
            case .failure(let error): self.connectFailed(error.message)
            }
        }
    }

    /// Opens one connection to the upstream with libpq on a worker; `completion` runs on the loop with the
    /// link, or with why there is none.
    func connectUpstream(_ completion: @escaping @Sendable (Result<UpstreamLink, UpstreamConnectError>) -> Void) {
        let parameters = self.connectParameters
        self.threadPool.runIfActive(eventLoop: self.eventLoop) {
            LibPQConnector.connect(parameters: parameters)
        }.whenComplete { result in
            switch result {
            case .success(.success(let link)): completion(.success(link))
            case .success(.failure(let failure)): completion(.failure(UpstreamConnectError(message: failure.message)))
            case .failure(let error): completion(.failure(UpstreamConnectError(message: "connect could not start: \(error)")))
            }
        }
    }

    private func attach(_ link: UpstreamLink) {
        let server = ServerConnection(id: self.nextServerID(), pool: self, link: link, logger: self.logger)
        let transport: Transport
        do {
            let tls = try link.adoptTLS()
            transport = try Transport.start(fd: link.handOffSocket(), loop: self.eventLoop, noDelay: true, delegate: server)
            transport.flushesFirst = true
            if let tls { transport.startTLS(session: tls) }
        } catch {
            link.finish()
            self.connectFailed("cannot register the server socket: \(error)")
            return
        }
        server.attach(transport: transport)
        self.servers[SerialID(server.id)] = server
        if self.defaultParameters != link.parameters {
            self.defaultParameters = link.parameters
            self.loginTemplate = nil
        }
        self.lastContact = .now
        if self.lastError != nil {
            self.lastError = nil
            self.onUpstreamChange?(true, nil)
        }
        self.stats.connects += 1
        self.logger.debug("server connection opened", metadata: [LogKey.backendPID: "\(link.backendPID)"])
        // ±10% of max_lifetime, so servers opened together do not expire together.
        self.perform(self.machine.connectionOpened(SerialID(server.id), now: .now, lifetimeFactor: Double.random(in: 0.9...1.1)))
    }

    private func connectFailed(_ message: String) {
        self.stats.connectFailures += 1
        if self.lastError == nil { self.onUpstreamChange?(false, message) }
        self.lastError = message
        self.lastErrorAt = .now
        self.logger.warning("cannot connect to the upstream", metadata: [LogKey.error: "\(message)"])
        self.perform(self.machine.connectionFailed(message, now: .now))
        self.checkDrained()
        self.onServerGone?()
    }
}

/// Why an upstream connection could not be opened, as libpq said it.
struct UpstreamConnectError: Error {
    var message: String
}

enum PoolOperationError: Error {
    /// A drain was lifted by `resume` before it finished.
    case resumed
}
