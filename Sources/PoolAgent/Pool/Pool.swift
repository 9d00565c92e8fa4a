// A configured pool at run time: performs the PoolStateMachine's actions with real connections and timers.

import Logging
import NIOCore
import NIOPosix
import PGWire
import PoolCore

final class Pool: @unchecked Sendable {  // Confined to the agent's event loop.
    typealias Machine = PoolStateMachine<Int, Int, ContinuousClock.Instant>

    let settings: PoolSettings
    let eventLoop: any EventLoop
    private let threadPool: NIOThreadPool
    private let connectParameters: [(String, String)]
    private var machine: Machine
    private(set) var servers: [Int: ServerConnection] = [:]
    private var waiters: [Int: ClientSession] = [:]
    /// One timer for the whole wait queue, set for the earliest deadline.
    private var waitTimer: Scheduled<Void>?
    private let logger: Logger
    private let nextServerID: () -> Int
    let stats = PoolStatistics()
    let statements = StatementRegistry()
    let settingsKeys = SettingsKeys()
    /// ParameterStatus values of a fresh server of this pool, for transaction-mode logins.
    private(set) var defaultParameters: [String: String]?
    private(set) var lastError: String?
    private(set) var lastContact: ContinuousClock.Instant?
    private var maintenanceTask: RepeatedTask?
    /// Tells the agent a server closed or failed to open, so a shutdown can finish when the last is gone.
    var onServerGone: (() -> Void)?

    init(settings: PoolSettings, eventLoop: any EventLoop, threadPool: NIOThreadPool, logger: Logger, nextServerID: @escaping () -> Int) throws {
        self.settings = settings
        self.eventLoop = eventLoop
        self.threadPool = threadPool
        self.machine = Machine(configuration: settings.poolConfiguration)
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

    var name: String { self.settings.name }
    var idleCount: Int { self.machine.idle.count }
    var leasedCount: Int { self.machine.leased.count }
    var openingCount: Int { self.machine.opening }
    var waitingCount: Int { self.machine.waiting }
    var openCount: Int { self.machine.openConnections }

    /// Opens `min_idle` connections and starts periodic upkeep.
    func start() {
        self.perform(self.machine.maintenance(now: .now))
        self.maintenanceTask = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
            self.perform(self.machine.maintenance(now: .now))
        }
    }

    // MARK: Requests from clients

    func acquire(for client: ClientSession) {
        self.stats.checkouts += 1
        self.waiters[client.id] = client
        self.perform(self.machine.leaseRequested(client.id, now: .now))
    }

    /// A waiting client went away before it got a server.
    func cancelWait(for client: ClientSession) {
        guard self.waiters.removeValue(forKey: client.id) != nil else { return }
        self.perform(self.machine.requestCancelled(client.id))
    }

    /// A server comes back from its client (after its reset) or must be thrown away.
    func release(_ server: ServerConnection, reusable: Bool, reason: String?) {
        if !reusable, let reason { server.noteCloseReason(reason) }
        self.stats.releases += 1
        self.perform(self.machine.connectionReleased(server.id, reusable: reusable, now: .now))
    }

    func serverClosed(_ server: ServerConnection) {
        guard self.servers.removeValue(forKey: server.id) != nil else { return }
        self.perform(self.machine.connectionClosed(server.id, now: .now))
        self.onServerGone?()
    }

    /// Stops taking clients: waiters are refused, idle servers closed; leased ones close when released.
    func shutdown() {
        self.maintenanceTask?.cancel()
        let (refused, close) = self.machine.shutdown()
        for request in refused { self.fail(request, .shuttingDown) }
        for id in close { self.servers[id]?.close(reason: "agent shutting down") }
    }

    /// Closes every server at once, leased or not.
    func closeAll(reason: String) {
        for server in self.servers.values { server.close(reason: reason) }
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
            server.link(to: client)
            client.serverAssigned(server)
        case .wait(_, let deadline):
            self.stats.waits += 1
            if self.waitTimer == nil { self.scheduleWaitTimer(at: deadline) }
        case .fail(let clientID, let error):
            self.fail(clientID, error)
        case .close(let serverID):
            self.servers[serverID]?.close(reason: "closed by pool")
        }
        for _ in 0..<action.open { self.openServer() }
    }

    private func fail(_ clientID: Int, _ error: PoolError) {
        guard let client = self.waiters.removeValue(forKey: clientID) else { return }
        if case .waitTimeout = error { self.stats.waitTimeouts += 1 }
        client.poolRefused(error)
    }

    private func scheduleWaitTimer(at deadline: ContinuousClock.Instant) {
        let delay = max(.zero, ContinuousClock.now.duration(to: deadline))
        self.waitTimer = self.eventLoop.scheduleTask(in: delay.timeAmount + .milliseconds(1)) { [self] in
            self.waitTimer = nil
            let (expired, next) = self.machine.expireWaiters(now: .now)
            for clientID in expired { self.fail(clientID, .waitTimeout(self.settings.waitTimeout)) }
            if let next { self.scheduleWaitTimer(at: next) }
        }
    }

    private func openServer() {
        self.stats.connectAttempts += 1
        let parameters = self.connectParameters
        let future = self.threadPool.runIfActive(eventLoop: self.eventLoop) {
            LibPQConnector.connect(parameters: parameters)
        }
        future.whenComplete { [self] result in
            switch result {
            case .success(.success(let link)):
                self.attach(link)
            case .success(.failure(let failure)):
                self.connectFailed(failure.message)
            case .failure(let error):
                self.connectFailed("connect could not start: \(error)")
            }
        }
    }

    private func attach(_ link: UpstreamLink) {
        let server = ServerConnection(id: self.nextServerID(), pool: self, link: link, logger: self.logger)
        ClientBootstrap(group: self.eventLoop)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ServerChannelHandler(server: server))
                }
            }
            .withConnectedSocket(link.socket)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    server.attach(channel: channel)
                    self.servers[server.id] = server
                    self.defaultParameters = link.parameters
                    self.lastContact = .now
                    self.lastError = nil
                    self.stats.connects += 1
                    self.logger.debug("server connection opened", metadata: [LogKey.backendPID: "\(link.backendPID)"])
                    self.perform(self.machine.connectionOpened(server.id, now: .now))
                case .failure(let error):
                    link.finish()
                    self.connectFailed("cannot register the server socket: \(error)")
                }
            }
    }

    private func connectFailed(_ message: String) {
        self.stats.connectFailures += 1
        self.lastError = message
        self.logger.warning("cannot connect to the upstream", metadata: [LogKey.error: "\(message)"])
        self.perform(self.machine.connectionFailed(message, now: .now))
        self.onServerGone?()
    }
}

/// Counters of one pool since start.
final class PoolStatistics: @unchecked Sendable {  // Confined to the agent's event loop.
    var checkouts = 0
    var releases = 0
    var waits = 0
    var waitTimeouts = 0
    var connectAttempts = 0
    var connects = 0
    var connectFailures = 0
}
