// The control methods: reads a request, acts on the runtime, builds the JSON-RPC response.

import ControlRPC
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

final class ControlService: @unchecked Sendable {  // Confined to the agent's event loop, like the runtime.
    static let unknownPoolCode = -32001

    private let runtime: AgentRuntime
    private unowned let agent: Agent

    init(runtime: AgentRuntime, agent: Agent) {
        self.runtime = runtime
        self.agent = agent
    }

    /// Answers one line; nil when it held only notifications.
    func handle<Bytes: Collection>(line: Bytes) -> String? where Bytes.Element == UInt8 {
        switch RPCLine.decode(line) {
        case .single(let request):
            return self.answer(request)?.json.serialized
        case .batch(let requests):
            let responses = requests.compactMap { self.answer($0)?.json }
            return responses.isEmpty ? nil : JSONValue.array(responses).serialized
        }
    }

    private func answer(_ decoded: Result<RPCRequest, RPCResponse>) -> RPCResponse? {
        switch decoded {
        case .failure(let response):
            return response
        case .success(let request):
            let outcome: Result<JSONValue, RPCError>
            do {
                outcome = .success(try self.call(request))
            } catch {
                outcome = .failure(error)
            }
            guard let id = request.id else { return nil }
            switch outcome {
            case .success(let result): return RPCResponse(id: id, result: result)
            case .failure(let error): return RPCResponse(id: id, error: error)
            }
        }
    }

    private func call(_ request: RPCRequest) throws(RPCError) -> JSONValue {
        switch request.method {
        case "version":
            try self.expectNoParams(request)
            return ["version": .string(PoolAgentVersion.current), "pid": JSONValue(Int(getpid()))]
        case "stats":
            let poolName = try self.optionalString(request, "pool")
            return try self.stats(pool: poolName)
        default:
            throw .methodNotFound(request.method)
        }
    }

    // MARK: Methods

    private func stats(pool poolName: String?) throws(RPCError) -> JSONValue {
        let pools: [Pool]
        if let poolName {
            guard let pool = self.runtime.pools[poolName] else {
                throw RPCError(code: Self.unknownPoolCode, message: "Unknown pool", data: ["pool": .string(poolName)])
            }
            pools = [pool]
        } else {
            pools = self.runtime.pools.values.sorted { $0.name < $1.name }
        }
        var clientsByPool: [String: (active: Int, waiting: Int)] = [:]
        for client in self.runtime.clients.values {
            guard let pool = client.pool else { continue }
            var counts = clientsByPool[pool.name] ?? (0, 0)
            if client.state == .waiting { counts.waiting += 1 } else { counts.active += 1 }
            clientsByPool[pool.name] = counts
        }
        let uptime = ContinuousClock.now - self.runtime.startedAt
        return [
            "agent": [
                "version": .string(PoolAgentVersion.current),
                "uptime_s": JSONValue(uptime.seconds),
                "clients": JSONValue(self.runtime.clients.count),
                "shutting_down": .bool(self.runtime.isShuttingDown),
            ],
            "pools": .array(pools.map { pool in
                let clients = clientsByPool[pool.name] ?? (0, 0)
                return [
                    "name": .string(pool.name),
                    "mode": .string(pool.settings.mode.rawValue),
                    "size": JSONValue(pool.settings.size),
                    "min_idle": JSONValue(pool.settings.minIdle),
                    "max_overflow": JSONValue(pool.settings.maxOverflow),
                    "servers": [
                        "open": JSONValue(pool.openCount),
                        "idle": JSONValue(pool.idleCount),
                        "active": JSONValue(pool.leasedCount),
                        "opening": JSONValue(pool.openingCount),
                    ],
                    "clients": ["active": JSONValue(clients.active), "waiting": JSONValue(clients.waiting)],
                    "counters": [
                        "checkouts": JSONValue(pool.stats.checkouts),
                        "waits": JSONValue(pool.stats.waits),
                        "wait_timeouts": JSONValue(pool.stats.waitTimeouts),
                        "server_connects": JSONValue(pool.stats.connects),
                        "server_connect_failures": JSONValue(pool.stats.connectFailures),
                    ],
                    "last_error": pool.lastError.map { .string($0) } ?? .null,
                ]
            }),
        ]
    }

    // MARK: Params

    private func expectNoParams(_ request: RPCRequest) throws(RPCError) {
        switch request.params {
        case nil: return
        case .object(let members)? where members.isEmpty: return
        case .array(let items)? where items.isEmpty: return
        default: throw .invalidParams("\(request.method) takes no params")
        }
    }

    private func optionalString(_ request: RPCRequest, _ name: String) throws(RPCError) -> String? {
        guard let params = request.params else { return nil }
        guard case .object(let members) = params else { throw .invalidParams("params must be an object") }
        for (key, _) in members where key != name {
            throw .invalidParams("unknown param \"\(key)\"")
        }
        guard let value = params[name] else { return nil }
        guard let text = value.stringValue else { throw .invalidParams("\(name) must be a string") }
        return text
    }
}
