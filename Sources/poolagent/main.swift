// The poolagent command: parse arguments, load the configuration, run the agent.

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
            """,
        version: PoolAgentVersion.current
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
            Self.fail("poolagent: \(error)")
        }
        if self.check {
            print("\(self.config): configuration is valid (\(configuration.pools.count) pool\(configuration.pools.count == 1 ? "" : "s"))")
            // The agent raises its soft limit to the hard one at start: the hard limit is what it will have.
            if let warning = DescriptorLimit.warning(for: configuration, limit: DescriptorLimit.current.hard) {
                Self.warn("poolagent: warning: \(warning)")
            }
            return
        }
        let levelText = self.logLevel ?? configuration.logLevel
        guard let level = Logger.Level(rawValue: levelText) else {
            Self.fail("poolagent: unknown log level \"\(levelText)\"")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "poolagent")
        do {
            let agent = try Agent(configuration: configuration, logger: logger)
            try agent.run()
        } catch {
            Self.fail("poolagent: \(error)")
        }
    }

    static func fail(_ message: String) -> Never {
        Self.warn(message)
        Glibc.exit(1)
    }

    static func warn(_ message: String) {
        let line = Array((message + "\n").utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}

PoolAgentCommand.main()
