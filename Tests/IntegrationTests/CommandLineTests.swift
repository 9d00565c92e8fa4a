// The poolagent and poolctl command lines: --check, one-line config errors, control socket answers.

import Foundation
import Testing

extension Integration {
    @Suite struct CommandLine {
        static func check(_ toml: String) throws -> (status: Int32, output: String, file: String) {
            let file = NSTemporaryDirectory() + "poolagent-check-\(UUID().uuidString.prefix(8)).toml"
            try toml.write(toFile: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: file) }
            let result = try Shell.run(TestEnvironment.agentBinary, ["--check", "--config", file])
            return (result.status, result.output, file)
        }

        @Test func checkAcceptsAValidFile() throws {
            let result = try Self.check("""
                [pools.app]
                upstream = "host=/tmp dbname=app"
                size = 4
                """)
            #expect(result.status == 0, "\(result.output)")
        }

        @Test(arguments: [
            ("[pools.app]\nupstream = \"host=/tmp\"\nsise = 4\n", "pools.app.sise", "unknown key"),
            ("[pools.app]\nupstream = \"host=/tmp\"\nsize = \"four\"\n", "pools.app.size", "whole number"),
            ("[pools.app]\nupstream = \"host=/tmp\"\nsize = 0\n", "pools.app.size", "out of range"),
            ("[pools.app]\nupstream = \"host=/tmp\"\nwait_timeout = \"-3s\"\n", "pools.app.wait_timeout", "duration"),
            ("[pools.app]\nupstream = \"host=db sslmode=verify-full sslrootcert=/nonexistent.crt\"\n", "pools.app.upstream", "sslrootcert"),
            ("[agent]\nlisten = [\"127.0.0.1:99999\"]\n[pools.app]\nupstream = \"host=/tmp\"\n", "agent.listen[0]", "port"),
        ])
        func checkRejectsBadFilesWithOneLine(toml: String, key: String, reason: String) throws {
            let result = try Self.check(toml)
            #expect(result.status != 0)
            let lines = result.output.split(separator: "\n")
            #expect(lines.count == 1, "one line: \(result.output)")
            #expect(result.output.contains(result.file))
            #expect(result.output.contains(key))
            #expect(result.output.contains(reason))
        }

        @Test func importPgBouncerWritesAConfigurationTheAgentRuns() throws {
            let role = "pa_import"
            let upstream = try Upstream.role(role)
            _ = upstream
            let directory = NSTemporaryDirectory() + "poolagent-import-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let server = "host=\(TestEnvironment.pgHost ?? "") port=\(TestEnvironment.pgPort ?? 5432) user=\(role)"
            try """
                [databases]
                postgres = \(server) pool_size=2 connect_query='SELECT 1'
                * = \(server)
                [users]
                alice = pool_mode=session
                [pgbouncer]
                listen_addr = 127.0.0.1
                pool_mode = transaction
                auth_type = trust
                admin_users = postgres
                logfile = /var/log/pgbouncer.log
                %include limits.ini
                """.write(toFile: directory + "/pgbouncer.ini", atomically: true, encoding: .utf8)
            try "max_client_conn = 50\n".write(toFile: directory + "/limits.ini", atomically: true, encoding: .utf8)
            let converted = directory + "/poolagent.toml"
            let result = try Shell.run("/bin/sh", ["-c", "cd \"$0\" && exec \"$1\" import-pgbouncer pgbouncer.ini -o \"$2\"", directory, TestEnvironment.agentBinary, converted])
            #expect(result.status == 0, "\(result.output)")
            // The report names what was dropped and why; the file says it too.
            for dropped in ["logfile", "[users] alice pool_mode=session", "connect_query"] {
                #expect(result.output.contains(dropped), "\(result.output)")
            }
            let text = try String(contentsOfFile: converted, encoding: .utf8)
            #expect(text.contains("# Not carried over:") && text.contains("max_client_conn = 50"), "\(text)")
            let check = try Shell.run(TestEnvironment.agentBinary, ["--check", "--config", converted])
            #expect(check.status == 0 && check.output.contains("1 pool and a template"), "\(check.output)")

            // The converted configuration serves: its [agent] lines but the listeners, the rest as written.
            let sections = text.components(separatedBy: "\n[auth]")
            let agentLines = sections[0].split(separator: "\n").filter {
                !$0.hasPrefix("#") && !$0.hasPrefix("[") && !$0.hasPrefix("listen") && !$0.hasPrefix("unix_socket")
            }
            let agent = try AgentProcess(pools: "[auth]" + sections[1], agentExtra: agentLines.joined(separator: "\n"), sections: "")
            let app = try PGConnection(agent.conninfo())
            #expect(try app.value("SELECT current_user") == role)
            let other = try PGConnection(agent.conninfo(database: "template1"))
            #expect(try other.value("SELECT current_database()") == "template1")
            let console = try PGConnection(agent.conninfo(database: "pgbouncer"))
            #expect(try console.records("SHOW DATABASES").first { $0["name"] == "postgres" }?["pool_size"] == "2")
        }

        @Test func logLinesAreLogfmtByDefaultAndJSONWhenAsked() throws {
            let upstream = try Upstream.role("pa_log_format")
            let pools = "[pools.postgres]\nupstream = \"\(upstream)\"\nsize = 1"
            let logfmt = try AgentProcess(pools: pools)
            _ = try PGConnection(logfmt.conninfo()).value("SELECT 1")
            let plain = logfmt.log.split(separator: "\n")
            #expect(!plain.isEmpty && plain.allSatisfy { $0.hasPrefix("ts=") && $0.contains(" level=") && $0.contains(" msg=") }, "\(logfmt.log)")
            #expect(plain.contains { $0.contains("msg=\"client logged in\"") && $0.contains(" pool=postgres") })

            let json = try AgentProcess(pools: pools, agentExtra: "log_format = \"json\"")
            _ = try PGConnection(json.conninfo()).value("SELECT 1")
            let objects = json.log.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(!objects.isEmpty && objects.allSatisfy { $0?["msg"] is String && $0?["level"] is String && $0?["ts"] is String }, "\(json.log)")
            #expect(objects.contains { $0?["msg"] as? String == "client logged in" && $0?["pool"] as? String == "postgres" })
        }

        @Test func poolctlReadsStatsFromTheControlSocket() throws {
            let upstream = try Upstream.role("pa_poolctl")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 3
                """)
            let client = try PGConnection(agent.conninfo())
            #expect(try client.value("SELECT 1") == "1")
            let result = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "stats", "--json"])
            #expect(result.status == 0, "\(result.output)")
            #expect(result.output.contains("\"name\":\"postgres\""))
            #expect(result.output.contains("\"active\":1"))
            let missing = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket + ".missing", "version"])
            #expect(missing.status == 3)
            let unknown = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "call", "no-such-method"])
            #expect(unknown.status == 1)
        }

        @Test func subscribeWritesEachEventIntoAPipeAsItHappens() throws {
            let upstream = try Upstream.role("pa_subscribe_pipe")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 3
                """)
            let subscriber = try PipedCommand(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "subscribe", "--events", "resize", "--json"])
            usleep(300_000)
            let resized = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "resize", "--pool", "postgres", "--size", "5"])
            #expect(resized.status == 0, "\(resized.output)")
            // poolctl is still running: the line reached the pipe because it was flushed, not because poolctl exited.
            #expect(eventually { subscriber.output.contains("\"resize\"") }, "no event in the pipe: \(subscriber.output)")
            #expect(subscriber.isRunning)
        }

        @Test func systemdHearsReadyReloadingWatchdogAndStopping() throws {
            guard let python = TestEnvironment.python else {
                if TestEnvironment.isCI { Issue.record("POOLAGENT_TEST_PYTHON is not set; run scripts/test") }
                return
            }
            let directory = NSTemporaryDirectory() + "poolagent-notify-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let config = directory + "/poolagent.toml"
            try """
                [agent]
                listen = ["127.0.0.1:\(try AgentProcess.freePort())"]
                control_socket = "\(directory)/control.sock"
                [auth]
                tcp = "trust"
                [pools.postgres]
                upstream = "\(try Upstream.role("pa_notify"))"
                """.write(toFile: config, atomically: true, encoding: .utf8)
            let script = URL(fileURLWithPath: TestEnvironment.driversScript).deletingLastPathComponent().appendingPathComponent("notify.py").path
            let run = try Shell.run(python, [script, TestEnvironment.agentBinary, config, directory + "/notify.sock"])
            #expect(run.status == 0, "\(run.output)")
            #expect(run.output.contains("notify: ok"), "\(run.output)")
        }

        @Test func secondAgentOnALiveControlSocketRefusesToStart() throws {
            let upstream = try Upstream.role("pa_twice")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                """)
            let file = agent.directory.appendingPathComponent("second.toml").path
            try """
                [agent]
                listen = ["127.0.0.1:\(try AgentProcess.freePort())"]
                control_socket = "\(agent.controlSocket)"
                [pools.postgres]
                upstream = "\(upstream)"
                """.write(toFile: file, atomically: true, encoding: .utf8)
            let second = try Shell.run(TestEnvironment.agentBinary, ["--config", file])
            #expect(second.status != 0)
            #expect(second.output.contains("in use"), "\(second.output)")
        }
    }
}
