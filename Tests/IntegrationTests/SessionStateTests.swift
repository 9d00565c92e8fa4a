// Session state in transaction mode: LISTEN through the pool's listener, pins, and settings that follow their client.

import Foundation
import Testing

extension Integration {
    @Suite struct SessionState {
        static func agent(_ role: String, size: Int = 1, extra: String = "") throws -> AgentProcess {
            try TransactionPooling.agent(role, size: size, extra: extra)
        }

        static func stats(_ agent: AgentProcess) throws -> [String: Any] {
            let run = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "stats"])
            let object = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any]
            let pools = (object?["result"] as? [String: Any])?["pools"] as? [[String: Any]]
            return pools?.first?["session_state"] as? [String: Any] ?? [:]
        }

        @Test func listenGetsNotifyWhileAnotherClientKeepsTheOnlyServerBusy() throws {
            let agent = try Self.agent("pa_ss_listen", size: 1)
            let listener = try PGConnection(agent.conninfo())
            let worker = try PGConnection(agent.conninfo())
            let notifier = try PGConnection(agent.conninfo())
            try listener.query("LISTEN pa_jobs")
            try listener.query("LISTEN \"Mixed Case\"")
            let work = Thread {
                for i in 0..<50 { _ = try? worker.query("SELECT \(i), pg_sleep(0.002)") }
            }
            work.start()
            try notifier.query("NOTIFY pa_jobs, 'first'")
            try notifier.query("SELECT pg_notify('Mixed Case', 'second')")
            try notifier.query("NOTIFY pa_other, 'not listened'")
            let received = listener.notifications(count: 2, within: 10)
            #expect(received.map(\.channel) == ["pa_jobs", "Mixed Case"], "\(received)")
            #expect(received.map(\.payload) == ["first", "second"])
            #expect(listener.notifications(count: 1, within: 0.3).isEmpty, "nothing for a channel it does not listen on")
            // The listening client holds no server: the others ran on the pool's only one meanwhile.
            #expect(try worker.value("SELECT 1") == "1")
            try listener.query("UNLISTEN pa_jobs")
            try notifier.query("NOTIFY pa_jobs, 'after unlisten'")
            try notifier.query("NOTIFY \"Mixed Case\", 'third'")
            let later = listener.notifications(count: 2, within: 3)
            #expect(later.map(\.payload) == ["third"], "\(later)")
            // One listener connection besides the pool's single server.
            #expect(try Upstream.connections(of: "pa_ss_listen") <= 2)
            let state = try Self.stats(agent)
            let relay = state["listener"] as? [String: Any]
            #expect(relay?["connected"] as? Bool == true)
            #expect(relay?["channels"] as? Int == 1)
            #expect((relay?["notifications"] as? Int ?? 0) >= 3)
            withExtendedLifetime(work) {}
        }

        @Test func aClientThatStopsReadingIsClosedWithoutHoldingBackOthers() throws {
            let agent = try Self.agent("pa_ss_slow", size: 1, extra: "notification_queue = 5")
            let stalled = try RawConnection(port: agent.port)
            try stalled.login()
            stalled.send(RawConnection.query("LISTEN pa_flood"))
            #expect(stalled.readTypes(untilReady: 1).last == "Z")
            let reader = try PGConnection(agent.conninfo())
            try reader.query("LISTEN pa_flood")
            let notifier = try PGConnection(agent.conninfo())
            // 20 MB of distinct notifications: far more than the stalled client's socket buffers hold.
            try notifier.query("SELECT pg_notify('pa_flood', g || repeat('x', 7000)) FROM generate_series(1, 3000) g")
            let received = reader.notifications(count: 3000, within: 30)
            #expect(received.count == 3000, "the reading client got every notification")
            #expect(received.first?.payload.hasPrefix("1x") == true && received.last?.payload.hasPrefix("3000x") == true)
            let overflowed = try Self.stats(agent)["listener"] as? [String: Any]
            #expect(overflowed?["queue_overflows"] as? Int == 1, "\(String(describing: overflowed))")
            let rest = stalled.readUntilClosed(limit: 64 << 20)
            #expect(rest.closed)
            #expect(RawConnection.firstError(in: rest.bytes)?.sqlState == "54000", "\(String(describing: RawConnection.firstError(in: rest.bytes)))")
        }

        @Test func advisoryLockKeepsOneBackendUntilUnlocked() throws {
            let agent = try Self.agent("pa_ss_lock", size: 1)
            let holder = try PGConnection(agent.conninfo())
            let other = try PGConnection(agent.conninfo(extra: "options='-c statement_timeout=0'"))
            #expect(try holder.value("SELECT pg_advisory_lock(4242)") == "")
            let pid = try holder.value("SELECT pg_backend_pid()")
            for _ in 0..<10 { #expect(try holder.value("SELECT pg_backend_pid()") == pid) }
            let pinned = try Self.stats(agent)
            #expect(pinned["pinned"] as? Int == 1)
            #expect((pinned["pins"] as? [String: Int])?["advisory_lock"] == 1)
            let clients = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "list-clients"])
            #expect(clients.output.contains("\"advisory_lock\""), "\(clients.output)")
            // The lock is the holder's: the server keeps it across statements.
            #expect(try holder.value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()") == "1")
            #expect(try holder.value("SELECT pg_advisory_unlock(4242)") == "t")
            #expect(try other.value("SELECT 1") == "1", "unlocked, the server serves others again")
            #expect(try Self.stats(agent)["pinned"] as? Int == 0)
            // A holder that leaves takes its lock with it.
            let leaver = try PGConnection(agent.conninfo())
            try leaver.query("SELECT pg_advisory_lock(4343)")
            leaver.close()
            let admin = try Upstream.admin()
            var held = "1"
            for _ in 0..<50 where held != "0" {
                usleep(50_000)
                held = try admin.value("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4343") ?? "?"
            }
            #expect(held == "0")
            #expect(try other.value("SELECT pg_try_advisory_lock(4343)") == "t")
            #expect(try other.value("SELECT pg_advisory_unlock_all()") == "")
        }

        @Test func setFollowsItsClientAndNeverReachesAnother() throws {
            let agent = try Self.agent("pa_ss_set", size: 1)
            let a = try PGConnection(agent.conninfo())
            let b = try PGConnection(agent.conninfo())
            let c = try PGConnection(agent.conninfo(extra: "options='-c statement_timeout=7s'"))
            let defaultWorkMem = try b.value("SHOW work_mem")
            try a.query("SET work_mem = '77MB'")
            try a.query("SET search_path = pg_catalog, public")
            for _ in 0..<5 {
                #expect(try a.value("SHOW work_mem") == "77MB")
                #expect(try b.value("SHOW work_mem") == defaultWorkMem)
                #expect(try c.value("SHOW work_mem") == defaultWorkMem)
                #expect(try a.value("SHOW search_path") == "pg_catalog, public")
                #expect(try b.value("SHOW search_path") == "\"$user\", public")
                #expect(try c.value("SHOW statement_timeout") == "7s")
                #expect(try a.value("SHOW statement_timeout") == "0")
            }
            try a.query("SELECT set_config('statement_timeout', '3s', false)")
            #expect(try a.value("SHOW statement_timeout") == "3s")
            #expect(try b.value("SHOW statement_timeout") == "0")
            // SET LOCAL ends with its transaction.
            try b.query("BEGIN; SET LOCAL work_mem = '5MB'")
            #expect(try b.value("SHOW work_mem") == "5MB")
            try b.query("COMMIT")
            #expect(try b.value("SHOW work_mem") == defaultWorkMem)
            try a.query("RESET work_mem")
            #expect(try a.value("SHOW work_mem") == defaultWorkMem)
            #expect(try a.value("SHOW statement_timeout") == "3s")
            try a.query("RESET ALL")
            #expect(try a.value("SHOW statement_timeout") == "0")
            #expect(try Self.stats(agent)["pinned"] as? Int == 0, "settings never pin")
        }

        @Test func temporaryTablesHoldCursorsAndSQLPreparePinUntilDropped() throws {
            let agent = try Self.agent("pa_ss_temp", size: 2)
            let client = try PGConnection(agent.conninfo())
            let other = try PGConnection(agent.conninfo())
            try client.query("CREATE TEMP TABLE pa_scratch (n int)")
            try client.query("INSERT INTO pa_scratch SELECT generate_series(1, 10)")
            #expect(try client.value("SELECT sum(n) FROM pa_scratch") == "55")
            try client.query("DECLARE pa_c CURSOR WITH HOLD FOR SELECT n FROM pa_scratch ORDER BY n")
            #expect(try client.value("FETCH 1 FROM pa_c") == "1")
            #expect(try other.value("SELECT 1") == "1")
            #expect(try client.value("FETCH 1 FROM pa_c") == "2")
            try client.query("PREPARE pa_q AS SELECT $1::int * 2")
            #expect(try client.value("EXECUTE pa_q(21)") == "42")
            let reasons = try Self.stats(agent)["pins"] as? [String: Int]
            #expect(reasons?["temporary_table"] == 1 && reasons?["hold_cursor"] == 1 && reasons?["sql_prepare"] == 1, "\(String(describing: reasons))")
            try client.query("CLOSE pa_c")
            try client.query("DEALLOCATE pa_q")
            try client.query("DROP TABLE pa_scratch")
            #expect(try Self.stats(agent)["pinned"] as? Int == 0)
            let unpins = try Self.stats(agent)["unpins"] as? [String: Int]
            #expect(unpins?["temporary_table"] == 1 && unpins?["hold_cursor"] == 1 && unpins?["sql_prepare"] == 1)
        }

        @Test func pinLimitsRefuseWithClearErrors() throws {
            // max_pinned 1 of 2: the second pin is refused; the first client stays pinned.
            let agent = try Self.agent("pa_ss_limit", size: 2, extra: "max_pinned = 1\npin_timeout = \"1s\"")
            let first = try PGConnection(agent.conninfo())
            let second = try PGConnection(agent.conninfo())
            try first.query("SELECT pg_advisory_lock(1)")
            do {
                try second.query("SELECT pg_advisory_lock(2)")
                Issue.record("a second pin past max_pinned was allowed")
            } catch let error as PGError {
                #expect(error.sqlState == "53300", "\(error)")
                #expect(error.message.contains("max_pinned 1"), "\(error)")
            }
            #expect(try second.value("SELECT 2") == "2", "the refused client stays connected")
            // pin_timeout: the pinned client, idle, is disconnected and its lock released.
            sleep(3)
            #expect(throws: (any Error).self) { try first.query("SELECT 1") }
            #expect(try second.value("SELECT pg_try_advisory_lock(1)") == "t")
            try second.query("SELECT pg_advisory_unlock_all()")

            let refusing = try Self.agent("pa_ss_refuse", size: 2, extra: "pin = \"refuse\"")
            let client = try PGConnection(refusing.conninfo())
            do {
                try client.query("BEGIN; SELECT pg_advisory_lock(3)")
                Issue.record("pin = refuse allowed a session lock")
            } catch let error as PGError {
                #expect(error.sqlState == "0A000", "\(error)")
            }
            #expect(try client.value("SELECT 1") == "1", "the refused query ran nothing, BEGIN included")
            #expect(try client.value("SELECT pg_advisory_xact_lock(3)::text") == "")
            let closing = try Self.agent("pa_ss_close", size: 2, extra: "pin = \"close\"")
            let doomed = try PGConnection(closing.conninfo())
            #expect(throws: (any Error).self) { try doomed.query("CREATE TEMP TABLE pa_t (n int)") }
            #expect(throws: (any Error).self) { try doomed.query("SELECT 1") }
        }

        @Test(arguments: ["listeners", "state"])
        func pythonDrivers(scenario: String) throws {
            guard let python = TestEnvironment.python else {
                if TestEnvironment.isCI { Issue.record("POOLAGENT_TEST_PYTHON is not set; run scripts/test") }
                return
            }
            let agent = try Self.agent("pa_ss_py_\(scenario)", size: 2, extra: "max_pinned = 1\npin_timeout = \"2s\"")
            let script = URL(fileURLWithPath: TestEnvironment.driversScript).deletingLastPathComponent()
                .appendingPathComponent("session_state.py").path
            let run = try Shell.run(python, [script, scenario, String(agent.port)])
            #expect(run.status == 0, "\(run.output)")
            #expect(run.output.contains("\(scenario) ok"), "\(run.output)")
        }
    }
}
