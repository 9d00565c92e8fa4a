// Pre-ping, recycling and timeouts against real PostgreSQL.

import Foundation
import Testing

extension Integration {
    @Suite struct PoolIntelligence {
        static func agent(_ role: String, mode: String = "transaction", extra: String) throws -> AgentProcess {
            let upstream = try Upstream.role(role)
            return try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "\(mode)"
                size = 3
                \(extra)
                """)
        }

        static func counter(_ agent: AgentProcess, _ name: String) throws -> Int {
            let stats = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "stats"])
            guard let range = stats.output.range(of: "\"\(name)\":") else { return -1 }
            return Int(stats.output[range.upperBound...].prefix { $0.isNumber }) ?? -1
        }

        @Test func deadIdleServersAreDiscardedWithoutAClientError() throws {
            let agent = try Self.agent("pa_preping", extra: "min_idle = 3\npre_ping_after = \"0s\"")
            #expect(try eventually { try Upstream.connections(of: "pa_preping") == 3 })
            try Upstream.admin().query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pa_preping'")
            let client = try PGConnection(agent.conninfo())
            #expect(try client.value("SELECT 'served'") == "served", "the client never sees the dead servers")
            #expect(try Self.counter(agent, "pre_ping_failures") >= 1)
            for _ in 0..<5 { #expect(try client.value("SELECT 1") == "1") }
        }

        @Test func idleInTransactionTimeoutDisconnectsAndRollsBack() throws {
            let agent = try Self.agent("pa_idletx", extra: "idle_in_transaction_timeout = \"1s\"")
            let admin = try Upstream.admin()
            try admin.query("DROP TABLE IF EXISTS pa_idletx_rows; CREATE TABLE pa_idletx_rows (id int)")
            try admin.query("GRANT ALL ON pa_idletx_rows TO pa_idletx")
            let client = try PGConnection(agent.conninfo())
            try client.query("BEGIN")
            try client.query("INSERT INTO pa_idletx_rows VALUES (1)")
            usleep(2_600_000)
            #expect { try client.query("COMMIT") } throws: { ($0 as? PGError)?.message.contains("idle-in-transaction timeout") == true }
            #expect(try admin.value("SELECT count(*) FROM pa_idletx_rows") == "0", "the transaction was rolled back")
            #expect(try PGConnection(agent.conninfo()).value("SELECT 1") == "1")
        }

        @Test func clientIdleTimeoutDisconnectsIdleClients() throws {
            let agent = try Self.agent("pa_clientidle", extra: "client_idle_timeout = \"1s\"")
            let idle = try PGConnection(agent.conninfo())
            let busy = try PGConnection(agent.conninfo())
            for _ in 0..<6 {
                #expect(try busy.value("SELECT 1") == "1")
                usleep(400_000)
            }
            #expect { try idle.query("SELECT 1") } throws: { ($0 as? PGError)?.message.contains("idle-session timeout") == true }
        }

        @Test func queryTimeoutCancelsLongRequests() throws {
            let agent = try Self.agent("pa_querytimeout", extra: "query_timeout = \"1s\"")
            let client = try PGConnection(agent.conninfo())
            let started = Date()
            #expect { try client.query("SELECT pg_sleep(20)") } throws: { ($0 as? PGError)?.sqlState == "57014" }
            #expect(Date().timeIntervalSince(started) < 5)
            #expect(try client.value("SELECT 'next'") == "next")
        }

        @Test func serverSettingsHoldInTransactionModeAfterManyTransactions() throws {
            let agent = try Self.agent("pa_jit", extra: "server_settings = { jit = \"off\", work_mem = \"32MB\" }")
            let clients = try (0..<4).map { _ in try PGConnection(agent.conninfo()) }
            for round in 0..<25 {
                for client in clients {
                    try client.query("BEGIN; SET LOCAL work_mem = '1MB'; COMMIT")
                    #expect(try client.value("SHOW jit") == "off", "round \(round)")
                }
            }
            #expect(try clients[0].value("SHOW work_mem") == "32MB")
        }
    }
}
