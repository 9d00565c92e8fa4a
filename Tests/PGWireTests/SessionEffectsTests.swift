// The session-state lexer: what a statement text may do to a server's session, read from its tokens.

import PGWire
import Testing

@Suite struct SessionEffectsTests {
    private func scan(_ text: String) -> SessionEffects { SessionEffects.scan(Array(text.utf8)) }

    @Test func ordinaryStatementsHaveNoEffects() {
        for text in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1", "INSERT INTO t VALUES (1, 'SET x = 1')",
            "UPDATE t SET n = n + 1", "BEGIN", "SELECT pg_advisory_xact_lock(1)", "ALTER ROLE bob SET work_mem = '1MB'",
            "CREATE TABLE temp_results (n int)", "SELECT 'LISTEN x'", "SELECT \"listen\" FROM t", "", ";;",
            "SELECT $1::int", "SET LOCAL work_mem = '1MB'", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "CREATE FUNCTION f() RETURNS int SET work_mem = '1MB' AS 'SELECT 1' LANGUAGE sql", "PREPARE TRANSACTION 'x'",
        ] {
            #expect(self.scan(text).isEmpty, "\(text)")
        }
    }

    @Test func thePrefilterPassesEverydayStatementsAndNeverHidesAnEffect() {
        for text in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 62158;", "  select 1 ;\n", "INSERT INTO t VALUES ($1, $2)",
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", "BEGIN", "WITH a AS (SELECT 1) SELECT * FROM a", "",
        ] {
            #expect(SessionEffects.certainlyNone(Array(text.utf8)), "\(text)")
        }
        for text in [
            "SELECT 1; SET x = 1", "select pg_advisory_lock(1)", "SELECT * INTO TEMP t FROM x", "set work_mem = 1",
            "/* c */ SET x = 1", "SELECT set_config('a', 'b', false)", "\"set\" x", "DO $$ BEGIN END $$",
        ] {
            #expect(!SessionEffects.certainlyNone(Array(text.utf8)), "\(text)")
        }
        // Random texts from the fragments that matter: the prefilter's answer never differs from the lexer's.
        let fragments = [
            "SELECT", "select", "SeT", "set", "LISTEN", "unlisten", "reset", "DISCARD", "deallocate", "close", "drop",
            "COMMIT", "end", "rollback", "abort", "prepare", "DECLARE", "create", "do", "temp", "TEMPORARY", "into",
            "INTO", "with", "hold", "on", "pg_advisory_lock", "PG_ADVISORY_UNLOCK", "set_config", "(", ")", ";", " ",
            "\n", "'", "''", "\"", "E'\\''", "$$", "$x$", "$1", "--", "/*", "*/", "*", "x", "t", "1", "\0", "é",
        ]
        var generator = SystemRandomNumberGenerator()
        var agreeing = 0
        for _ in 0..<20_000 {
            let count = Int.random(in: 0...8, using: &generator)
            let text = (0..<count).map { _ in fragments.randomElement(using: &generator)! }.joined(separator: Bool.random(using: &generator) ? " " : "")
            let bytes = Array(text.utf8)
            if SessionEffects.certainlyNone(bytes) {
                #expect(SessionEffects.lex(bytes).isEmpty, "\(text)")
            }
            #expect(SessionEffects.scan(bytes) == SessionEffects.lex(bytes), "\(text)")
            agreeing += 1
        }
        #expect(agreeing == 20_000)
    }

    @Test func listenAndUnlistenNameChannelsAsPostgreSQLDoes() {
        let effects = self.scan("LISTEN Jobs; listen \"Mixed \"\"Case\"\"\"; UNLISTEN jobs; UNLISTEN *")
        #expect(effects.listens == [.listen("jobs"), .listen("Mixed \"Case\""), .unlisten("jobs"), .unlistenAll])
        let long = String(repeating: "é", count: 40)  // 80 bytes: cut to 62, never inside a character
        #expect(self.scan("LISTEN \"\(long)\"").listens == [.listen(String(repeating: "é", count: 31))])
    }

    @Test func sessionLevelStateIsFlaggedWherePostgreSQLWouldKeepIt() {
        #expect(self.scan("SELECT pg_catalog.pg_advisory_lock(42)").pins == .advisoryLock)
        #expect(self.scan("select PG_TRY_ADVISORY_LOCK_SHARED (1, 2)").pins == .advisoryLock)
        #expect(self.scan("CREATE TEMP TABLE t (n int)").pins == .temporaryTable)
        #expect(self.scan("create global temporary table t (n int)").pins == .temporaryTable)
        #expect(self.scan("CREATE TEMP TABLE t (a int, b text, c date, d int) ON COMMIT DROP").isEmpty, "gone with its transaction")
        #expect(self.scan("SELECT * INTO TEMP t FROM generate_series(1, 3)").pins == .temporaryTable)
        #expect(self.scan("DECLARE c CURSOR WITH HOLD FOR SELECT 1").pins == .holdCursor)
        #expect(self.scan("DECLARE c CURSOR FOR SELECT 1").isEmpty)
        #expect(self.scan("PREPARE q AS SELECT 1").pins == .sqlPrepare)
        #expect(self.scan("SET ROLE bob").pins == .role)
        #expect(self.scan("SET SESSION AUTHORIZATION bob").pins == .role)
        #expect(self.scan("SET work_mem = '77MB'").changesSettings)
        #expect(self.scan("SET SESSION search_path TO a, b").changesSettings)
        #expect(self.scan("SELECT set_config('work_mem', '1MB', false)").changesSettings)
        #expect(self.scan("RESET ALL").changesSettings && self.scan("DISCARD ALL").mayRelease)
        #expect(self.scan("DO $$BEGIN PERFORM 1; END$$").changesSettings)
        for text in ["SELECT pg_advisory_unlock(1)", "SELECT pg_advisory_unlock_all()", "DEALLOCATE q", "CLOSE c", "DROP TABLE t", "COMMIT", "END", "ROLLBACK"] {
            #expect(self.scan(text).mayRelease, "\(text)")
        }
    }

    @Test func stringsCommentsAndQuotedIdentifiersHideWhatIsInThem() {
        #expect(self.scan("SELECT 'pg_advisory_lock(1)', $$SET x = 1; LISTEN y$$, $t$ ; CREATE TEMP $ $t$").isEmpty)
        #expect(self.scan("SELECT E'\\'; LISTEN x; '").isEmpty)
        #expect(self.scan("SELECT 1 /* ; LISTEN x /* nested */ ; LISTEN y */ -- ; LISTEN z\n").isEmpty)
        #expect(self.scan("SELECT \"pg_advisory_lock\"").isEmpty, "a quoted name without a call")
        #expect(self.scan("SELECT 1; /* c */ LISTEN after").listens == [.listen("after")])
        #expect(self.scan("SELECT 'it''s'; SET work_mem = 1").changesSettings, "a doubled quote does not end the string")
        #expect(self.scan("SELECT e'x' ; LISTEN a").listens == [.listen("a")])
    }

    @Test func aParseBodyIsReadPastItsStatementName() {
        var body = Array("s1".utf8) + [0] + Array("LISTEN q".utf8) + [0, 0, 0]
        body.withUnsafeBytes { #expect(SessionEffects.scan(parseBody: $0).listens == [.listen("q")]) }
        body = [0] + Array("SELECT 1".utf8) + [0, 0, 0]
        body.withUnsafeBytes { #expect(SessionEffects.scan(parseBody: $0).isEmpty) }
        body = Array("no terminator".utf8)
        body.withUnsafeBytes { #expect(SessionEffects.scan(parseBody: $0).isEmpty) }
    }
}
