// PgBouncer's admin console (the database `pgbouncer`): its SHOW tables, its commands through the control plane,
// who may use it, and Debian's prometheus-pgbouncer-exporter scraping it unchanged.

import Foundation
import Testing

extension Integration {
    @Suite struct AdminConsole {
        static func agent(_ role: String) throws -> AgentProcess {
            let upstream = try Upstream.role(role)
            return try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 3
                max_overflow = 1
                """, agentExtra: """
                admin_users = ["postgres"]
                stats_users = ["watcher"]
                """)
        }

        @Test func showTablesHavePgBouncersColumnsAndCountWhatHappened() throws {
            let agent = try Self.agent("pa_admin_show")
            let app = try PGConnection(agent.conninfo(extra: "application_name=admin_test_app"))
            for _ in 0..<5 { _ = try app.value("SELECT 1") }
            let console = try PGConnection(agent.conninfo(database: "pgbouncer"))
            #expect(console.parameterStatus("server_version") == "1.18.0/bouncer")

            let pools = try console.records("SHOW POOLS;")
            let pool = try #require(pools.first { $0["database"] == "postgres" })
            #expect(pool["user"] == "pa_admin_show")
            #expect(pool["cl_active"] == "1" && pool["cl_waiting"] == "0" && pool["pool_mode"] == "transaction")
            #expect(pools.first?.keys.count == 16)
            #expect(pools.contains { $0["database"] == "pgbouncer" && $0["cl_active"] == "1" })

            let stats = try #require(try console.records("show stats").first { $0["database"] == "postgres" })
            #expect(Int(stats["total_xact_count"]!! ) ?? 0 >= 5, "\(stats)")
            #expect(Int(stats["total_query_count"]!!) ?? 0 >= 5)
            #expect(stats["total_requests"] == stats["total_query_count"])
            #expect(Int(stats["total_received"]!!) ?? 0 > 0 && Int(stats["total_sent"]!!) ?? 0 > 0)

            let databases = try #require(try console.records("SHOW DATABASES").first { $0["name"] == "postgres" })
            #expect(databases["pool_size"] == "3" && databases["reserve_pool"] == "1" && databases["database"] == "postgres")
            #expect(databases["force_user"] == "pa_admin_show" && databases["paused"] == "0")

            let lists = try console.records("SHOW LISTS")
            #expect(lists.map { $0["list"]!! } == ["databases", "users", "pools", "free_clients", "used_clients", "login_clients",
                                                    "free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries", "dns_pending"])
            #expect(lists.first { $0["list"] == "used_clients" }?["items"] == "2")

            let clients = try console.records("SHOW CLIENTS")
            #expect(clients.contains { $0["database"] == "postgres" && $0["application_name"] == "admin_test_app" && $0["addr"] == "127.0.0.1" })
            let servers = try console.records("SHOW SERVERS")
            #expect(!servers.isEmpty && servers.allSatisfy { $0["database"] == "postgres" && $0["remote_pid"] != "0" })
            #expect(try console.records("SHOW CONFIG").contains { $0["key"] == "max_client_conn" && $0["value"] == "10000" })
            #expect(try console.value("SHOW VERSION")?.hasPrefix("poolagent ") == true)

            // A bad command is an error and the session goes on.
            #expect { try console.query("SELECT 1") } throws: { ($0 as? PGError)?.sqlState == "08P01" && ($0 as? PGError)?.message.contains("invalid command 'SELECT 1'") == true }
            #expect(try console.value("SHOW VERSION") != nil)
            // The extended protocol is refused and the session closed, as PgBouncer does.
            #expect(throws: PGError.self) { try console.prepare("s", "SHOW POOLS") }
            #expect(throws: PGError.self) { try console.value("SHOW VERSION") }
            let closed = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "list-clients"])
            #expect(closed.output.contains("extended query protocol on the admin console"), "\(closed.output)")
        }

        @Test func commandsGoThroughTheControlPlaneAndNeedAnAdmin() throws {
            let agent = try Self.agent("pa_admin_cmd")
            let app = try PGConnection(agent.conninfo())
            #expect(try app.value("SELECT 1") == "1")
            let console = try PGConnection(agent.conninfo(database: "pgbouncer"))

            _ = try console.query("PAUSE postgres")
            #expect(try console.records("SHOW DATABASES").first { $0["name"] == "postgres" }?["paused"] == "1")
            _ = try console.query("RESUME postgres")
            #expect(try app.value("SELECT 2") == "2")
            _ = try console.query("RECONNECT")
            _ = try console.query("RELOAD;")
            #expect { try console.query("PAUSE nosuch") } throws: { ($0 as? PGError)?.message == "no such database: nosuch" }

            let clientID = try #require(try console.records("SHOW CLIENTS").first { $0["database"] == "postgres" }?["ptr"]??.split(separator: " ").last)
            _ = try console.query("KILL_CLIENT \(clientID)")
            #expect(throws: PGError.self) { try app.value("SELECT 3") }

            // A stats user reads but does not steer; anyone else is not let in.
            let watcher = try PGConnection(agent.conninfo(database: "pgbouncer", user: "watcher"))
            #expect(try !watcher.records("SHOW POOLS").isEmpty)
            #expect { try watcher.query("PAUSE") } throws: { ($0 as? PGError)?.message == "admin access needed" }
            #expect { try PGConnection(agent.conninfo(database: "pgbouncer", user: "mallory")) } throws: {
                ($0 as? PGError)?.message.contains("not allowed") == true
            }
        }

        @Test func aConsoleThatLeavesDuringAPauseOrFloodsWithoutReadingCostsNothing() throws {
            let upstream = try Upstream.role("pa_admin_hostile")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "session"
                size = 1
                """, agentExtra: "admin_users = [\"postgres\"]")
            // A session holds the only server: PAUSE waits for it. The console's client leaves meanwhile.
            let holder = try PGConnection(agent.conninfo())
            #expect(try holder.value("SELECT 1") == "1")
            let leaving = try RawConnection(port: agent.port)
            try leaving.login(database: "pgbouncer")
            leaving.send(RawConnection.query("PAUSE postgres;") + RawConnection.query("SHOW POOLS;"))
            usleep(200_000)
            shutdown(leaving.fd, Int32(SHUT_RDWR))
            usleep(100_000)
            holder.close()
            // The drain ends with the console gone; the agent goes on.
            #expect(try eventually {
                try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "resume"]).status == 0
                    && (try? PGConnection(agent.conninfo()).value("SELECT 2")) == "2"
            }, "\(agent.log)")

            // 3 million queries sent at once (51 MB, answers of about 2 GB) and none read: the agent stops reading
            // and answering, its memory stays put.
            let before = ProtocolFidelity.rss(of: agent.process.processIdentifier)
            let flooding = try RawConnection(port: agent.port)
            try flooding.login(database: "pgbouncer")
            let flood = Array(repeating: RawConnection.query("SHOW CONFIG"), count: 3_000_000).flatMap { $0 }
            let fd = flooding.fd
            let sender = Thread { _ = flood.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
            sender.start()
            usleep(1_500_000)
            let after = ProtocolFidelity.rss(of: agent.process.processIdentifier)
            #expect(after - before < 16 << 20, "RSS \(before >> 20) → \(after >> 20) MiB")
            #expect(try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "health"]).status == 0)
            shutdown(flooding.fd, Int32(SHUT_RDWR))
        }

        @Test func debiansPrometheusPgbouncerExporterScrapesIt() throws {
            let exporter = "/usr/bin/prometheus-pgbouncer-exporter"
            guard FileManager.default.isExecutableFile(atPath: exporter) else {
                if TestEnvironment.isCI { Issue.record("prometheus-pgbouncer-exporter is not installed (scripts/test installs it)") }
                return
            }
            let agent = try Self.agent("pa_admin_exporter")
            let app = try PGConnection(agent.conninfo())
            for _ in 0..<3 { _ = try app.value("SELECT 1") }
            let port = try AgentProcess.freePort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: exporter)
            process.arguments = ["--host", "127.0.0.1", "--port", "\(port)", "--pgbouncer-host", "127.0.0.1",
                                 "--pgbouncer-port", "\(agent.port)", "--pgbouncer-user", "postgres"]
            let log = agent.directory.appendingPathComponent("exporter.log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: log)
            process.standardError = process.standardOutput
            try process.run()
            defer {
                // The test process blocks SIGTERM and its children inherit the mask.
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
            var metrics = ""
            let scraped = eventually(timeout: 20) {
                let fetch = try? Shell.run("/usr/bin/python3", ["-c", "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())", "http://127.0.0.1:\(port)/metrics"])
                metrics = fetch?.status == 0 ? fetch!.output : ""
                return metrics.contains("pgbouncer_active_clients")
            }
            let exporterLog = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            #expect(scraped, "exporter: \(exporterLog)\nagent: \(agent.log)")
            #expect(metrics.contains("pgbouncer_active_clients{database=\"postgres\",user=\"pa_admin_exporter\"} 1.0"), "\(metrics)")
            #expect(metrics.contains("pgbouncer_pool_size{database=\"postgres\"} 3.0"), "\(metrics)")
            #expect(metrics.contains("pgbouncer_requests_total{database=\"postgres\"}"), "\(metrics)")
            #expect(metrics.contains("pgbouncer_used_clients 2.0"), "\(metrics)")
        }
    }
}
