// The agent's shared state on its event loop: pools, client sessions, cancel keys and shutdown.

import Logging
import NIOCore
import NIOPosix
import PGWire

/// Everything client sessions and pools share. Lives on the data event loop; no locks.
final class AgentRuntime: @unchecked Sendable {  // Confined to the agent's event loop.
    let configuration: AgentConfiguration
    let eventLoop: any EventLoop
    let threadPool: NIOThreadPool
    let logger: Logger
    private(set) var pools: [String: Pool] = [:]
    private(set) var clients: [Int: ClientSession] = [:]
    /// Live clients by the process id of their BackendKeyData; the secret is checked on lookup.
    private var cancelKeys: [Int32: (secret: Int32, client: ClientSession)] = [:]
    private var nextClientID = 0
    private var nextServerID = 0
    private(set) var isShuttingDown = false
    let startedAt: ContinuousClock.Instant = .now
    private var random = SystemRandomNumberGenerator()
    /// Runs when the last client and server are gone during a graceful shutdown.
    var onDrained: (() -> Void)?

    init(configuration: AgentConfiguration, eventLoop: any EventLoop, threadPool: NIOThreadPool, logger: Logger) throws {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.threadPool = threadPool
        self.logger = logger
        for (name, settings) in configuration.pools {
            self.pools[name] = try Pool(settings: settings, eventLoop: eventLoop, threadPool: threadPool, logger: logger) { [unowned self] in
                self.nextServerID += 1
                return self.nextServerID
            }
        }
    }

    func start() {
        for pool in self.pools.values {
            pool.onServerGone = { [unowned self] in self.checkDrained() }
            pool.start()
        }
    }

    func makeClientSession() -> ClientSession {
        self.nextClientID += 1
        return ClientSession(id: self.nextClientID, runtime: self)
    }

    func clientOpened(_ client: ClientSession) {
        self.clients[client.id] = client
    }

    func clientClosed(_ client: ClientSession) {
        self.clients.removeValue(forKey: client.id)
        self.checkDrained()
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
        guard let server = client.server, server.outstanding > 0 else {
            self.logger.debug("cancel request for an idle client ignored", metadata: [LogKey.client: "\(client.id)"])
            return
        }
        server.cancel(threadPool: self.threadPool, logger: self.logger)
    }

    // MARK: Shutdown

    /// Graceful: refuse new clients and waiters, let sessions end, close servers as they come back.
    func beginShutdown() {
        guard !self.isShuttingDown else { return }
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
}
