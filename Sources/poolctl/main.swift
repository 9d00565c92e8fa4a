// poolctl: the thin command-line client of the agent's JSON-RPC control socket.

import ArgumentParser
import ControlRPC

#if canImport(Glibc)
import Glibc
#endif

struct PoolCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "poolctl",
        abstract: "Steer running poolagent processes over their control sockets.",
        discussion: """
            Every subcommand asks each agent named by --socket (repeatable, globs allowed) at once, and prints \
            a table for people or, with --json, one JSON line per agent for scripts.

            Exit codes: 0 ok, 1 an agent answered with an error, 2 usage, 3 an agent could not be reached.

            Example:
              poolctl --socket /run/poolagent/poolagent.sock stats
              poolctl --socket '/run/poolagent/*.sock' health --json
            """,
        subcommands: [
            Stats.self, Resize.self, Drain.self, Resume.self, SetRecycle.self, Reconnect.self, Health.self,
            ListClients.self, ListServers.self, KillClient.self, Reload.self, Config.self, Subscribe.self,
            Shutdown.self, Version.self, Discover.self, Call.self, Watch.self,
        ]
    )

    @OptionGroup var connection: ConnectionOptions
}

struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Control socket path or glob; repeat for several agents. Default: $POOLAGENT_SOCKET or /run/poolagent/poolagent.sock.")
    var socket: [String] = []

    @Flag(name: .long, help: "Print one JSON line per agent instead of a table.")
    var json = false

    @Option(name: .long, help: "Seconds to wait for each agent's answer.")
    var timeout: Int = 30

    var sockets: [String] {
        if !self.socket.isEmpty { return ControlClient.expand(self.socket) }
        if let fromEnvironment = getenv("POOLAGENT_SOCKET") { return ControlClient.expand([String(cString: fromEnvironment)]) }
        return ["/run/poolagent/poolagent.sock"]
    }
}

/// Runs one method on every agent, prints the answers and turns them into poolctl's exit code.
/// `accept` decides whether a result counts as success (health: only "ok").
func run(
    _ options: ConnectionOptions,
    _ method: String,
    _ params: [(String, JSONValue)] = [],
    render: (JSONValue) -> String = Render.keyValues,
    accept: (JSONValue) -> Bool = { _ in true }
) throws {
    let sockets = options.sockets
    let answers = ControlClient.callAll(sockets, method: method, params: params.isEmpty ? nil : .object(params), timeout: options.timeout)
    var exitCode: Int32 = 0
    for answer in answers {
        let prefix = sockets.count > 1 ? "\(answer.socket):\n" : ""
        switch answer.outcome {
        case .success(let response):
            switch response.outcome {
            case .success(let result):
                if !accept(result) { exitCode = max(exitCode, 1) }
                if options.json {
                    print((["socket": .string(answer.socket), "result": result] as JSONValue).serialized)
                } else {
                    print(prefix + render(result))
                }
            case .failure(let error):
                exitCode = max(exitCode, 1)
                if options.json {
                    print((["socket": .string(answer.socket), "error": ["code": JSONValue(error.code), "message": .string(error.message), "data": error.data ?? .null]] as JSONValue).serialized)
                } else {
                    // The data's `errors` or `reason` says what was wrong; show it, not only the code.
                    var details = error.data?["errors"]?.arrayValue?.compactMap(\.stringValue) ?? []
                    if let reason = error.data?["reason"]?.stringValue { details.append(reason) }
                    printError("\(answer.socket): \(error)" + details.map { "\n  \($0)" }.joined())
                }
            }
        case .failure(let error):
            exitCode = 3
            if options.json {
                print((["socket": .string(answer.socket), "unreachable": .string(error.description)] as JSONValue).serialized)
            } else {
                printError("\(answer.socket): cannot reach the agent: \(error)")
            }
        }
    }
    if exitCode != 0 { throw ExitCode(exitCode) }
}

/// Sends what was printed now, also into a pipe or a file (where stdout is block-buffered): a script reading a
/// streaming subcommand (`subscribe`, `watch`) sees each line as it happens.
func flushOutput() {
    fflush(nil)
}

func printError(_ message: String) {
    let bytes = Array((message + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// `pool` as a param when given.
func poolParam(_ pool: String?) -> [(String, JSONValue)] {
    pool.map { [("pool", .string($0))] } ?? []
}

extension PoolCtl {
    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show pool counters and gauges.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock stats --pool app")
        @ParentCommand var root: PoolCtl
        @Option(help: "Only this pool.") var pool: String?
        func run() throws { try poolctl.run(self.root.connection, "stats", poolParam(self.pool), render: Render.stats) }
    }

    struct Resize: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a pool's size, min_idle or max_overflow now.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock resize --pool app --size 20")
        @ParentCommand var root: PoolCtl
        @Option(help: "The pool.") var pool: String
        @Option(help: "New size.") var size: Int?
        @Option(help: "New min_idle.") var minIdle: Int?
        @Option(help: "New max_overflow.") var maxOverflow: Int?
        func validate() throws {
            if self.size == nil && self.minIdle == nil && self.maxOverflow == nil {
                throw ValidationError("give --size, --min-idle or --max-overflow")
            }
        }
        func run() throws {
            var params: [(String, JSONValue)] = [("pool", .string(self.pool))]
            if let size { params.append(("size", JSONValue(size))) }
            if let minIdle { params.append(("min_idle", JSONValue(minIdle))) }
            if let maxOverflow { params.append(("max_overflow", JSONValue(maxOverflow))) }
            try poolctl.run(self.root.connection, "resize", params)
        }
    }

    struct Drain: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Hold new work, let transactions finish, close the servers.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock drain --pool app --deadline 30")
        @ParentCommand var root: PoolCtl
        @Option(help: "Only this pool.") var pool: String?
        @Option(help: "Seconds to wait before answering with an error (the pool stays draining).") var deadline: Double?
        func run() throws {
            var params = poolParam(self.pool)
            if let deadline { params.append(("deadline_s", JSONValue(deadline))) }
            var options = self.root.connection
            if let deadline { options.timeout = max(options.timeout, Int(deadline.rounded(.up)) + 5) }
            try poolctl.run(options, "drain", params)
        }
    }

    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Lift a drain.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock resume --pool app")
        @ParentCommand var root: PoolCtl
        @Option(help: "Only this pool.") var pool: String?
        func run() throws { try poolctl.run(self.root.connection, "resume", poolParam(self.pool)) }
    }

    struct SetRecycle: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set max_lifetime and idle_timeout, applied to existing servers.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock set-recycle --max-lifetime 3600 --idle-timeout 300")
        @ParentCommand var root: PoolCtl
        @Option(help: "Only this pool.") var pool: String?
        @Option(help: "Seconds a server may live (±10% per server).") var maxLifetime: Double?
        @Option(help: "Seconds an idle server above min_idle may stay unused.") var idleTimeout: Double?
        func validate() throws {
            if self.maxLifetime == nil && self.idleTimeout == nil { throw ValidationError("give --max-lifetime or --idle-timeout") }
        }
        func run() throws {
            var params = poolParam(self.pool)
            if let maxLifetime { params.append(("max_lifetime_s", JSONValue(maxLifetime))) }
            if let idleTimeout { params.append(("idle_timeout_s", JSONValue(idleTimeout))) }
            try poolctl.run(self.root.connection, "set-recycle", params)
        }
    }

    struct Reconnect: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace every server as it is released.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock reconnect --pool app")
        @ParentCommand var root: PoolCtl
        @Option(help: "Only this pool.") var pool: String?
        func run() throws { try poolctl.run(self.root.connection, "reconnect", poolParam(self.pool)) }
    }

    struct Health: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "ok, degraded or down; exits 1 unless every agent is ok (a readiness probe).", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock health")
        @ParentCommand var root: PoolCtl
        func run() throws {
            try poolctl.run(self.root.connection, "health", render: Render.health, accept: { $0["status"]?.stringValue == "ok" })
        }
    }

    struct ListClients: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list-clients", abstract: "One line per client connection.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock list-clients --pool app")
        @ParentCommand var root: PoolCtl
        @Option(help: "Only this pool.") var pool: String?
        func run() throws { try poolctl.run(self.root.connection, "list-clients", poolParam(self.pool), render: Render.clients) }
    }

    struct ListServers: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list-servers", abstract: "One line per server connection.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock list-servers")
        @ParentCommand var root: PoolCtl
        @Option(help: "Only this pool.") var pool: String?
        func run() throws { try poolctl.run(self.root.connection, "list-servers", poolParam(self.pool), render: Render.servers) }
    }

    struct KillClient: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "kill-client", abstract: "Close one client (FATAL 57P01).", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock kill-client 42")
        @ParentCommand var root: PoolCtl
        @Argument(help: "The client id from list-clients.") var id: Int
        func run() throws { try poolctl.run(self.root.connection, "kill-client", [("id", JSONValue(self.id))]) }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-read the configuration file; a bad file changes nothing.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock reload")
        @ParentCommand var root: PoolCtl
        func run() throws { try poolctl.run(self.root.connection, "reload") }
    }

    struct Config: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the effective configuration, secrets redacted.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock config")
        @ParentCommand var root: PoolCtl
        func run() throws { try poolctl.run(self.root.connection, "config") }
    }

    struct Subscribe: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print events as they happen (one agent).", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock subscribe --events resize,drain")
        @ParentCommand var root: PoolCtl
        @Option(help: "Comma-separated event types; all when absent.") var events: String?
        func run() throws {
            guard let socket = self.root.connection.sockets.first else { throw ExitCode(2) }
            let connection: Connection
            do {
                connection = try Connection(path: socket, timeout: 0)
            } catch {
                printError("\(socket): cannot reach the agent: \(error)")
                throw ExitCode(3)
            }
            let params: JSONValue? = self.events.map { ["events": .array($0.split(separator: ",").map { .string(String($0)) })] }
            try connection.send(RPCRequest(id: 1, method: "subscribe", params: params).json.serialized)
            while true {
                let line = try connection.readLine()
                guard let value = try? JSONValue.parse(line) else { continue }
                if let error = value["error"] {
                    printError("\(socket): \(error.serialized)")
                    throw ExitCode(1)
                }
                if let event = value["params"], value["method"] == "event" {
                    print(self.root.connection.json ? event.serialized : Render.keyValues(event).replacingNewlines())
                    flushOutput()
                }
            }
        }
    }

    struct Shutdown: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the agent.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock shutdown --mode graceful --deadline 30")
        @ParentCommand var root: PoolCtl
        @Option(help: "graceful or immediate.") var mode: String = "graceful"
        @Option(help: "Seconds a graceful shutdown waits for sessions.") var deadline: Double?
        func run() throws {
            var params: [(String, JSONValue)] = [("mode", .string(self.mode))]
            if let deadline { params.append(("deadline_s", JSONValue(deadline))) }
            try poolctl.run(self.root.connection, "shutdown", params)
        }
    }

    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show each agent's version and pid.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock version")
        @ParentCommand var root: PoolCtl
        func run() throws { try poolctl.run(self.root.connection, "version") }
    }

    struct Discover: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the OpenRPC document of the control protocol.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock discover --json")
        @ParentCommand var root: PoolCtl
        func run() throws { try poolctl.run(self.root.connection, "rpc.discover", render: { $0.serialized }) }
    }

    struct Call: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Call any method with JSON params and print the result.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock call stats '{\"pool\": \"app\"}'")
        @ParentCommand var root: PoolCtl
        @Argument(help: "The JSON-RPC method.") var method: String
        @Argument(help: "Params as a JSON object.") var params: String?

        func validate() throws {
            if let params {
                guard let value = try? JSONValue.parse(params), value.objectValue != nil else {
                    throw ValidationError("params must be a JSON object")
                }
            }
        }

        func run() throws {
            let members = try self.params.map { try JSONValue.parse($0).objectValue ?? [] } ?? []
            try poolctl.run(self.root.connection, self.method, members, render: { $0.serialized })
        }
    }

    struct Watch: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Refresh the stats table until interrupted.", discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock watch --interval 2")
        @ParentCommand var root: PoolCtl
        @Option(help: "Seconds between refreshes.") var interval: Double = 2
        @Option(help: "Stop after this many refreshes (0: never).") var count: Int = 0
        func validate() throws {
            guard self.interval > 0 else { throw ValidationError("--interval must be positive") }
        }
        func run() throws {
            var shown = 0
            while self.count == 0 || shown < self.count {
                if !self.root.connection.json { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                do {
                    try poolctl.run(self.root.connection, "stats", render: Render.stats)
                } catch let code as ExitCode where code.rawValue != 2 {
                    // Keep watching: the agent may come back.
                }
                flushOutput()
                shown += 1
                if self.count == 0 || shown < self.count { usleep(useconds_t(self.interval * 1_000_000)) }
            }
        }
    }
}

// ArgumentParser's usage errors exit 64; poolctl's contract says 2.
do {
    var command = try PoolCtl.parseAsRoot()
    try command.run()
} catch let exit as ExitCode {
    Glibc.exit(exit.rawValue)
} catch {
    if PoolCtl.exitCode(for: error).rawValue == EX_USAGE {
        printError(PoolCtl.fullMessage(for: error))
        Glibc.exit(2)
    }
    PoolCtl.exit(withError: error)
}
