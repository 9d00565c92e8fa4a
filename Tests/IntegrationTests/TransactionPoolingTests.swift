// Transaction pooling against real PostgreSQL with real clients: pgbench, libpq, psycopg, asyncpg.

import Foundation
import Testing

extension Integration {
    @Suite struct TransactionPooling {
        static func agent(_ role: String, size: Int = 2, extra: String = "") throws -> AgentProcess {
            let upstream = try Upstream.role(role)
            return try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = \(size)
                wait_timeout = "20s"
                \(extra)
                """)
        }

        @Test(arguments: ["simple", "extended", "prepared"])
        func pgbenchFiftyClientsOnTenServers(protocolMode: String) throws {
            let agent = try Self.agent("pa_txbench_\(protocolMode)", size: 10)
            let admin = try Upstream.admin()
            try admin.query("GRANT pg_read_all_data TO pa_txbench_\(protocolMode)")
            let initialise = try Shell.run("/usr/bin/pgbench", ["-i", "-q", "-s", "1", TestEnvironment.directConninfo])
            #expect(initialise.status == 0, "\(initialise.output)")
            let peak = LockedBox(0)
            let done = LockedBox(false)
            let watcher = Thread {
                while !done.value {
                    if let count = try? Upstream.connections(of: "pa_txbench_\(protocolMode)") { peak.mutate { $0 = max($0, count) } }
                    usleep(100_000)
                }
            }
            watcher.start()
            let bench = try Shell.run("/usr/bin/pgbench", ["-S", "-c", "50", "-j", "2", "-t", "200", "-n", "-M", protocolMode, agent.conninfo()])
            done.mutate { $0 = true }
            #expect(bench.status == 0, "\(bench.output)")
            #expect(bench.output.contains("number of failed transactions: 0"), "\(bench.output)")
            #expect(bench.output.contains("number of transactions actually processed: 10000/10000"), "\(bench.output)")
            #expect(peak.value <= 10, "the server never has more than the pool size from the agent")
        }

        @Test func ledgerHoldsEveryCommittedRowOnce() throws {
            let agent = try Self.agent("pa_ledger", size: 3)
            let admin = try Upstream.admin()
            try admin.query("DROP TABLE IF EXISTS pa_ledger_rows; CREATE TABLE pa_ledger_rows (client int, seq int, PRIMARY KEY (client, seq))")
            try admin.query("GRANT ALL ON pa_ledger_rows TO pa_ledger")
            let clients = 16
            let transactions = 40
            let results = concurrently(clients) { client in
                let connection = try PGConnection(agent.conninfo())
                for seq in 0..<transactions {
                    try connection.query("BEGIN")
                    try connection.query("INSERT INTO pa_ledger_rows VALUES (\(client), \(seq))")
                    if seq % 5 == 0 { try connection.query("SELECT pg_sleep(0.001)") }
                    try connection.query("COMMIT")
                }
                return true
            }
            for result in results { #expect(try result.get()) }
            #expect(try admin.value("SELECT count(*) FROM pa_ledger_rows") == "\(clients * transactions)")
            #expect(try admin.value("SELECT count(DISTINCT (client, seq)) FROM pa_ledger_rows") == "\(clients * transactions)")
            #expect(try Upstream.connections(of: "pa_ledger") <= 3)
        }

        @Test func clientsShareServersButNotSettings() throws {
            let agent = try Self.agent("pa_txsettings", size: 1)
            let a = try PGConnection(agent.conninfo(extra: "application_name=alpha"))
            let b = try PGConnection(agent.conninfo(extra: "application_name=beta"))
            try a.query("SET DateStyle = 'German'")
            try a.query("SET TimeZone = 'Pacific/Auckland'")
            for _ in 0..<5 {
                #expect(try a.value("SHOW DateStyle") == "German, DMY")
                #expect(try b.value("SHOW DateStyle") == "ISO, MDY")
                #expect(try a.value("SHOW application_name") == "alpha")
                #expect(try b.value("SHOW application_name") == "beta")
                #expect(try b.value("SHOW TimeZone") != "Pacific/Auckland")
                #expect(try a.value("SELECT pg_backend_pid()") == b.value("SELECT pg_backend_pid()"), "one server serves both")
            }
            #expect(b.parameterStatus("DateStyle") == "ISO, MDY", "b never received a's ParameterStatus")
            #expect(a.parameterStatus("DateStyle") == "German, DMY")
        }

        @Test func eachLoginIsToldItsOwnSettingsWhenTheLastOnesAreReused() throws {
            // A login with the same startup settings as the one before reuses what that one was told; one with
            // other settings must not.
            let agent = try Self.agent("pa_txlogins", size: 1)
            let logins: [(extra: String, app: String, timeout: String)] = [
                ("application_name=alpha", "alpha", "0"),
                ("application_name=alpha", "alpha", "0"),
                ("application_name=beta", "beta", "0"),
                ("application_name=beta options='-c statement_timeout=5s'", "beta", "5s"),
                ("application_name=beta options='-c statement_timeout=5s'", "beta", "5s"),
                ("application_name=beta options='-c statement_timeout=7s'", "beta", "7s"),
                ("application_name=alpha", "alpha", "0"),
            ]
            var open: [PGConnection] = []
            for login in logins {
                let client = try PGConnection(agent.conninfo(extra: login.extra))
                #expect(client.parameterStatus("application_name") == login.app, "\(login.extra)")
                open.append(client)
            }
            for (client, login) in zip(open, logins) {
                #expect(try client.value("SHOW application_name") == login.app, "\(login.extra)")
                #expect(try client.value("SHOW statement_timeout") == login.timeout, "\(login.extra)")
            }
        }

        @Test func protocolLevelPreparedStatementsFollowTheClient() throws {
            let agent = try Self.agent("pa_txprepared", size: 2, extra: "max_prepared_statements = 3")
            let results = concurrently(6) { client in
                let connection = try PGConnection(agent.conninfo())
                // Every client uses the same names for different statements; with at most 3 statements
                // per server the older ones are evicted and prepared again when used.
                try connection.prepare("s1", "SELECT $1::int + \(client)")
                try connection.prepare("s2", "SELECT $1::text || '-\(client)'")
                for round in 0..<10 {
                    try connection.prepare("r\(round)", "SELECT \(round) + \(client * 100)")
                    #expect(try connection.execPrepared("s1", [String(round)]).first?.first == String(round + client))
                    #expect(try connection.execPrepared("s2", ["r\(round)"]).first?.first == "r\(round)-\(client)")
                    #expect(try connection.execPrepared("r\(round)", []).first?.first == String(round + client * 100))
                    if round > 0 {
                        #expect(try connection.execPrepared("r\(round - 1)", []).first?.first == String(round - 1 + client * 100))
                    }
                }
                #expect(throws: PGError.self, "an unknown name fails as on PostgreSQL") { try connection.execPrepared("nope", []) }
                #expect(try connection.execPrepared("s1", ["1"]).first?.first == String(1 + client), "and the session goes on")
                return true
            }
            for result in results {
                switch result {
                case .success: break
                case .failure(let error): Issue.record("\(error)")
                }
            }
        }

        @Test func copyInAndOutWork() throws {
            let agent = try Self.agent("pa_txcopy", size: 1)
            let admin = try Upstream.admin()
            try admin.query("DROP TABLE IF EXISTS pa_copy_rows; CREATE TABLE pa_copy_rows (id int, name text)")
            try admin.query("GRANT ALL ON pa_copy_rows TO pa_txcopy")
            let input = (1...2000).map { "\($0)\tname \($0)\n" }.joined()
            let copyIn = try Shell.run("/usr/bin/psql", [agent.conninfo(), "-v", "ON_ERROR_STOP=1", "-c", "\\copy pa_copy_rows FROM STDIN"], stdin: input)
            #expect(copyIn.status == 0, "\(copyIn.output)")
            let copyOut = try Shell.run("/usr/bin/psql", [agent.conninfo(), "-At", "-c", "COPY (SELECT * FROM pa_copy_rows ORDER BY id) TO STDOUT"])
            #expect(copyOut.status == 0)
            #expect(copyOut.output == input)
            let client = try PGConnection(agent.conninfo())
            #expect(try client.value("SELECT count(*) FROM pa_copy_rows") == "2000", "the server was released after COPY")
        }

        @Test func errorsInsideTransactionsAndEmptyQueries() throws {
            let agent = try Self.agent("pa_txerrors", size: 1)
            let a = try PGConnection(agent.conninfo())
            let b = try PGConnection(agent.conninfo())
            try a.query("BEGIN")
            #expect(throws: PGError.self) { try a.query("SELECT 1/0") }
            #expect { try a.query("SELECT 1") } throws: { ($0 as? PGError)?.sqlState == "25P02" }
            try a.query("ROLLBACK")
            #expect(try a.query("") == [])
            #expect(try b.value("SELECT 'b runs after a rolled back'") == "b runs after a rolled back")
            #expect(throws: PGError.self) { try a.query("SELECT * FROM no_such_table") }
            #expect(try b.value("SELECT 2") == "2")
        }

        @Test func cancelOfAWaitingClientRemovesItFromTheQueue() throws {
            let agent = try Self.agent("pa_txcancelwait", size: 1)
            let holder = try PGConnection(agent.conninfo())
            try holder.query("BEGIN")
            try holder.query("SELECT 1")
            let waiter = try PGConnection(agent.conninfo())
            try waiter.sendQuery("SELECT 'never ran'")
            usleep(300_000)
            #expect(waiter.cancel())
            #expect { _ = try waiter.finishQuery() } throws: { ($0 as? PGError)?.sqlState == "57014" }
            try holder.query("COMMIT")
            #expect(try waiter.value("SELECT 'runs later'") == "runs later")
        }

        @Test func cancelReachesTheServerRunningTheClientsQuery() throws {
            let agent = try Self.agent("pa_txcancel", size: 2)
            let sleeper = try PGConnection(agent.conninfo())
            try sleeper.sendQuery("SELECT pg_sleep(30)")
            usleep(300_000)
            let started = Date()
            #expect(sleeper.cancel())
            #expect { _ = try sleeper.finishQuery() } throws: { ($0 as? PGError)?.sqlState == "57014" }
            #expect(Date().timeIntervalSince(started) < 5)
            #expect(try sleeper.value("SELECT 1") == "1")
        }

        @Test(arguments: ["psycopg", "asyncpg"])
        func pythonDrivers(driver: String) throws {
            guard let python = TestEnvironment.python else {
                if TestEnvironment.isCI { Issue.record("POOLAGENT_TEST_PYTHON is not set; run scripts/test") }
                return
            }
            let agent = try Self.agent("pa_py_\(driver)", size: 3)
            let run = try Shell.run(python, [TestEnvironment.driversScript, driver, String(agent.port)])
            #expect(run.status == 0, "\(run.output)")
            #expect(run.output.contains("\(driver) ok"), "\(run.output)")
            #expect(try Upstream.connections(of: "pa_py_\(driver)") <= 3)
        }
    }
}
