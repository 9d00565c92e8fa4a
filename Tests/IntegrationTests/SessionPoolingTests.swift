// Session pooling against real PostgreSQL: queueing, state reset, rollback on disconnect, limits.

import Foundation
import Testing

extension Integration {
    @Suite struct SessionPooling {
        @Test func moreClientsThanServersWaitThenProceed() throws {
            let upstream = try Upstream.role("pa_queue")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 2
                """)
            let peak = LockedBox(0)
            let started = Date()
            let results = concurrently(5) { _ in
                let connection = try PGConnection(agent.conninfo())
                try connection.query("SELECT pg_sleep(0.4)")
                let count = try Upstream.connections(of: "pa_queue")
                peak.mutate { $0 = max($0, count) }
                return try connection.value("SELECT 42")
            }
            for result in results { #expect(try result.get() == "42") }
            #expect(peak.value <= 2, "the pool size is a hard limit on server connections")
            #expect(Date().timeIntervalSince(started) >= 1.2, "five 0.4 s sessions on two servers need three rounds")
        }

        @Test func sessionStateDoesNotLeakToTheNextClient() throws {
            let upstream = try Upstream.role("pa_leak")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 1
                """)
            let first = try PGConnection(agent.conninfo())
            let firstPID = try first.value("SELECT pg_backend_pid()")
            try first.query("SET statement_timeout = '123s'")
            try first.query("CREATE TEMP TABLE leaked (id int)")
            try first.query("PREPARE leaked_statement AS SELECT 1")
            first.close()

            let second = try PGConnection(agent.conninfo())
            #expect(try second.value("SELECT pg_backend_pid()") == firstPID, "the same backend serves the next client")
            #expect(try second.value("SHOW statement_timeout") == "0")
            #expect(try second.value("SELECT count(*) FROM pg_class WHERE relname = 'leaked' AND relpersistence = 't'") == "0")
            #expect(throws: PGError.self) { try second.query("EXECUTE leaked_statement") }
        }

        @Test func disconnectInsideATransactionRollsBack() throws {
            let upstream = try Upstream.role("pa_rollback")
            let admin = try Upstream.admin()
            try admin.query("DROP TABLE IF EXISTS pa_rollback_rows; CREATE TABLE pa_rollback_rows (id int)")
            try admin.query("GRANT ALL ON pa_rollback_rows TO pa_rollback")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 1
                """)
            let client = try PGConnection(agent.conninfo())
            try client.query("BEGIN")
            try client.query("INSERT INTO pa_rollback_rows VALUES (1)")
            client.close()

            #expect(try eventually {
                try admin.value("SELECT count(*) FROM pg_stat_activity WHERE usename = 'pa_rollback' AND state LIKE 'idle in transaction%'") == "0"
            }, "no transaction stays open on the server")
            let next = try PGConnection(agent.conninfo())
            #expect(try next.value("SELECT count(*) FROM pa_rollback_rows") == "0")
            #expect(try next.value("SELECT 1") == "1")
            #expect(try Upstream.connections(of: "pa_rollback") == 1, "the rolled-back server is reused")
        }

        @Test func waitTimeoutNamesThePoolAndTheTimeout() throws {
            let upstream = try Upstream.role("pa_timeout")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 1
                wait_timeout = "1s"
                """)
            let holder = try PGConnection(agent.conninfo())
            try holder.query("SELECT 1")
            let started = Date()
            do {
                _ = try PGConnection(agent.conninfo())
                Issue.record("a second client got in although the only server is held")
            } catch let error as PGError {
                #expect(error.message.contains("pool \"postgres\""))
                #expect(error.message.contains("wait_timeout 1s"))
            }
            #expect(Date().timeIntervalSince(started) >= 0.9)
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.startupPacket([("user", "postgres"), ("database", "postgres")]))
            #expect(RawConnection.firstError(in: raw.readUntilClosed().bytes)?.sqlState == "53300")
            #expect(try holder.value("SELECT 2") == "2", "the holder keeps its server")
        }

        @Test func overflowServesExtraClientsAndIsClosedWhenIdle() throws {
            let upstream = try Upstream.role("pa_overflow")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 1
                max_overflow = 1
                wait_timeout = "2s"
                """)
            let first = try PGConnection(agent.conninfo())
            let second = try PGConnection(agent.conninfo())
            #expect(try first.value("SELECT 1") == "1")
            #expect(try second.value("SELECT 2") == "2")
            #expect(try Upstream.connections(of: "pa_overflow") == 2)
            #expect(throws: PGError.self, "size + max_overflow is a hard limit") { _ = try PGConnection(agent.conninfo()) }
            second.close()
            #expect(try eventually { try Upstream.connections(of: "pa_overflow") == 1 }, "the overflow server closes when released")
        }

        @Test func minIdleConnectionsAreOpenedAhead() throws {
            let upstream = try Upstream.role("pa_minidle")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 5
                min_idle = 3
                """)
            #expect(try eventually { try Upstream.connections(of: "pa_minidle") == 3 })
            let client = try PGConnection(agent.conninfo())
            #expect(try client.value("SELECT 1") == "1")
            #expect(try eventually { try Upstream.connections(of: "pa_minidle") == 4 }, "a lease is replaced to keep 3 idle")
            withExtendedLifetime(agent) {}
        }

        @Test func serverSettingsApplyAndSurviveTheReset() throws {
            let upstream = try Upstream.role("pa_settings")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 1
                server_settings = { jit = "off", work_mem = "32MB", random_page_cost = 1.1 }
                """)
            for _ in 0..<3 {
                let client = try PGConnection(agent.conninfo())
                #expect(try client.value("SHOW jit") == "off")
                #expect(try client.value("SHOW work_mem") == "32MB")
                #expect(try client.value("SHOW random_page_cost") == "1.1")
                try client.query("SET work_mem = '1MB'")
            }
        }

        @Test func clientStartupParametersAreApplied() throws {
            let upstream = try Upstream.role("pa_params")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 1
                """)
            let client = try PGConnection(agent.conninfo(extra: "application_name=ledger options='-c search_path=pg_catalog,public -c statement_timeout=5s'"))
            #expect(client.parameterStatus("application_name") == "ledger")
            #expect(client.parameterStatus("server_version") != nil)
            #expect(try client.value("SHOW application_name") == "ledger")
            #expect(try client.value("SHOW search_path") == "pg_catalog,public", "kept as sent, as PostgreSQL keeps startup options")
            #expect(try client.value("SHOW statement_timeout") == "5s")
            client.close()
            let plain = try PGConnection(agent.conninfo())
            #expect(try plain.value("SHOW statement_timeout") == "0", "the next client starts from the pool's defaults")
        }

        @Test func pgbenchSessionModeHasNoFailures() throws {
            let upstream = try Upstream.role("pa_bench")
            let admin = try Upstream.admin()
            try admin.query("GRANT pg_read_all_data TO pa_bench")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 10
                """)
            let initialise = try Shell.run("/usr/bin/pgbench", ["-i", "-q", "-s", "1", TestEnvironment.directConninfo])
            #expect(initialise.status == 0, "\(initialise.output)")
            // -t, not -T: pgbench times -T with SIGALRM, which a child of the test runner may have blocked.
            let bench = try Shell.run("/usr/bin/pgbench", ["-S", "-c", "10", "-j", "2", "-t", "500", "-n", agent.conninfo()])
            #expect(bench.status == 0, "\(bench.output)")
            #expect(bench.output.contains("number of failed transactions: 0"), "\(bench.output)")
            #expect(try Upstream.connections(of: "pa_bench") <= 10)
        }
    }
}

/// A command left running with its stdout read into `output` as it arrives (through a pipe, as a script would).
final class PipedCommand: @unchecked Sendable {  // `output` is locked; the process is driven by one test.
    let process = Process()
    private let received = LockedBox("")

    init(_ executable: String, _ arguments: [String]) throws {
        self.process.executableURL = URL(fileURLWithPath: executable)
        self.process.arguments = arguments
        let pipe = Pipe()
        self.process.standardOutput = pipe
        try self.process.run()
        let reader = pipe.fileHandleForReading
        let received = self.received
        Thread {
            while true {
                let data = reader.availableData
                if data.isEmpty { return }
                received.mutate { $0 += String(decoding: data, as: UTF8.self) }
            }
        }.start()
    }

    deinit {
        // SIGKILL: the test runner's threads block SIGTERM, and the child inherits that mask.
        kill(self.process.processIdentifier, SIGKILL)
        self.process.waitUntilExit()
    }

    var output: String { self.received.value }
    var isRunning: Bool { self.process.isRunning }
}

enum Shell {
    static func run(_ executable: String, _ arguments: [String], stdin: String? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let input = Pipe()
        process.standardInput = stdin == nil ? FileHandle.nullDevice : input
        try process.run()
        if let stdin {
            let writer = input.fileHandleForWriting
            let data = Data(stdin.utf8)
            Thread { writer.write(data); try? writer.close() }.start()
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
