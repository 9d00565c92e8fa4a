// poolctl across several agents: an inventory with labels, rollouts with a health gate, one merged event stream,
// and the fleet-wide table.

import Foundation
import Testing

extension Integration {
    @Suite struct Fleet {
        /// Three agents, eu-1, eu-2 and us-1; `unhealthy` names one whose pool cannot reach its server.
        static func fleet(_ role: String, unhealthy: String? = nil) throws -> (agents: [String: AgentProcess], file: String) {
            let upstream = try Upstream.role(role)
            var agents: [String: AgentProcess] = [:]
            for name in ["eu-1", "eu-2", "us-1"] {
                let pool = name == unhealthy
                    ? "[pools.app]\nupstream = \"host=127.0.0.1 port=1 dbname=postgres user=\(role) connect_timeout=1\"\nmin_idle = 1\nsize = 2"
                    : "[pools.app]\nupstream = \"\(upstream)\"\nsize = 2\nmode = \"transaction\""
                agents[name] = try AgentProcess(pools: pool)
            }
            let file = agents["eu-1"]!.directory.appendingPathComponent("fleet.toml").path
            try agents.keys.sorted().map { name in
                "[agents.\(name)]\nsocket = \"\(agents[name]!.controlSocket)\"\nregion = \"\(name.prefix(2))\"\nrole = \"pooler\"\n"
            }.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
            return (agents, file)
        }

        static func lines(_ output: String) -> [[String: Any]] {
            output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }

        @Test func anInventorySelectsAgentsByLabel() throws {
            let (agents, file) = try Self.fleet("pa_fleet_select")
            defer { withExtendedLifetime(agents) {} }
            let eu = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "--select", "region=eu", "--json", "health"])
            #expect(eu.status == 0, "\(eu.output)")
            #expect(Self.lines(eu.output).compactMap { $0["agent"] as? String } == ["eu-1", "eu-2"])
            let both = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "--select", "region=eu,us", "--select", "name=us-1", "--json", "version"])
            #expect(Self.lines(both.output).compactMap { $0["agent"] as? String } == ["us-1"])
            let none = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "--select", "region=ap", "health"])
            #expect(none.status == 2 && none.output.contains("no agent"), "\(none.output)")
            let bad = try Shell.run(TestEnvironment.poolctlBinary, ["--select", "region=eu", "health"])
            #expect(bad.status == 2)
        }

        @Test func rolloutGoesOneAgentAtATimeAndStopsAtTheFirstFailure() throws {
            let (agents, file) = try Self.fleet("pa_fleet_rollout")
            let run = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "--json", "rollout", "reconnect", "--settle", "0.5"])
            #expect(run.status == 0, "\(run.output)")
            let steps = Self.lines(run.output).compactMap { line in (line["agent"] as? String).map { "\($0) \(line["step"] ?? "")" } }
            #expect(steps == ["eu-1 started", "eu-1 done", "eu-2 started", "eu-2 done", "us-1 started", "us-1 done"], "\(run.output)")
            defer { withExtendedLifetime(agents) {} }

            let plan = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "rollout", "drain", "{\"pool\": \"app\"}", "--parallel", "2", "--dry-run"])
            #expect(plan.status == 0 && plan.output.contains("batch 1: eu-1, eu-2") && plan.output.contains("batch 2: us-1"), "\(plan.output)")
        }

        @Test func aFailingAgentStopsTheRolloutWithExitCodeOne() throws {
            let (agents, file) = try Self.fleet("pa_fleet_fail", unhealthy: "eu-2")
            defer { withExtendedLifetime(agents) {} }
            let run = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "rollout", "drain", "{\"pool\": \"app\"}", "--settle", "0.3", "--gate-timeout", "3"])
            #expect(run.status == 1, "\(run.output)")
            #expect(run.output.contains("eu-2: FAILED") && run.output.contains("health gate"), "\(run.output)")
            #expect(run.output.contains("1 done (eu-1), 1 failed (eu-2: ") && run.output.contains("1 untouched (us-1)"), "\(run.output)")
            #expect(!run.output.contains("us-1: drain"))

            // An agent that cannot be reached: exit 3, and nothing after it is touched.
            try "[agents.a]\nsocket = \"/nonexistent/agent.sock\"\n[agents.b]\nsocket = \"/nonexistent/b.sock\"\n"
                .write(toFile: file, atomically: true, encoding: .utf8)
            let unreachable = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "rollout", "reload"])
            #expect(unreachable.status == 3 && unreachable.output.contains("1 untouched (b)"), "\(unreachable.output)")
        }

        @Test func subscribeMergesEveryAgentsEventsLineByLine() throws {
            let (agents, file) = try Self.fleet("pa_fleet_subscribe")
            defer { withExtendedLifetime(agents) {} }
            let subscriber = try PipedCommand(TestEnvironment.poolctlBinary, ["--fleet", file, "--json", "subscribe", "--events", "reconnect"])
            usleep(400_000)
            for name in ["eu-1", "us-1"] {
                #expect(try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agents[name]!.controlSocket, "reconnect"]).status == 0)
            }
            #expect(eventually {
                Set(Self.lines(subscriber.output).compactMap { $0["agent"] as? String }) == ["eu-1", "us-1"]
            }, "\(subscriber.output)")
            #expect(Self.lines(subscriber.output).allSatisfy { $0["type"] as? String == "reconnect" })
            #expect(subscriber.isRunning)
        }

        @Test func agentsOnOtherHostsAreReachedThroughSSH() throws {
            guard let port = TestEnvironment.sshPort, let user = TestEnvironment.sshUser, let key = TestEnvironment.sshKey else {
                if TestEnvironment.isCI { Issue.record("the ssh:// test needs scripts/test's sshd (POOLAGENT_TEST_SSH_PORT)") }
                return
            }
            let upstream = try Upstream.role("pa_fleet_ssh")
            // sshd runs as `user` and opens the agent's socket as that user: the agent lets that uid in.
            guard let account = getpwnam(user) else { Issue.record("no user \(user)"); return }
            let agent = try AgentProcess(pools: "[pools.app]\nupstream = \"\(upstream)\"\nsize = 1", agentExtra: """
                control_socket_mode = "0666"
                control_allowed_uids = [0, \(account.pointee.pw_uid)]
                """)
            let ssh = "ssh -i \(key) -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=ERROR"
            let address = "ssh://\(user)@127.0.0.1:\(port)\(agent.controlSocket)"
            let health = try Shell.run("/usr/bin/env", ["POOLCTL_SSH=\(ssh)", TestEnvironment.poolctlBinary, "--socket", address, "--json", "health"])
            #expect(health.status == 0 && health.output.contains("\"status\":\"ok\""), "\(health.output)")
            // A rollout over SSH, and a wrong path: the agent is unreachable (3), with ssh's reason.
            let rollout = try Shell.run("/usr/bin/env", ["POOLCTL_SSH=\(ssh)", TestEnvironment.poolctlBinary, "--socket", address, "rollout", "reconnect", "--settle", "0.2"])
            #expect(rollout.status == 0 && rollout.output.contains("1 done"), "\(rollout.output)")
            let wrong = try Shell.run("/usr/bin/env", ["POOLCTL_SSH=\(ssh)", TestEnvironment.poolctlBinary, "--socket", "ssh://\(user)@127.0.0.1:\(port)/nonexistent/agent.sock", "health"])
            #expect(wrong.status == 3, "\(wrong.output)")
            // A stream over SSH, and poolctl told to stop: ssh and the forwarded socket go with it.
            let watcher = try PipedCommand("/usr/bin/env", ["POOLCTL_SSH=\(ssh)", TestEnvironment.poolctlBinary, "--socket", address, "subscribe"])
            #expect(eventually { (try? FileManager.default.contentsOfDirectory(atPath: "/tmp").contains { $0.hasPrefix("poolctl-ssh-") }) == true })
            kill(watcher.process.processIdentifier, SIGTERM)
            #expect(eventually { !watcher.isRunning })
            #expect(watcher.process.terminationStatus == 128 + SIGTERM)
            // The forwarded socket lived only while poolctl ran: no tunnel directory is left behind.
            let tunnels = try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("poolctl-ssh-") }
            #expect(tunnels.isEmpty, "\(tunnels)")
        }

        @Test func topShowsPoolTotalsAndAgentRows() throws {
            let (agents, file) = try Self.fleet("pa_fleet_top")
            let client = try PGConnection(agents["eu-1"]!.conninfo(database: "app"))
            defer { withExtendedLifetime((agents, client)) {} }
            let run = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "--json", "top", "--count", "2", "--interval", "0.3"])
            #expect(run.status == 0, "\(run.output)")
            let lines = Self.lines(run.output)
            let totals = lines.filter { $0["agents"] != nil }
            #expect(totals.count == 2 && totals.allSatisfy { $0["pool"] as? String == "app" && $0["agents"] as? Int == 3 }, "\(run.output)")
            #expect(totals.last?["clients"] as? Int == 1)
            #expect(lines.contains { $0["agent"] as? String == "eu-1" && $0["clients"] as? Int == 1 && $0["tps"] is Double })
            let table = try Shell.run(TestEnvironment.poolctlBinary, ["--fleet", file, "top", "--count", "1"])
            #expect(table.output.contains("app (3 agents)") && table.output.contains("  us-1"), "\(table.output)")
        }
    }
}
