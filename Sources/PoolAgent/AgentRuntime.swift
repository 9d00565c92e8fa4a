// The agent's shared state on its event loop: pools, client sessions, cancel keys and shutdown.

import ControlRPC
import Logging
import NIOCore
import NIOPosix
import PGWire
import PoolCore

/// Everything client sessions and pools share. Lives on the data event loop; no locks.
final class AgentRuntime: @unchecked Sendable {  // Confined to the agent's event loop.
    private(set) var configuration: AgentConfiguration
    let eventLoop: IOLoop
    let threadPool: NIOThreadPool
    let logger: Logger
    private(set) var pools: [String: Pool] = [:]
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
    var onEvent: ((String, [(String, JSONValue)]) -> Void)?
    /// The last closed connections with why they closed, for list-clients and list-servers.
    private(set) var recentlyClosedClients: [(id: Int, reason: String)] = []
    private(set) var recentlyClosedServers: [(id: Int, pool: String, backendPID: Int32, reason: String)] = []
    static let recentlyClosedLimit = 50
    private var sweepTask: RepeatedTask?
    /// Client authentication and TLS: methods, secrets, certificates.
    let authenticator: ClientAuthenticator

    init(configuration: AgentConfiguration, eventLoop: IOLoop, threadPool: NIOThreadPool, logger: Logger) throws {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.threadPool = threadPool
        self.logger = logger
        do {
            self.authenticator = try ClientAuthenticator(configuration: configuration, eventLoop: eventLoop, threadPool: threadPool)
        } catch {
            throw AgentStartError("\(configuration.path): \(error)")
        }
        for (name, settings) in configuration.pools {
            self.pools[name] = try self.makePool(settings)
        }
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
            self.emit("upstream", [("pool", .string(pool.name)), ("state", .string(up ? "up" : "down")), ("error", message.map { .string($0) } ?? .null)])
        }
        pool.onAutoscale = { [unowned self] decision, applied in
            let fields: [(String, JSONValue)] = [
                ("pool", .string(pool.name)), ("size", JSONValue(decision.size)), ("previous", JSONValue(decision.previous)),
                ("applied", .bool(applied)), ("pinned", .bool(pool.autoscalePinned)), ("reason", .string(decision.reason)),
                ("peak_concurrency", JSONValue(decision.window.peakConcurrency)), ("peak_queue", JSONValue(decision.window.peakQueue)),
                ("wait_p95_ms", JSONValue(decision.window.waitP95Milliseconds)),
            ]
            let level: Logger.Level = applied ? .info : .debug
            self.logger.log(level: level, "autoscale decision", metadata: Logger.Metadata(uniqueKeysWithValues: fields.map { ($0.0, .string($0.1.serialized)) }))
            self.emit("autoscale", fields)
        }
        pool.start(poolCount: self.pools.count)
    }

    func emit(_ type: String, _ fields: [(String, JSONValue)]) {
        self.onEvent?(type, fields)
    }

    func emit(_ type: String, _ fields: KeyValuePairs<String, JSONValue>) {
        self.onEvent?(type, fields.map { ($0.key, $0.value) })
    }

    func start() {
        for pool in self.pools.values { self.startPool(pool) }
        self.sweepTask = self.eventLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [unowned self] _ in
            self.janitor()
        }
    }

    /// A client connected on a listener: its socket becomes a session.
    func accepted(_ fd: Int32, unix: Bool) {
        self.nextClientID += 1
        let client = ClientSession(id: self.nextClientID, runtime: self)
        do {
            let transport = try Transport.start(fd: fd, loop: self.eventLoop, noDelay: !unix, delegate: client)
            client.start(transport: transport, unix: unix)
        } catch {
            self.logger.warning("cannot serve an accepted connection", metadata: [LogKey.error: "\(error)"])
        }
    }

    func clientOpened(_ client: ClientSession) {
        self.clients[client.id] = client
    }

    func clientClosed(_ client: ClientSession) {
        self.clients.removeValue(forKey: client.id)
        self.recentlyClosedClients.append((client.id, client.closeReason ?? "client disconnected"))
        if self.recentlyClosedClients.count > Self.recentlyClosedLimit { self.recentlyClosedClients.removeFirst() }
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

    /// Re-reads the configuration file. A bad file changes nothing and the errors come back; otherwise pool
    /// limits and policies apply at once, new pools start, removed pools drain and close, and a changed
    /// upstream replaces its servers as they are released. Listener and socket changes need a restart.
    func reload() throws(RPCError) -> JSONValue {
        guard !self.isShuttingDown else {
            throw RPCError(code: ControlError.shuttingDown, message: "Shutting down", data: ["reason": "the agent is shutting down"])
        }
        let next: AgentConfiguration
        do {
            next = try ConfigLoader.load(path: self.configuration.path)
        } catch {
            throw RPCError(code: ControlError.invalidConfiguration, message: "Invalid configuration",
                           data: ["file": .string(error.file), "errors": [.string(error.description)]])
        }
        for (name, settings) in next.pools where self.pools[name] != nil {
            do {
                _ = try UpstreamConninfo(parsing: settings.upstream)
            } catch {
                throw RPCError(code: ControlError.invalidConfiguration, message: "Invalid configuration",
                               data: ["file": .string(next.path), "errors": [.string("pools.\(name).upstream: \(error.description)")]])
            }
        }
        do {
            // ConfigLoader read the auth file and certificates again, even where their paths did not change.
            try self.authenticator.reload(next)
        } catch {
            throw RPCError(code: ControlError.invalidConfiguration, message: "Invalid configuration",
                           data: ["file": .string(next.path), "errors": [.string(error.description)]])
        }
        var changed: [JSONValue] = []
        var added: [JSONValue] = []
        var removed: [JSONValue] = []
        var restart: [JSONValue] = []
        if next.listen != self.configuration.listen { restart.append("agent.listen") }
        if next.unixSocketDirectory != self.configuration.unixSocketDirectory || next.unixSocketPort != self.configuration.unixSocketPort {
            restart.append("agent.unix_socket_dir")
        }
        if next.controlSocket != self.configuration.controlSocket { restart.append("agent.control_socket") }
        if next.ioUring != self.configuration.ioUring { restart.append("agent.io_uring") }
        for (name, settings) in next.pools.sorted(by: { $0.key < $1.key }) {
            guard let pool = self.pools[name] else {
                do {
                    let pool = try self.makePool(settings)
                    self.pools[name] = pool
                    self.startPool(pool)
                    added.append(.string(name))
                } catch {
                    restart.append(.string("pools.\(name)"))
                }
                continue
            }
            guard pool.settings != settings else { continue }
            if pool.settings.mode != settings.mode {
                restart.append(.string("pools.\(name).mode"))
            }
            pool.apply(settings)
            changed.append(.string(name))
        }
        for (name, pool) in self.pools where next.pools[name] == nil {
            removed.append(.string(name))
            pool.shutdown()
            for client in self.clients.values where client.pool === pool {
                client.fatal(.fatal("57P01", "terminating connection because pool \"\(name)\" was removed from the configuration"))
            }
            pool.closeAll(reason: "pool removed by reload")
            self.pools.removeValue(forKey: name)
        }
        self.configuration = next
        let result: JSONValue = [
            "file": .string(next.path), "changed": .array(changed), "added": .array(added),
            "removed": .array(removed), "requires_restart": .array(restart),
        ]
        self.emit("reload", result.objectValue ?? [])
        return result
    }
}
