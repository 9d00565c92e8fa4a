// The poolagent command: run the agent (the default), or convert a PgBouncer configuration.

import ArgumentParser
import Logging
import PoolAgent

#if canImport(Glibc)
import Glibc
#endif

struct PoolAgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "poolagent",
        abstract: "A PostgreSQL connection-pool agent.",
        discussion: """
            Applications connect over the PostgreSQL protocol; scripts steer the agent over JSON-RPC on \
            its control socket (see poolctl).

            Example:
              poolagent --config /etc/poolagent/poolagent.toml
              poolagent --check --config /etc/poolagent/poolagent.toml
              poolagent import-pgbouncer /etc/pgbouncer/pgbouncer.ini -o /etc/poolagent/poolagent.toml
            """,
        version: PoolAgentVersion.current,
        subcommands: [Run.self, ImportPgBouncer.self],
        defaultSubcommand: Run.self
    )

    static func fail(_ message: String) -> Never {
        Self.warn(message)
        Glibc.exit(1)
    }

    static func warn(_ message: String) {
        let line = Array((message + "\n").utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}

extension PoolAgentCommand {
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the agent (the default subcommand).",
            discussion: """
                SIGHUP reloads the configuration; SIGTERM stops gracefully within shutdown_timeout; SIGINT \
                stops at once. Under systemd (Type=notify) the agent reports READY=1, RELOADING=1, STOPPING=1 \
                and watchdog pings itself.
                """
        )

        @Option(name: .long, help: "The TOML configuration file.")
        var config: String

        @Flag(name: .long, help: "Validate the configuration and exit.")
        var check = false

        @Option(name: .long, help: "Override the log level (trace, debug, info, notice, warning, error, critical).")
        var logLevel: String?

        func run() throws {
            let configuration: AgentConfiguration
            do {
                configuration = try ConfigLoader.load(path: self.config)
            } catch {
                PoolAgentCommand.fail("poolagent: \(error)")
            }
            if self.check {
                print("\(self.config): configuration is valid (\(configuration.pools.count) pool\(configuration.pools.count == 1 ? "" : "s")\(configuration.template == nil ? "" : " and a template"))")
                // The agent raises its soft limit to the hard one at start: the hard limit is what it will have.
                if let warning = DescriptorLimit.warning(for: configuration, limit: DescriptorLimit.current.hard) {
                    PoolAgentCommand.warn("poolagent: warning: \(warning)")
                }
                return
            }
            let levelText = self.logLevel ?? configuration.logLevel
            guard let level = Logger.Level(rawValue: levelText) else {
                PoolAgentCommand.fail("poolagent: unknown log level \"\(levelText)\"")
            }
            LoggingSystem.bootstrap { _ in AgentLogHandler(format: configuration.logFormat, level: level) }
            let logger = Logger(label: "poolagent")
            do {
                let agent = try Agent(configuration: configuration, logger: logger)
                try agent.run()
            } catch {
                PoolAgentCommand.fail("poolagent: \(error)")
            }
        }
    }

    struct ImportPgBouncer: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import-pgbouncer",
            abstract: "Convert a PgBouncer configuration into the agent's.",
            discussion: """
                Reads pgbouncer.ini as PgBouncer does (%include from the working directory, a [pgbouncer] \
                header resetting what came before), writes the agent's TOML with PgBouncer's defaults spelled \
                out where the agent's differ, checks it as `poolagent --check` would, and prints on stderr \
                every setting it could not carry over and why (also at the end of the file). A * database \
                becomes the pool template [pools."*"].

                Exit codes: 0 written, 1 the input or the converted configuration is invalid.

                Example:
                  poolagent import-pgbouncer /etc/pgbouncer/pgbouncer.ini --userlist /etc/pgbouncer/userlist.txt -o poolagent.toml
                """
        )

        @Argument(help: "The pgbouncer.ini to convert.")
        var ini: String

        @Option(name: .long, help: "The auth file (userlist.txt) to use instead of the ini's auth_file.")
        var userlist: String?

        @Option(name: [.short, .customLong("output")], help: "Write the configuration here (mode 0640) instead of to stdout.")
        var output: String?

        @Flag(name: .long, help: "Write the configuration even when it does not pass the check (files it names may be missing here).")
        var noCheck = false

        func run() throws {
            var directory = [CChar](repeating: 0, count: Int(PATH_MAX))
            let workingDirectory = getcwd(&directory, directory.count).map { String(cString: $0) } ?? "."
            let converted: PgBouncerImport
            do {
                converted = try PgBouncerImport(iniPath: self.ini, userlist: self.userlist, workingDirectory: workingDirectory)
            } catch {
                PoolAgentCommand.fail("poolagent import-pgbouncer: \(error)")
            }
            for note in converted.notes { PoolAgentCommand.warn("note: \(note)") }
            do {
                _ = try ConfigLoader.parse(converted.toml, file: self.output ?? "(converted)")
            } catch {
                PoolAgentCommand.warn("poolagent import-pgbouncer: the converted configuration does not pass the check: \(error)")
                if !self.noCheck { Glibc.exit(1) }
            }
            if let output = self.output {
                let descriptor = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
                guard descriptor >= 0 else { PoolAgentCommand.fail("poolagent import-pgbouncer: cannot write \(output): \(String(cString: strerror(errno)))") }
                // It may hold upstream passwords: never wider than 0640, whatever the file had.
                fchmod(descriptor, 0o640)
                let bytes = Array(converted.toml.utf8)
                let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
                close(descriptor)
                guard written == bytes.count else { PoolAgentCommand.fail("poolagent import-pgbouncer: cannot write \(output)") }
            } else {
                print(converted.toml, terminator: "")
            }
            if converted.dropped.isEmpty {
                PoolAgentCommand.warn("every setting was carried over")
            } else {
                PoolAgentCommand.warn("not carried over (\(converted.dropped.count)):")
                for dropped in converted.dropped { PoolAgentCommand.warn("  \(dropped)") }
            }
        }
    }
}

PoolAgentCommand.main()
