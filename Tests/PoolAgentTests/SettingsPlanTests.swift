// Which set_config calls make a server match one client: its startup settings before login, its reported values after.

import Testing
@testable import PoolAgent

@Suite struct SettingsPlanTests {
    /// ParameterStatus values of a fresh PostgreSQL 17 server.
    static let freshServer: [String: String] = [
        "application_name": "", "client_encoding": "UTF8", "DateStyle": "ISO, MDY",
        "default_transaction_read_only": "off", "in_hot_standby": "off", "integer_datetimes": "on",
        "IntervalStyle": "postgres", "is_superuser": "off", "scram_iterations": "4096",
        "search_path": "\"$user\", public", "server_encoding": "UTF8", "server_version": "17.2",
        "session_authorization": "app", "standard_conforming_strings": "on", "TimeZone": "Etc/UTC",
    ]

    func plan(
        expected: [String: String]? = nil,
        startup: [(String, String)] = [],
        server: [String: String] = Self.freshServer,
        applied: [String: String] = [:]
    ) -> SettingsPlan {
        SettingsPlan(expected: expected, startup: startup, server: server, applied: applied)
    }

    /// The calls as `name=value`, in the order they run.
    func sets(_ plan: SettingsPlan) -> [String] {
        plan.sets.map { "\($0.0)=\($0.1)" }
    }

    func server(_ changes: [String: String]) -> [String: String] {
        Self.freshServer.merging(changes) { $1 }
    }

    // MARK: Before login

    @Test func beforeLoginReportedStartupSettingsAreSetOnlyWhereTheServerDiffers() {
        let plan = self.plan(startup: [
            ("application_name", "psql"), ("DateStyle", "ISO, MDY"), ("TimeZone", "Europe/Paris"),
            ("client_encoding", "UTF8"),
        ])
        #expect(self.sets(plan) == ["application_name=psql", "TimeZone=Europe/Paris"])
        #expect(plan.resets.isEmpty)
        #expect(!plan.isEmpty)
    }

    @Test func beforeLoginReportedNamesAreComparedWhateverTheirCase() {
        let plan = self.plan(startup: [
            ("datestyle", "ISO, MDY"), ("TIMEZONE", "Etc/UTC"), ("intervalstyle", "iso_8601"),
        ])
        #expect(self.sets(plan) == ["intervalstyle=iso_8601"], "set under the name the client used")
    }

    @Test func beforeLoginAStartupThatMatchesTheServerNeedsNoQuery() {
        let plan = self.plan(startup: [("application_name", ""), ("client_encoding", "UTF8")])
        #expect(plan.isEmpty)
        #expect(plan.sets.isEmpty)
        #expect(plan.resets.isEmpty)
    }

    @Test func beforeLoginAReportedValueTheClientDidNotAskForIsLeftAlone() {
        // Another client's application_name is still set; this one asked for none, so it sees the server's.
        let plan = self.plan(startup: [("TimeZone", "Etc/UTC")], server: self.server(["application_name": "billing"]))
        #expect(plan.isEmpty)
    }

    // MARK: Settings PostgreSQL does not report

    @Test(arguments: [nil, SettingsPlanTests.freshServer])
    func nonReportedStartupSettingsAreSetUnlessAlreadyApplied(expected: [String: String]?) {
        let plan = self.plan(
            expected: expected,
            startup: [("statement_timeout", "5s"), ("work_mem", "64MB"), ("lock_timeout", "2s")],
            applied: ["statement_timeout": "5s", "lock_timeout": "1s"]
        )
        #expect(self.sets(plan) == ["work_mem=64MB", "lock_timeout=2s"])
        #expect(plan.resets.isEmpty)
    }

    @Test func appliedSettingsAreMatchedWhateverTheCaseOfTheStartupName() {
        let plan = self.plan(startup: [("Statement_Timeout", "5s")], applied: ["statement_timeout": "5s"])
        #expect(plan.isEmpty)
    }

    @Test func aNonReportedSettingIsSetEvenWhenTheServerDefaultMatches() {
        // The agent cannot see the server's value of a setting PostgreSQL does not report.
        let plan = self.plan(startup: [("statement_timeout", "0")])
        #expect(self.sets(plan) == ["statement_timeout=0"])
    }

    // MARK: After login

    @Test func afterLoginOnlySettableReportedParametersThatDifferAreSet() {
        var expected = Self.freshServer
        expected["application_name"] = "worker"
        expected["DateStyle"] = "ISO, DMY"
        expected["search_path"] = "app, public"
        // Values describing the server, and ones the client cannot change with set_config.
        expected["server_version"] = "16.4"
        expected["is_superuser"] = "on"
        expected["session_authorization"] = "admin"
        expected["in_hot_standby"] = "on"
        expected["integer_datetimes"] = "off"
        expected["server_encoding"] = "LATIN1"
        let plan = self.plan(expected: expected)
        #expect(self.sets(plan) == ["DateStyle=ISO, DMY", "application_name=worker", "search_path=app, public"])
        #expect(plan.resets.isEmpty)
    }

    @Test func afterLoginEverySettableReportedParameterIsSynced() {
        let expected: [String: String] = [
            "application_name": "a", "client_encoding": "LATIN1", "DateStyle": "SQL, DMY", "IntervalStyle": "iso_8601",
            "TimeZone": "Asia/Tokyo", "standard_conforming_strings": "off", "search_path": "s",
            "default_transaction_read_only": "on",
        ]
        let plan = self.plan(expected: expected)
        #expect(
            Set(plan.sets.map { $0.0.lowercased() })
                == [
                    "application_name", "client_encoding", "datestyle", "intervalstyle", "timezone",
                    "standard_conforming_strings", "search_path", "default_transaction_read_only",
                ])
    }

    @Test func afterLoginTheClientsCurrentValueWinsOverItsStartupValue() {
        // The client logged in with application_name=psql and later ran SET application_name = 'report'.
        let plan = self.plan(
            expected: self.server(["application_name": "report"]),
            startup: [("application_name", "psql")],
            server: self.server(["application_name": "psql"])
        )
        #expect(self.sets(plan) == ["application_name=report"])
    }

    @Test func afterLoginAServerThatAlreadyMatchesNeedsNoQuery() {
        let server = self.server(["application_name": "worker", "TimeZone": "UTC"])
        let startup = [("application_name", "psql"), ("TimeZone", "UTC")]
        let plan = self.plan(expected: server, startup: startup, server: server)
        #expect(plan.isEmpty)
    }

    @Test func afterLoginReportedNamesAreComparedWhateverTheirCase() {
        let plan = self.plan(expected: ["datestyle": "ISO, MDY", "TIMEZONE": "Etc/UTC", "intervalstyle": "iso_8601"])
        #expect(self.sets(plan) == ["intervalstyle=iso_8601"])
    }

    // MARK: Settings left by an earlier client

    @Test func settingsAppliedForAnEarlierClientAreResetInNameOrder() {
        let plan = self.plan(
            expected: Self.freshServer,
            startup: [("work_mem", "64MB")],
            applied: ["statement_timeout": "5s", "work_mem": "64MB", "lock_timeout": "1s"]
        )
        #expect(plan.sets.isEmpty)
        #expect(plan.resets == ["lock_timeout", "statement_timeout"])
        #expect(!plan.isEmpty)
    }

    @Test func anEarlierClientsSettingsNeverReachTheNextClient() {
        // Transaction mode: client A and client B take turns on one server.
        let clientA: [(String, String)] = [("application_name", "a"), ("statement_timeout", "5s"), ("x.tenant", "1")]
        let expectedA = self.server(["application_name": "a"])
        let clientB: [(String, String)] = [("application_name", "b"), ("x.tenant", "2")]
        let expectedB = self.server(["application_name": "b"])

        let first = self.plan(expected: expectedA, startup: clientA)
        #expect(self.sets(first) == ["statement_timeout=5s", "x.tenant=1", "application_name=a"])
        var applied = first.applied(after: [:])
        #expect(applied == ["statement_timeout": "5s", "x.tenant": "1"])

        let second = self.plan(expected: expectedB, startup: clientB, server: expectedA, applied: applied)
        #expect(self.sets(second) == ["x.tenant=2", "application_name=b"])
        #expect(second.resets == ["statement_timeout"])
        applied = second.applied(after: applied)
        #expect(applied == ["x.tenant": "2"])

        let third = self.plan(expected: expectedA, startup: clientA, server: expectedB, applied: applied)
        #expect(self.sets(third) == ["statement_timeout=5s", "x.tenant=1", "application_name=a"])
        #expect(third.resets.isEmpty)
        #expect(third.applied(after: applied) == ["statement_timeout": "5s", "x.tenant": "1"])

        applied = third.applied(after: applied)
        let again = self.plan(expected: expectedA, startup: clientA, server: expectedA, applied: applied)
        #expect(again.isEmpty, "the same client back on its own server needs no query")
    }

    // MARK: applied(after:)

    @Test func appliedAfterRecordsNonReportedSetsByLowercasedNameAndDropsResets() {
        let previous = ["lock_timeout": "1s", "statement_timeout": "1s"]
        let plan = self.plan(
            startup: [("Statement_Timeout", "5s"), ("application_name", "psql"), ("work_mem", "64MB")],
            applied: previous
        )
        #expect(self.sets(plan) == ["Statement_Timeout=5s", "application_name=psql", "work_mem=64MB"])
        #expect(plan.resets == ["lock_timeout"])
        #expect(plan.applied(after: previous) == ["statement_timeout": "5s", "work_mem": "64MB"])
    }

    @Test func appliedAfterAnEmptyPlanIsWhatWasThere() {
        let previous = ["statement_timeout": "5s"]
        let plan = self.plan(startup: [("statement_timeout", "5s")], applied: previous)
        #expect(plan.isEmpty)
        #expect(plan.applied(after: previous) == previous)
    }

    /// PostgreSQL applies repeated startup settings in order, so the last one is in force.
    @Test func theLastOfRepeatedStartupSettingsIsInForce() {
        // PGOPTIONS='-c application_name=tool' and application_name=psql: options come first in the packet.
        let startup = [
            ("application_name", "tool"), ("application_name", "psql"), ("work_mem", "1MB"), ("work_mem", "2MB"),
        ]
        let server = self.server(["application_name": "psql"])
        let plan = self.plan(startup: startup, server: server, applied: ["work_mem": "2MB"])
        var inForce = ["application_name": "psql", "work_mem": "2MB"]
        for (name, value) in plan.sets { inForce[name.lowercased()] = value }
        #expect(inForce == ["application_name": "psql", "work_mem": "2MB"])
        #expect(plan.applied(after: ["work_mem": "2MB"]) == ["work_mem": "2MB"])
    }

    // MARK: The query

    @Test func theQuerySetsThenResetsInOneImplicitTransaction() {
        let startup = [("application_name", "psql"), ("statement_timeout", "5s")]
        let plan = self.plan(startup: startup, applied: ["x.y": "1"])
        #expect(
            plan.query
                == "SELECT pg_catalog.set_config(E'application_name', E'psql', false), "
                + "pg_catalog.set_config(E'statement_timeout', E'5s', false); RESET \"x.y\""
        )
    }

    @Test func theQueryEscapesQuotesAndBackslashesInNamesAndValues() {
        let plan = self.plan(startup: [
            ("application_name", "O'Brien's \\tool"), ("search_path", "\"my\\schema\", public"),
        ])
        #expect(
            plan.query
                == "SELECT pg_catalog.set_config(E'application_name', E'O''Brien''s \\\\tool', false), "
                + "pg_catalog.set_config(E'search_path', E'\"my\\\\schema\", public', false)"
        )
        let reset = self.plan(applied: ["x.it's\\": "1"])
        #expect(
            reset.query
                == "RESET \"x.it's\\\"" && SettingsPlan.identifier("a\"b") == "\"a\"\"b\""
        )
    }

    @Test(arguments: ["", "plain", "it's", "\\", "\\'", "''", "a\\\\b", "ünï 🐘", "E'x'"])
    func aLiteralReadsBackAsTheOriginalText(text: String) {
        let literal = SettingsPlan.literal(text)
        #expect(literal.hasPrefix("E'") && literal.hasSuffix("'"))
        // Undo E'' escaping: \\ is one backslash, '' is one quote; a lone quote would end the literal.
        var decoded = ""
        var characters = literal.dropFirst(2).dropLast()
        while let character = characters.popFirst() {
            switch character {
            case "\\":
                #expect(characters.popFirst() == "\\", "a backslash that escapes something else in \(literal)")
                decoded.append("\\")
            case "'":
                #expect(characters.popFirst() == "'", "a quote that ends \(literal) early")
                decoded.append("'")
            default:
                decoded.append(character)
            }
        }
        #expect(decoded == text)
    }

    // MARK: Equality

    @Test func plansAreEqualWhenTheyRunTheSameCallsInTheSameOrder() {
        let plan = self.plan(startup: [("x.a", "1"), ("x.b", "2")], applied: ["x.c": "3"])
        #expect(plan == self.plan(startup: [("x.a", "1"), ("x.b", "2")], applied: ["x.c": "3"]))
        #expect(plan != self.plan(startup: [("x.b", "2"), ("x.a", "1")], applied: ["x.c": "3"]))
        #expect(plan != self.plan(startup: [("x.a", "1"), ("x.b", "3")], applied: ["x.c": "3"]))
        #expect(plan != self.plan(startup: [("x.a", "1"), ("X.B", "2")], applied: ["x.c": "3"]))
        #expect(plan != self.plan(startup: [("x.a", "1"), ("x.b", "2")], applied: ["x.d": "3"]))
        #expect(plan != self.plan(startup: [("x.a", "1"), ("x.b", "2")]))
        #expect(self.plan() == self.plan(startup: [("application_name", "")]))
    }

    // MARK: Settings read back from a server

    @Test func aClientsReadBackSettingsReplaceItsStartupOnesAndResetTheRest() {
        // The client's SETs, read back from the server: they include what its startup asked for.
        let session = ["statement_timeout": "5s", "work_mem": "77MB"]
        let plan = SettingsPlan(
            expected: Self.freshServer, startup: [("statement_timeout", "9s")], server: Self.freshServer,
            applied: ["work_mem": "77MB", "lock_timeout": "1s"], session: session
        )
        #expect(plan.sets.map(\.0) == ["statement_timeout"] && plan.sets.map(\.1) == ["5s"])
        #expect(plan.resets == ["lock_timeout"])
        #expect(plan.applied(after: ["work_mem": "77MB", "lock_timeout": "1s"]) == session)
        #expect(plan.query == "SELECT pg_catalog.set_config(E'statement_timeout', E'5s', false); RESET \"lock_timeout\"")
    }

    @Test func theProbesRowsSplitIntoPinsAndUnreportedSettings() {
        let rows: [[String?]] = [["", "advisory_lock,hold_cursor"], ["work_mem", "77MB"], ["DateStyle", "German, DMY"], ["x.y", nil]]
        let result = SessionProbe.Result(rows: rows, reported: ["DateStyle": "German, DMY"])
        #expect(result.pins == [.advisoryLock, .holdCursor])
        #expect(result.settings == ["work_mem": "77MB"])
        #expect(SessionProbe.Result(rows: [["", ""]], reported: [:]).pins.isEmpty)
        #expect(SessionProbe.query(listens: true, sessionAuthorization: "o'k").contains("<> E'o''k'"))
    }
}
