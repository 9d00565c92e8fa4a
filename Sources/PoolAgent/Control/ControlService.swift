// The control methods: reads a request, acts on the runtime, builds the JSON-RPC response.

import ControlRPC
import NIOCore
import PGWire
import PoolCore

#if canImport(Glibc)
import Glibc
#endif

/// One connection's view of the service: where events go and whether it is still there.
protocol ControlPeer: AnyObject {
    func sendEvent(_ line: String)
}

final class ControlService: @unchecked Sendable {  // Confined to the agent's event loop, like the runtime.
    enum Reply {
        case value(JSONValue)
        case later(EventLoopFuture<JSONValue>)
    }

    private let runtime: AgentRuntime
    private unowned let agent: Agent
    private var subscribers: [ObjectIdentifier: (peer: any ControlPeer, events: Set<String>?)] = [:]

    static let eventTypes: Set<String> = [
        "resize", "autoscale", "drain", "resume", "recycle", "reconnect", "upstream", "reload", "shutdown", "kill", "pin", "listener",
    ]

    /// The loop every method runs on.
    var eventLoop: IOLoop { self.runtime.eventLoop }

    init(runtime: AgentRuntime, agent: Agent) {
        self.runtime = runtime
        self.agent = agent
        runtime.onEvent = { [unowned self] event in self.publish(event) }
    }

    // MARK: Lines

    /// Answers one line; the future gives nil when the line held only notifications.
    func handle<Bytes: Collection>(line: Bytes, from peer: any ControlPeer) -> EventLoopFuture<String?> where Bytes.Element == UInt8 {
        let loop = self.runtime.eventLoop
        switch RPCLine.decode(line) {
        case .single(let request):
            return self.answer(request, from: peer).map { $0?.json.serialized }
        case .batch(let requests):
            let answers = requests.map { self.answer($0, from: peer) }
            return EventLoopFuture.whenAllSucceed(answers, on: loop).map { responses in
                let present = responses.compactMap { $0?.json }
                return present.isEmpty ? nil : JSONValue.array(present).serialized
            }
        }
    }

    func peerGone(_ peer: any ControlPeer) {
        self.subscribers.removeValue(forKey: ObjectIdentifier(peer))
    }

    private func answer(_ decoded: Result<RPCRequest, RPCResponse>, from peer: any ControlPeer) -> EventLoopFuture<RPCResponse?> {
        let loop = self.runtime.eventLoop
        switch decoded {
        case .failure(let response):
            return loop.makeSucceededFuture(response)
        case .success(let request):
            let reply: Reply
            do {
                reply = try self.call(request, from: peer)
            } catch {
                return loop.makeSucceededFuture(request.id.map { RPCResponse(id: $0, error: error) })
            }
            let id = request.id
            switch reply {
            case .value(let result):
                return loop.makeSucceededFuture(id.map { RPCResponse(id: $0, result: result) })
            case .later(let future):
                return future.map { result in id.map { RPCResponse(id: $0, result: result) } }
                    .flatMapErrorThrowing { error in
                        let rpcError = (error as? RPCError) ?? RPCError(code: RPCError.internalErrorCode, message: "Internal error", data: ["reason": .string("\(error)")])
                        return id.map { RPCResponse(id: $0, error: rpcError) }
                    }
            }
        }
    }

    /// Runs one method for the agent itself (the admin console), as a control client's request would.
    func perform(_ method: String, params: JSONValue?) -> EventLoopFuture<JSONValue> {
        do {
            switch try self.call(RPCRequest(id: .number(0), method: method, params: params), from: InternalPeer()) {
            case .value(let result): return self.eventLoop.makeSucceededFuture(result)
            case .later(let future): return future
            }
        } catch {
            return self.eventLoop.makeFailedFuture(error)
        }
    }

    /// A caller that never subscribes.
    private final class InternalPeer: ControlPeer {
        func sendEvent(_ line: String) {}
    }

    // MARK: Dispatch

    private func call(_ request: RPCRequest, from peer: any ControlPeer) throws(RPCError) -> Reply {
        switch request.method {
        case "version":
            _ = try RPCParams(request, allowed: [])
            return .value(["version": .string(PoolAgentVersion.current), "pid": JSONValue(Int(getpid()))])
        case "stats":
            let params = try RPCParams(request, allowed: ["pool"])
            return .value(.object([("pools", .array(try self.pools(params).map(self.poolStats)))] + [("agent", self.agentStats)]))
        case "resize":
            return .value(try self.resize(try RPCParams(request, allowed: ["pool", "size", "min_idle", "max_overflow", "autoscale"])))
        case "drain":
            return try self.drain(try RPCParams(request, allowed: ["pool", "deadline_s"]))
        case "resume":
            let pools = try self.pools(try RPCParams(request, allowed: ["pool"]))
            for pool in pools {
                let wasDraining = pool.isDraining
                pool.resume()
                if wasDraining { self.publish("resume", ["pool": .string(pool.name)]) }
            }
            return .value(["resumed": .array(pools.map { .string($0.name) })])
        case "set-recycle":
            return .value(try self.setRecycle(try RPCParams(request, allowed: ["pool", "max_lifetime_s", "mode", "idle_timeout_s"])))
        case "reconnect":
            let pools = try self.pools(try RPCParams(request, allowed: ["pool"]))
            var results: [JSONValue] = []
            for pool in pools {
                let closed = pool.reconnect()
                self.publish("reconnect", ["pool": .string(pool.name), "closed_now": JSONValue(closed)])
                results.append(["pool": .string(pool.name), "closed_now": JSONValue(closed), "replaced_on_release": JSONValue(pool.leasedCount)])
            }
            return .value(["pools": .array(results)])
        case "health":
            _ = try RPCParams(request, allowed: [])
            return .value(self.health())
        case "list-clients":
            return .value(self.listClients(try self.pools(try RPCParams(request, allowed: ["pool"]))))
        case "list-servers":
            return .value(self.listServers(try self.pools(try RPCParams(request, allowed: ["pool"]))))
        case "kill-client":
            let params = try RPCParams(request, allowed: ["id"])
            guard let id = try params.integer("id", in: 1...Int.max) else { throw .invalidParams("id is required") }
            guard let client = self.runtime.clients[id] else {
                throw RPCError(code: ControlError.unknownClient, message: "Unknown client", data: ["id": JSONValue(id)])
            }
            client.fatal(.fatal("57P01", "terminating connection due to administrator command"))
            self.publish("kill", ["client": JSONValue(id)])
            return .value(["killed": JSONValue(id)])
        case "reload":
            _ = try RPCParams(request, allowed: [])
            return .later(self.runtime.reload().map { Self.json($0) }.flatMapErrorThrowing { error in
                switch error as? ReloadError {
                case .shuttingDown?:
                    throw RPCError(code: ControlError.shuttingDown, message: "Shutting down", data: ["reason": "the agent is shutting down"])
                case .invalidConfiguration(let file, let errors)?:
                    throw RPCError(code: ControlError.invalidConfiguration, message: "Invalid configuration",
                                   data: ["file": .string(file), "errors": .array(errors.map { .string($0) })])
                case nil:
                    throw error
                }
            })
        case "config":
            _ = try RPCParams(request, allowed: [])
            return .value(self.runtime.configuration.redactedJSON)
        case "subscribe":
            let params = try RPCParams(request, allowed: ["events"])
            var events: Set<String>? = nil
            if let value = params.value("events") {
                guard let items = value.arrayValue, let names = Optional(items.compactMap(\.stringValue)), names.count == items.count else {
                    throw .invalidParams("events must be an array of event names")
                }
                for name in names where !Self.eventTypes.contains(name) {
                    throw .invalidParams("unknown event \"\(name)\"; expected \(Self.eventTypes.sorted().joined(separator: ", "))")
                }
                events = Set(names)
            }
            self.subscribers[ObjectIdentifier(peer)] = (peer, events)
            return .value(["subscribed": .array((events ?? Self.eventTypes).sorted().map { .string($0) })])
        case "shutdown":
            let params = try RPCParams(request, allowed: ["mode", "deadline_s"])
            let mode = try params.string("mode") ?? "graceful"
            guard let shutdownMode = Agent.ShutdownMode(rawValue: mode) else {
                throw .invalidParams("mode must be \"graceful\" or \"immediate\"")
            }
            let deadline = try params.seconds("deadline_s")
            self.publish("shutdown", ["mode": .string(mode)])
            // Answer first: the connection closes with the agent.
            self.runtime.eventLoop.scheduleTask(in: .milliseconds(50)) { [agent] in agent.shutdown(shutdownMode, deadline: deadline) }
            return .value(["accepted": true, "mode": .string(mode)])
        case "rpc.discover":
            _ = try RPCParams(request, allowed: [])
            return .value(Self.openRPCDocument)
        default:
            throw .methodNotFound(request.method)
        }
    }

    static let openRPCDocument: JSONValue = (try? JSONValue.parse(PackageResources.openrpc_json)) ?? .null

    // MARK: Events

    /// What the runtime reported, as the `event` notification subscribers get.
    private func publish(_ event: AgentEvent) {
        switch event {
        case .upstream(let pool, let up, let error):
            self.publish("upstream", ["pool": .string(pool), "state": .string(up ? "up" : "down"), "error": error.map { .string($0) } ?? .null])
        case .autoscale(let pool, let decision, let applied, let pinned):
            self.publish("autoscale", [
                "pool": .string(pool), "size": JSONValue(decision.size), "previous": JSONValue(decision.previous),
                "applied": .bool(applied), "pinned": .bool(pinned), "reason": .string(decision.reason),
                "peak_concurrency": JSONValue(decision.window.peakConcurrency), "peak_queue": JSONValue(decision.window.peakQueue),
                "wait_p95_ms": JSONValue(decision.window.waitP95Milliseconds),
            ])
        case .reload(let outcome):
            self.publish("reload", Self.json(outcome).objectValue ?? [])
        case .pin(let pool, let client, let pins, let added, let removed):
            self.publish("pin", [
                "pool": .string(pool), "client": JSONValue(client), "state": .string(pins.isEmpty ? "unpinned" : "pinned"),
                "reasons": .array(pins.names.map { .string($0) }), "added": .array(added.names.map { .string($0) }),
                "removed": .array(removed.names.map { .string($0) }),
            ])
        case .listener(let pool, let up, let error):
            self.publish("listener", ["pool": .string(pool), "state": .string(up ? "up" : "down"), "error": error.map { .string($0) } ?? .null])
        }
    }

    static func json(_ outcome: ReloadOutcome) -> JSONValue {
        [
            "file": .string(outcome.file), "changed": .array(outcome.changed.map { .string($0) }),
            "added": .array(outcome.added.map { .string($0) }), "removed": .array(outcome.removed.map { .string($0) }),
            "requires_restart": .array(outcome.requiresRestart.map { .string($0) }),
        ]
    }

    private func publish(_ type: String, _ fields: KeyValuePairs<String, JSONValue>) {
        self.publish(type, fields.map { ($0.key, $0.value) })
    }

    private func publish(_ type: String, _ fields: [(String, JSONValue)]) {
        guard !self.subscribers.isEmpty else { return }
        let params: JSONValue = .object([("type", .string(type))] + fields)
        let line = RPCRequest(id: nil, method: "event", params: params).json.serialized
        for (_, subscriber) in self.subscribers where subscriber.events?.contains(type) ?? true {
            subscriber.peer.sendEvent(line)
        }
    }

    // MARK: Methods

    private func pools(_ params: RPCParams) throws(RPCError) -> [Pool] {
        if let name = try params.string("pool") {
            guard let pool = self.runtime.pools[name] else { throw ControlError.unknownPool(name) }
            return [pool]
        }
        return self.runtime.pools.values.sorted { $0.name < $1.name }
    }

    private var agentStats: JSONValue {
        [
            "version": .string(PoolAgentVersion.current),
            "uptime_s": JSONValue((Moment.now - self.runtime.startedAt).seconds),
            "clients": JSONValue(self.runtime.clients.count),
            "shutting_down": .bool(self.runtime.isShuttingDown),
            "limits": self.agentLimits,
        ]
    }

    /// Each agent-wide limit with how much of it is used, and how many clients each limit refused.
    private var agentLimits: JSONValue {
        let limits = self.runtime.limits
        let configuration = self.runtime.configuration
        let busiest = limits.busiestUser
        return [
            "max_client_conn": Self.limit(configuration.maxClientConnections, used: limits.open),
            "max_login_clients": Self.limit(configuration.maxLoginClients, used: limits.loggingIn),
            "max_user_connections": [
                "limit": configuration.maxUserConnections > 0 ? JSONValue(configuration.maxUserConnections) : .null,
                "used": JSONValue(busiest?.clients ?? 0),
                "user": busiest.map { .string($0.name) } ?? .null,
            ],
            "descriptors": Self.limit(Int(clamping: DescriptorLimit.current.soft), used: DescriptorLimit.open),
            "refused": .object(ClientLimits.Refusal.keys.map { ($0, JSONValue(limits.refused[$0, default: 0])) }),
        ]
    }

    /// A limit (null: none) and its use.
    private static func limit(_ limit: Int?, used: Int) -> JSONValue {
        ["limit": limit.map { JSONValue($0) } ?? .null, "used": JSONValue(used)]
    }

    private func poolStats(_ pool: Pool) -> JSONValue {
        var active = 0
        var waiting = 0
        for client in self.runtime.clients.values where client.pool === pool {
            if client.state == .waiting { waiting += 1 } else { active += 1 }
        }
        let configuration = pool.configuration
        return [
            "name": .string(pool.name),
            "mode": .string(pool.settings.mode.rawValue),
            "size": JSONValue(configuration.size),
            "min_idle": JSONValue(configuration.minIdle),
            "max_overflow": JSONValue(configuration.maxOverflow),
            "draining": .bool(pool.isDraining),
            "servers": [
                "open": JSONValue(pool.openCount),
                "idle": JSONValue(pool.idleCount),
                "active": JSONValue(pool.leasedCount),
                "opening": JSONValue(pool.openingCount),
                "overflow": JSONValue(max(0, pool.openCount - configuration.size)),
            ],
            "clients": ["active": JSONValue(active), "waiting": JSONValue(waiting)],
            "limits": [
                "max_clients": Self.limit(pool.settings.maxClients > 0 ? pool.settings.maxClients : nil,
                                          used: self.runtime.limits.clients(of: pool.name)),
                "statement_budget": Self.limit(pool.statements.budget, used: pool.statements.bytes),
            ],
            "counters": [
                "checkouts": JSONValue(pool.stats.checkouts),
                "waits": JSONValue(pool.stats.waits),
                "wait_timeouts": JSONValue(pool.stats.waitTimeouts),
                "server_connects": JSONValue(pool.stats.connects),
                "server_connect_failures": JSONValue(pool.stats.connectFailures),
                "recycles": JSONValue(pool.stats.recycles),
                "pre_ping_failures": JSONValue(pool.stats.prePingFailures),
                "transactions": JSONValue(pool.stats.transactions),
                "queries": JSONValue(pool.stats.queries),
                "bytes_in": JSONValue(pool.stats.bytesIn),
                "bytes_out": JSONValue(pool.stats.bytesOut),
                "overflow_peak": JSONValue(max(0, pool.stats.overflowPeak)),
            ],
            "latency_ms": [
                "wait": Self.percentiles(pool.stats.waitTime),
                "transaction": Self.percentiles(pool.stats.transactionTime),
                "query": Self.percentiles(pool.stats.queryTime),
            ],
            "recycle": [
                "mode": .string(pool.settings.adaptiveRecycle ? "adaptive" : "fixed"),
                "max_lifetime_s": configuration.maxLifetime.map { JSONValue($0.seconds) } ?? .null,
                "idle_timeout_s": configuration.idleTimeout.map { JSONValue($0.seconds) } ?? .null,
            ],
            "sizing": pool.autoSizing.map { sizing in
                [
                    "cores": JSONValue(sizing.machine.cores), "memory_gib": JSONValue(sizing.machine.memoryGiB),
                    "formula_size": JSONValue(sizing.machine.size),
                    "upstream_available": sizing.upstreamAvailable.map { JSONValue($0) } ?? .null,
                    "share": sizing.share.map { JSONValue($0) } ?? .null,
                ]
            } ?? .null,
            "autoscale": pool.autoscaler.map { autoscaler in
                [
                    "enabled": .bool(!pool.autoscalePinned), "min": JSONValue(autoscaler.minimum), "max": JSONValue(autoscaler.maximum),
                    "last_decision": pool.lastDecision.map { .string($0.reason) } ?? .null,
                ]
            } ?? .null,
            "session_state": Self.sessionState(pool),
            "last_error": pool.lastError.map { .string($0) } ?? .null,
        ]
    }

    /// Transaction mode's pins and LISTEN relay; null in session mode.
    private static func sessionState(_ pool: Pool) -> JSONValue {
        guard pool.settings.mode == .transaction else { return .null }
        func byReason(_ counts: [String: Int]) -> JSONValue {
            .object(SessionEffects.Pins.named.map { ($0.1, JSONValue(counts[$0.1, default: 0])) })
        }
        let listener = pool.existingListener
        return [
            "pin": .string(pool.settings.pin.rawValue),
            "pinned": JSONValue(pool.pinnedClients),
            "max_pinned": JSONValue(pool.pinnedLimit),
            "pins": byReason(pool.stats.pins),
            "unpins": byReason(pool.stats.unpins),
            "pin_refusals": JSONValue(pool.stats.pinRefusals),
            "listener": [
                "enabled": .bool(pool.settings.listener),
                "connected": .bool(listener?.isOpen ?? false),
                "backend_pid": listener?.backendPID.map { JSONValue(Int($0)) } ?? .null,
                "channels": JSONValue(listener?.channelCount ?? 0),
                "notifications": JSONValue(pool.stats.notifications),
                "queue_overflows": JSONValue(pool.stats.notificationOverflows),
                "reconnects": JSONValue(pool.stats.listenerReconnects),
                "last_error": listener?.failure.map { .string($0) } ?? .null,
            ],
        ]
    }

    static func percentiles(_ histogram: LatencyHistogram) -> JSONValue {
        func ms(_ microseconds: UInt64) -> JSONValue { JSONValue(Double(microseconds) / 1000) }
        return [
            "count": JSONValue(Int(histogram.count)),
            "p50": ms(histogram.percentile(0.5)), "p95": ms(histogram.percentile(0.95)),
            "p99": ms(histogram.percentile(0.99)), "max": ms(histogram.maxMicroseconds),
        ]
    }

    private func resize(_ params: RPCParams) throws(RPCError) -> JSONValue {
        guard let name = try params.string("pool") else { throw .invalidParams("pool is required") }
        guard let pool = self.runtime.pools[name] else { throw ControlError.unknownPool(name) }
        let current = pool.configuration
        let size = try params.integer("size", in: 1...10_000) ?? current.size
        let minIdle = try params.integer("min_idle", in: 0...10_000) ?? min(current.minIdle, size)
        let maxOverflow = try params.integer("max_overflow", in: 0...10_000) ?? current.maxOverflow
        let autoscale = try params.bool("autoscale")
        guard minIdle <= size else { throw .invalidParams("min_idle \(minIdle) is larger than size \(size)") }
        guard !pool.isDraining else {
            throw RPCError(code: ControlError.conflict, message: "Conflicting operation", data: ["pool": .string(name), "reason": "the pool is draining; resume it first"])
        }
        // A size given by hand pins the pool until autoscaling is turned back on.
        if let autoscale {
            pool.setAutoscaling(autoscale)
        } else if params.value("size") != nil {
            pool.setAutoscaling(false)
        }
        let (closed, opening) = pool.resize(size: size, minIdle: minIdle, maxOverflow: maxOverflow)
        let result: JSONValue = [
            "pool": .string(name),
            "size": JSONValue(size), "min_idle": JSONValue(minIdle), "max_overflow": JSONValue(maxOverflow),
            "previous_size": JSONValue(current.size),
            "closed_now": JSONValue(closed), "opening": JSONValue(opening),
            "close_on_release": JSONValue(max(0, pool.openCount - size - closed)),
            "autoscale": .bool(pool.autoscaler != nil && !pool.autoscalePinned),
        ]
        self.publish("resize", result.objectValue ?? [])
        return result
    }

    private func drain(_ params: RPCParams) throws(RPCError) -> Reply {
        let pools = try self.pools(params)
        let deadline = try params.seconds("deadline_s")
        let loop = self.runtime.eventLoop
        let started = Moment.now
        var results: [(name: String, servers: Int, busy: Int)] = []
        var futures: [EventLoopFuture<Void>] = []
        for pool in pools {
            results.append((pool.name, pool.openCount + pool.openingCount, pool.leasedCount))
            futures.append(pool.drain())
            self.publish("drain", ["pool": .string(pool.name), "phase": "started"])
        }
        let drained = results
        let promise = loop.makePromise(of: JSONValue.self)
        let timer = deadline.map { deadline in
            loop.scheduleTask(in: deadline.timeAmount) {
                promise.fail(RPCError(
                    code: ControlError.deadlineExceeded, message: "Deadline exceeded",
                    data: ["deadline_s": JSONValue(deadline.seconds), "reason": "servers still busy; the pool stays draining", "still_open": JSONValue(pools.reduce(0) { $0 + $1.openCount })]
                ))
            }
        }
        EventLoopFuture.whenAllComplete(futures, on: loop).whenSuccess { outcomes in
            timer?.cancel()
            if outcomes.contains(where: { if case .failure = $0 { true } else { false } }) {
                promise.fail(RPCError(code: ControlError.conflict, message: "Conflicting operation", data: ["reason": "resumed before the drain finished"]))
                return
            }
            let elapsed = Moment.now - started
            for pool in pools { self.publish("drain", ["pool": .string(pool.name), "phase": "finished", "elapsed_ms": JSONValue(elapsed.seconds * 1000)]) }
            promise.succeed([
                "pools": .array(drained.map { ["pool": .string($0.name), "servers_closed": JSONValue($0.servers), "waited_for_busy": JSONValue($0.busy)] }),
                "elapsed_ms": JSONValue(elapsed.seconds * 1000),
            ])
        }
        return .later(promise.futureResult)
    }

    private func setRecycle(_ params: RPCParams) throws(RPCError) -> JSONValue {
        let pools = try self.pools(params)
        let mode = try params.string("mode")
        if let mode, mode != "adaptive" { throw .invalidParams("mode must be \"adaptive\"; give max_lifetime_s for a fixed lifetime") }
        let lifetime = try params.seconds("max_lifetime_s")
        let idle = try params.seconds("idle_timeout_s")
        guard lifetime != nil || idle != nil || mode != nil else { throw .invalidParams("give max_lifetime_s, mode \"adaptive\" or idle_timeout_s") }
        guard mode == nil || lifetime == nil else { throw .invalidParams("give either max_lifetime_s or mode \"adaptive\"") }
        for pool in pools {
            if mode != nil { pool.setAdaptiveRecycle() } else if lifetime != nil { pool.setFixedRecycle() }
            pool.setRecycle(maxLifetime: lifetime.map { .some($0) }, idleTimeout: idle.map { .some($0) })
            self.publish("recycle", [
                "pool": .string(pool.name),
                "max_lifetime_s": pool.configuration.maxLifetime.map { JSONValue($0.seconds) } ?? .null,
                "idle_timeout_s": pool.configuration.idleTimeout.map { JSONValue($0.seconds) } ?? .null,
            ])
        }
        return ["pools": .array(pools.map { pool in
            [
                "pool": .string(pool.name),
                "max_lifetime_s": pool.configuration.maxLifetime.map { JSONValue($0.seconds) } ?? .null,
                "idle_timeout_s": pool.configuration.idleTimeout.map { JSONValue($0.seconds) } ?? .null,
            ]
        })]
    }

    private func health() -> JSONValue {
        let now = Moment.now
        var statuses: [String] = []
        let pools: [JSONValue] = self.runtime.pools.values.sorted { $0.name < $1.name }.map { pool in
            let status = pool.health
            statuses.append(status)
            return [
                "pool": .string(pool.name),
                "status": .string(status),
                "last_contact_s_ago": pool.lastContact.map { JSONValue($0.duration(to: now).seconds) } ?? .null,
                "last_error": pool.lastError.map { .string($0) } ?? .null,
                "open_servers": JSONValue(pool.openCount),
            ]
        }
        let overall = statuses.allSatisfy { $0 == "ok" } ? "ok" : statuses.allSatisfy { $0 == "down" } ? "down" : "degraded"
        return ["status": .string(self.runtime.isShuttingDown ? "down" : overall), "pools": .array(pools)]
    }

    private func listClients(_ pools: [Pool]) -> JSONValue {
        let now = Moment.now
        let selected = Set(pools.map(\.name))
        let clients = self.runtime.clients.values
            .filter { $0.pool.map { selected.contains($0.name) } ?? (pools.count == self.runtime.pools.count) }
            .sorted { $0.id < $1.id }
        return [
            "clients": .array(clients.map { client in
                [
                    "id": JSONValue(client.id),
                    "pool": client.pool.map { .string($0.name) } ?? .null,
                    "user": client.user.map { .string($0) } ?? .null,
                    "state": .string(client.server != nil ? "active" : client.state.rawValue),
                    "peer": .string(client.peer),
                    "age_s": JSONValue(client.connectedAt.duration(to: now).seconds),
                    "server": client.server.map { JSONValue($0.id) } ?? .null,
                    "backend_pid": client.server.map { JSONValue(Int($0.backendPID)) } ?? .null,
                    "pinned": .array(client.pins.names.map { .string($0) }),
                    "listening": .array(client.listenChannels.sorted().map { .string($0) }),
                ]
            }),
            "recently_closed": .array(self.runtime.recentlyClosedClients.map { ["id": JSONValue($0.id), "reason": .string($0.reason)] }),
        ]
    }

    private func listServers(_ pools: [Pool]) -> JSONValue {
        let now = Moment.now
        var servers: [JSONValue] = []
        for pool in pools {
            for server in pool.servers.values.sorted(by: { $0.id < $1.id }) {
                servers.append([
                    "id": JSONValue(server.id),
                    "pool": .string(pool.name),
                    "state": .string(server.state.rawValue),
                    "backend_pid": JSONValue(Int(server.backendPID)),
                    "age_s": JSONValue(server.createdAt.duration(to: now).seconds),
                    "idle_s": JSONValue(server.client == nil ? server.lastUsedAt.duration(to: now).seconds : 0),
                    "client": server.client.map { JSONValue($0.id) } ?? .null,
                    "transaction": .string(server.transactionStatus.description),
                    "prepared_statements": JSONValue(server.preparedCount),
                ])
            }
        }
        return [
            "servers": .array(servers),
            "recently_closed": .array(self.runtime.recentlyClosedServers.map {
                ["id": JSONValue($0.id), "pool": .string($0.pool), "backend_pid": JSONValue(Int($0.backendPID)), "reason": .string($0.reason)]
            }),
        ]
    }
}
