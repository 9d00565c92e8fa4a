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

        @Test func metricsEndpointServesPrometheusTextAndPercentilesMove() throws {
            let metricsPort = try AgentProcess.freePort()
            let upstream = try Upstream.role("pa_metrics")
            try Upstream.admin().query("GRANT pg_read_all_data TO pa_metrics")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 4
                """, agentExtra: "metrics_listen = \"127.0.0.1:\(metricsPort)\"")
            let before = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "stats"])
            #expect(before.output.contains("\"transaction\":{\"count\":0"), "\(before.output)")
            _ = try Shell.run("/usr/bin/pgbench", ["-i", "-q", "-s", "1", TestEnvironment.directConninfo])
            let bench = try Shell.run("/usr/bin/pgbench", ["-S", "-c", "12", "-j", "2", "-t", "200", "-n", agent.conninfo()])
            #expect(bench.status == 0, "\(bench.output)")
            let after = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "stats"])
            // pgbench's own set-up queries (scale detection) come on top of its 2400 transactions.
            #expect(try Self.counter(agent, "transactions") >= 2400, "\(after.output)")
            #expect(!after.output.contains("\"transaction\":{\"count\":0"), "percentiles moved")

            let raw = try RawConnection(port: metricsPort)
            raw.send(Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            let response = String(decoding: raw.readUntilClosed().bytes, as: UTF8.self)
            #expect(response.hasPrefix("HTTP/1.1 200 OK"))
            let body = response.components(separatedBy: "\r\n\r\n").dropFirst().joined()
            let sample = try Regex(#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? -?[0-9.eE+-]+$"#)
            for line in body.split(separator: "\n") where !line.hasPrefix("#") {
                #expect(line.wholeMatch(of: sample) != nil, "not a Prometheus sample: \(line)")
            }
            #expect(body.contains("poolagent_transactions_total{pool=\"postgres\"} 24"), "\(body)")
            #expect(body.contains("poolagent_wait_seconds{pool=\"postgres\",quantile=\"0.99\"}"))
            #expect(body.contains("# TYPE poolagent_query_seconds summary"))
        }

        @Test func theGrafanaDashboardQueriesOnlyMetricsTheAgentExports() throws {
            let metricsPort = try AgentProcess.freePort()
            let upstream = try Upstream.role("pa_dashboard")
            let agent = try AgentProcess(pools: "[pools.postgres]\nupstream = \"\(upstream)\"\nsize = 1",
                                         agentExtra: "metrics_listen = \"127.0.0.1:\(metricsPort)\"")
            _ = try PGConnection(agent.conninfo()).value("SELECT 1")
            let raw = try RawConnection(port: metricsPort)
            raw.send(Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            let body = String(decoding: raw.readUntilClosed().bytes, as: UTF8.self).components(separatedBy: "\r\n\r\n").dropFirst().joined()
            var exported = Set<String>()
            var labels = Set<String>()
            for line in body.split(separator: "\n") where !line.hasPrefix("#") {
                exported.insert(String(line.prefix { $0 != "{" && $0 != " " }))
                for match in line.matches(of: #/([a-z_]+)="/#) { labels.insert(String(match.1)) }
            }
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            let data = try Data(contentsOf: root.appendingPathComponent("docs/grafana/poolagent.json"))
            let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            let panels = try #require(dashboard["panels"] as? [[String: Any]])
            let expressions = panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
            #expect(panels.count >= 10 && expressions.count >= panels.count)
            var queried = Set<String>()
            for expression in expressions {
                for match in expression.matches(of: #/poolagent_[a-z_]+/#) { queried.insert(String(match.0)) }
                // Labels the dashboard selects or groups by: the agent's own, or the one Prometheus adds.
                for match in expression.matches(of: #/([a-z_]+)(=~|=)"/#) {
                    #expect(labels.contains(String(match.1)) || match.1 == "instance", "label \(match.1) in \(expression)")
                }
            }
            #expect(queried.count >= 20)
            for name in queried.sorted() {
                #expect(exported.contains(name), "the dashboard queries \(name), which /metrics does not export")
            }
        }

        @Test func autoscalerGrowsUnderQueueingAndResizePinsIt() throws {
            let upstream = try Upstream.role("pa_autoscale")
            try Upstream.admin().query("GRANT pg_read_all_data TO pa_autoscale")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 2
                autoscale = { interval = "1s", min = 2, max = 8 }
                """)
            _ = try Shell.run("/usr/bin/pgbench", ["-i", "-q", "-s", "1", TestEnvironment.directConninfo])
            // Enough load to outlast a few autoscale intervals.
            let bench = try Shell.run("/usr/bin/pgbench", ["-c", "16", "-j", "2", "-t", "1500", "-n", "-S", agent.conninfo()])
            #expect(bench.status == 0, "\(bench.output)")
            let stats = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "stats"])
            #expect(try Self.counter(agent, "size") > 2, "queueing grew the pool: \(stats.output)")
            #expect(stats.output.contains("\"last_decision\":\""))
            let pin = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "resize", "--pool", "postgres", "--size", "3"])
            #expect(pin.status == 0)
            _ = try Shell.run("/usr/bin/pgbench", ["-c", "16", "-j", "2", "-t", "200", "-n", "-S", agent.conninfo()])
            usleep(1_500_000)
            #expect(try Self.counter(agent, "size") == 3, "a pinned size holds under load")
        }

        @Test func autoSizeIsCappedByTheUpstream() throws {
            let upstream = try Upstream.role("pa_autosize")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = "auto"
                """)
            #expect(eventually { ((try? Self.counter(agent, "upstream_available")) ?? -1) > 0 })
            let available = try Self.counter(agent, "upstream_available")
            let formula = try Self.counter(agent, "formula_size")
            #expect((5...50).contains(formula))
            #expect(try Self.counter(agent, "size") == min(formula, available), "one pool: its share is everything")
        }

        @Test func healthIsDownForAnUnreachableUpstreamAndOkOtherwise() throws {
            let good = try Upstream.role("pa_health")
            let deadPort = try AgentProcess.freePort()
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(good)"
                min_idle = 1

                [pools.dead]
                upstream = "host=127.0.0.1 port=\(deadPort) user=nobody dbname=dead"
                min_idle = 1
                """)
            let health = { try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "health"]) }
            #expect(try eventually(timeout: 10) { try health().output.contains("\"pool\":\"dead\",\"status\":\"down\"") })
            #expect(try health().output.contains("\"pool\":\"postgres\",\"status\":\"ok\""))
            #expect(try health().output.contains("\"status\":\"degraded\""), "one pool down of two")
            #expect(try health().status == 1, "poolctl health fails unless ok")
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
