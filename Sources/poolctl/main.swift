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
            Shutdown.self, Version.self, Discover.self, Call.self, Watch.self, Rollout.self, Top.self,
        ]
    )

    @OptionGroup var connection: ConnectionOptions
}

struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Control socket path, glob or ssh://[user@]host[:port]/path; repeat for several agents. Default: $POOLAGENT_SOCKET or /run/poolagent/poolagent.sock.")
    var socket: [String] = []

    @Option(name: .long, help: "An inventory of agents ([agents.<name>] tables with socket and labels).")
    var fleet: String?

    @Option(name: .long, help: "With --fleet: only agents whose label has this value (label=value or label=a,b; repeatable, all must match).")
    var select: [String] = []

    @Flag(name: .long, help: "Print one JSON line per agent instead of a table.")
    var json = false

    @Option(name: .long, help: "Seconds to wait for each agent's answer.")
    var timeout: Int = 30

    func validate() throws {
        if !self.select.isEmpty && self.fleet == nil { throw ValidationError("--select needs --fleet") }
    }

    /// The agents addressed: the fleet's (selected), then the --socket ones; the default socket when neither.
    var targets: [AgentTarget] {
        var targets: [AgentTarget] = []
        if let fleet = self.fleet {
            do {
                targets = try Fleet.select(try Fleet.load(fleet), self.select)
            } catch {
                printError("poolctl: \(error)")
                Glibc.exit(2)
            }
            if targets.isEmpty {
                printError("poolctl: no agent in \(fleet) matches \(self.select.joined(separator: " "))")
                Glibc.exit(2)
            }
        }
        var patterns = self.socket
        if patterns.isEmpty && targets.isEmpty {
            patterns = [getenv("POOLAGENT_SOCKET").map { String(cString: $0) } ?? "/run/poolagent/poolagent.sock"]
        }
        targets += ControlClient.expand(patterns).map { AgentTarget(name: $0, address: $0) }
        return targets
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
    let targets = options.targets
    let answers = ControlClient.callAll(targets.map(\.address), method: method, params: params.isEmpty ? nil : .object(params), timeout: options.timeout)
    var exitCode: Int32 = 0
    for (target, answer) in zip(targets, answers) {
        let prefix = targets.count > 1 ? "\(target.name):\n" : ""
        switch answer.outcome {
        case .success(let response):
            switch response.outcome {
            case .success(let result):
                if !accept(result) { exitCode = max(exitCode, 1) }
                if options.json {
                    print((["agent": .string(target.name), "socket": .string(answer.socket), "result": result] as JSONValue).serialized)
                } else {
                    print(prefix + render(result))
                }
            case .failure(let error):
                exitCode = max(exitCode, 1)
                if options.json {
                    print((["agent": .string(target.name), "socket": .string(answer.socket), "error": ["code": JSONValue(error.code), "message": .string(error.message), "data": error.data ?? .null]] as JSONValue).serialized)
                } else {
                    // The data's `errors` or `reason` says what was wrong; show it, not only the code.
                    printError("\(target.name): \(error)" + error.details.map { "\n  \($0)" }.joined())
                }
            }
        case .failure(let error):
            exitCode = 3
            if options.json {
                print((["agent": .string(target.name), "socket": .string(answer.socket), "unreachable": .string(error.description)] as JSONValue).serialized)
            } else {
                printError("\(target.name): cannot reach the agent: \(error)")
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
        static let configuration = CommandConfiguration(
            abstract: "Print events as they happen, from every agent addressed, merged into one stream.",
            discussion: """
                Each line is one event; with several agents it names the agent ("agent" in --json). Lines are \
                written and flushed as they come, to a terminal, a pipe or a file. An agent that goes away is \
                reported on stderr; the others go on. Exits 3 when no agent is left.

                Example:
                  poolctl --socket /tmp/poolagent.sock subscribe --events resize,drain
                  poolctl --fleet fleet.toml --select region=eu subscribe --json
                """
        )
        @ParentCommand var root: PoolCtl
        @Option(help: "Comma-separated event types; all when absent.") var events: String?
        func run() throws {
            let targets = self.root.connection.targets
            let params: JSONValue? = self.events.map { ["events": .array($0.split(separator: ",").map { .string(String($0)) })] }
            let json = self.root.connection.json
            let tagged = targets.count > 1
            let output = EventOutput()
            let threads = targets.map { target in
                spawnThread {
                    let code = Self.follow(target, params: params, json: json, tagged: tagged, output: output)
                    output.finished(code)
                }
            }
            for thread in threads { pthread_join(thread, nil) }
            throw ExitCode(output.exitCode)
        }

        /// Reads one agent's events until it goes; returns the exit code its end calls for.
        static func follow(_ target: AgentTarget, params: JSONValue?, json: Bool, tagged: Bool, output: EventOutput) -> Int32 {
            let connection: Connection
            do {
                connection = try Connection(address: target.address, timeout: 0)
                try connection.send(RPCRequest(id: 1, method: "subscribe", params: params).json.serialized)
            } catch {
                output.error("\(target.name): cannot reach the agent: \(error)")
                return 3
            }
            defer { connection.close() }
            while true {
                let line: [UInt8]
                do {
                    line = try connection.readLine()
                } catch {
                    output.error("\(target.name): \(error)")
                    return 3
                }
                guard let value = try? JSONValue.parse(line) else { continue }
                if let error = value["error"] {
                    output.error("\(target.name): \(error.serialized)")
                    return 1
                }
                guard let event = value["params"], value["method"] == "event" else { continue }
                if json {
                    let members = tagged ? [("agent", JSONValue.string(target.name))] + (event.objectValue ?? []) : event.objectValue ?? []
                    output.line(JSONValue.object(members).serialized)
                } else {
                    output.line((tagged ? "\(target.name): " : "") + Render.keyValues(event).replacingNewlines())
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
                if self.count == 0 || shown < self.count { sleepSeconds(self.interval) }
            }
        }
    }
}

// ArgumentParser's usage errors exit 64; poolctl's contract says 2.
do {
    var command = try PoolCtl.parseAsRoot()
    try command.run()
    SSHTunnel.waitIfStopping()
} catch let exit as ExitCode {
    SSHTunnel.waitIfStopping()
    Glibc.exit(exit.rawValue)
} catch {
    if PoolCtl.exitCode(for: error).rawValue == EX_USAGE {
        printError(PoolCtl.fullMessage(for: error))
        Glibc.exit(2)
    }
    PoolCtl.exit(withError: error)
}
