// The control plane against a live agent under load: resize, drain, recycle, schemas, bad input, poolctl.

import Foundation
import Testing

extension Integration {
    @Suite struct ControlPlane {
        static func agent(_ role: String, size: Int, extra: String = "") throws -> AgentProcess {
            let upstream = try Upstream.role(role)
            try Upstream.admin().query("GRANT pg_read_all_data TO \(role)")
            return try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = \(size)
                wait_timeout = "60s"
                \(extra)
                """)
        }

        static func poolctl(_ agent: AgentProcess, _ arguments: [String]) throws -> (status: Int32, output: String) {
            try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket] + arguments)
        }

        static func pgbenchInBackground(_ agent: AgentProcess, clients: Int, transactions: Int) -> (Thread, LockedBox<(Int32, String)?>) {
            let outcome = LockedBox<(Int32, String)?>(nil)
            let thread = Thread {
                let run = try? Shell.run("/usr/bin/pgbench", ["-S", "-c", "\(clients)", "-j", "2", "-t", "\(transactions)", "-n", agent.conninfo()])
                let result = run.map { ($0.status, $0.output) } ?? (-1, "pgbench did not start")
                outcome.mutate { $0 = result }
            }
            thread.start()
            return (thread, outcome)
        }

        static func waitFor(_ outcome: LockedBox<(Int32, String)?>) -> (Int32, String) {
            _ = eventually(timeout: 120) { outcome.value != nil }
            return outcome.value ?? (-1, "pgbench did not finish")
        }

        @Test func resizeUnderLoadFollowsWithinASecond() throws {
            let agent = try Self.agent("pa_ctl_resize", size: 10)
            _ = try Shell.run("/usr/bin/pgbench", ["-i", "-q", "-s", "1", TestEnvironment.directConninfo])
            let (_, outcome) = Self.pgbenchInBackground(agent, clients: 50, transactions: 600)
            usleep(500_000)
            for size in [10, 2, 20] {
                let resize = try Self.poolctl(agent, ["resize", "--pool", "postgres", "--size", "\(size)"])
                #expect(resize.status == 0, "\(resize.output)")
                #expect(eventually(timeout: 1.5) { ((try? Upstream.connections(of: "pa_ctl_resize")) ?? 99) <= size },
                        "server count follows resize to \(size) within a second")
                usleep(700_000)
            }
            let (status, output) = Self.waitFor(outcome)
            #expect(status == 0, "\(output)")
            #expect(output.contains("number of failed transactions: 0"), "\(output)")
        }

        @Test func drainWaitsForInFlightWorkThenResumeContinues() throws {
            let agent = try Self.agent("pa_ctl_drain", size: 4)
            let busy = try PGConnection(agent.conninfo())
            try busy.query("BEGIN")
            try busy.query("SELECT 1")
            let drainResult = LockedBox<(Int32, String)?>(nil)
            let drainStarted = Date()
            Thread {
                let result = try? Self.poolctl(agent, ["--json", "drain", "--deadline", "20"])
                drainResult.mutate { $0 = result }
            }.start()
            usleep(500_000)
            #expect(drainResult.value == nil, "drain waits for the open transaction")
            let waiter = try PGConnection(agent.conninfo())
            try waiter.sendQuery("SELECT 'after resume'")
            try busy.query("COMMIT")
            #expect(eventually(timeout: 5) { drainResult.value != nil })
            #expect(drainResult.value?.0 == 0, "\(drainResult.value?.1 ?? "")")
            #expect(drainResult.value?.1.contains("\"servers_closed\"") == true)
            #expect(Date().timeIntervalSince(drainStarted) >= 0.5)
            #expect(try eventually { try Upstream.connections(of: "pa_ctl_drain") == 0 }, "no server is left")
            usleep(300_000)
            #expect(try Upstream.connections(of: "pa_ctl_drain") == 0, "and none is opened while drained")
            #expect(try Self.poolctl(agent, ["resume"]).status == 0)
            #expect(try waiter.finishQuery().first?.first == "after resume", "the waiting client continues")
        }

        @Test func drainPastItsDeadlineIsAnErrorAndThePoolStaysDraining() throws {
            let agent = try Self.agent("pa_ctl_deadline", size: 2)
            let busy = try PGConnection(agent.conninfo())
            try busy.query("BEGIN")
            let drain = try Self.poolctl(agent, ["--json", "drain", "--deadline", "1"])
            #expect(drain.status == 1)
            #expect(drain.output.contains("-32003"), "\(drain.output)")
            let stats = try Self.poolctl(agent, ["--json", "stats"])
            #expect(stats.output.contains("\"draining\":true"))
            try busy.query("COMMIT")
            #expect(try Self.poolctl(agent, ["resume"]).status == 0)
            #expect(try busy.value("SELECT 3") == "3")
        }

        @Test func setRecycleReplacesEveryBackend() throws {
            let agent = try Self.agent("pa_ctl_recycle", size: 3, extra: "min_idle = 3")
            #expect(try eventually { try Upstream.connections(of: "pa_ctl_recycle") == 3 })
            let before = try Upstream.pids(of: "pa_ctl_recycle")
            let (_, outcome) = Self.pgbenchInBackground(agent, clients: 10, transactions: 1500)
            let recycle = try Self.poolctl(agent, ["set-recycle", "--max-lifetime", "2"])
            #expect(recycle.status == 0, "\(recycle.output)")
            #expect(try eventually(timeout: 8) { try Upstream.pids(of: "pa_ctl_recycle").isDisjoint(with: before) },
                    "every backend pid is replaced")
            let (status, output) = Self.waitFor(outcome)
            #expect(status == 0, "\(output)")
            #expect(output.contains("number of failed transactions: 0"), "\(output)")
            // Each replaced server counts as recycled, whether it went at release or idle.
            let stats = try Self.poolctl(agent, ["--json", "stats"]).output
            let recycles = stats.range(of: "\"recycles\":").map { Int(stats[$0.upperBound...].prefix { $0.isNumber }) ?? 0 } ?? 0
            #expect(recycles >= 3, "\(stats)")
        }

        @Test func schemasAndBadInputThroughARawSocket() throws {
            guard let python = TestEnvironment.python else {
                if TestEnvironment.isCI { Issue.record("POOLAGENT_TEST_PYTHON is not set; run scripts/test") }
                return
            }
            let agent = try Self.agent("pa_ctl_raw", size: 3)
            let document = URL(fileURLWithPath: TestEnvironment.driversScript).deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("protocol/openrpc.json").path
            let script = URL(fileURLWithPath: TestEnvironment.driversScript).deletingLastPathComponent().appendingPathComponent("control.py").path
            let run = try Shell.run(python, [script, agent.controlSocket, document, String(agent.port)])
            #expect(run.status == 0, "\(run.output)")
            #expect(run.output.contains("methods ok"), "\(run.output)")
            #expect(run.output.contains("bad input ok"), "\(run.output)")
            #expect(run.output.contains("concurrency ok"), "\(run.output)")
        }

        @Test func poolctlAsksEveryAgentAndReportsEach() throws {
            let first = try Self.agent("pa_ctl_fleet_a", size: 2)
            let second = try Self.agent("pa_ctl_fleet_b", size: 2)
            let both = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", first.controlSocket, "--socket", second.controlSocket, "stats", "--json"])
            #expect(both.status == 0)
            #expect(both.output.split(separator: "\n").count == 2, "one line per agent: \(both.output)")
            let unreachable = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", first.controlSocket, "--socket", "/nonexistent.sock", "health"])
            #expect(unreachable.status == 3)
            let usage = try Shell.run(TestEnvironment.poolctlBinary, ["resize"])
            #expect(usage.status == 2)
            let health = try Self.poolctl(first, ["health"])
            #expect(health.status == 0, "\(health.output)")
        }

        @Test func controlSocketIsPrivateAndReloadRejectsABadFile() throws {
            let agent = try Self.agent("pa_ctl_reload", size: 2)
            var info = stat()
            #expect(stat(agent.controlSocket, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600)
            let config = agent.directory.appendingPathComponent("poolagent.toml")
            let original = try String(contentsOf: config, encoding: .utf8)
            try (original + "\nsize_typo = 3\n").write(to: config, atomically: true, encoding: .utf8)
            let bad = try Self.poolctl(agent, ["--json", "reload"])
            #expect(bad.status == 1)
            #expect(bad.output.contains("-32010") && bad.output.contains("size_typo"), "\(bad.output)")
            try original.replacingOccurrences(of: "size = 2", with: "size = 5").write(to: config, atomically: true, encoding: .utf8)
            let good = try Self.poolctl(agent, ["--json", "reload"])
            #expect(good.status == 0, "\(good.output)")
            #expect(try Self.poolctl(agent, ["--json", "stats"]).output.contains("\"size\":5"))
        }
    }
}
