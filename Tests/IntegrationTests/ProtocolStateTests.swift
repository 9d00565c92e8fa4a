// Attacks on transaction pooling's protocol state, replayed as raw protocol against the real agent.

import Foundation
import Testing

extension Integration {
    @Suite struct ProtocolState {
        static var fuzzDirectory: String {
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fuzz").path
        }

        /// One client's rows handed to another after a stray CopyFail; a shared statement redefined by another
        /// client; statement texts kept after their clients left; a client wedged by a shared statement whose
        /// Close and Parse were skipped behind a DISCARD ALL. Each must fail (Tests/Fuzz/reproductions.py).
        @Test(arguments: ["leak", "hijack", "memory", "wedge"])
        func attackOnASharedServerFails(scenario: String) throws {
            guard let python = TestEnvironment.python else {
                if TestEnvironment.isCI { Issue.record("POOLAGENT_TEST_PYTHON is not set; run scripts/test") }
                return
            }
            // AddressSanitizer keeps freed memory in quarantine: RSS tells nothing about what the agent keeps.
            if scenario == "memory" && TestEnvironment.environment["POOLAGENT_TEST_SANITIZER"] != nil { return }
            let role = "pa_attack_\(scenario)"
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(try Upstream.role(role))"
                mode = "transaction"
                size = 1
                wait_timeout = "20s"
                max_pinned = 0
                """)
            let run = try Shell.run(python, [
                Self.fuzzDirectory + "/reproductions.py", scenario, "--agent-port", String(agent.port),
                "--agent-pid", String(agent.process.processIdentifier), "--user", role,
            ])
            #expect(run.status == 0, "\(run.output)\n\(agent.log.suffix(3000))")
            #expect(run.output.contains("\(scenario): ok"), "\(run.output)")
        }
    }
}
