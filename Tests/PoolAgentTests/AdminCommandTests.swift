// The admin console's command parser: PgBouncer's words, any case, quoted names, one optional semicolon.

import Testing
@testable import PoolAgent

@Suite struct AdminCommandTests {
    @Test(arguments: [
        ("SHOW POOLS;", AdminCommand.show("pools")),
        ("  show stats  ; ", .show("stats")),
        ("Show Stats_Totals", .show("stats_totals")),
        ("PAUSE", .pause(nil)),
        ("pause app;", .pause("app")),
        ("PAUSE \"My Db\"", .pause("My Db")),
        ("resume app", .resume("app")),
        ("RECONNECT", .reconnect(nil)),
        ("RELOAD;", .reload),
        ("KILL_CLIENT 42", .killClient(42)),
    ])
    func commandsParse(text: String, expected: AdminCommand) {
        #expect(AdminCommand(parsing: text) == expected)
    }

    @Test(arguments: [
        "", ";", "SELECT 1", "SHOW", "SHOW FOO", "SHOW POOLS; SHOW STATS", "SHOW POOLS;;", "PAUSE a b",
        "RELOAD now", "KILL_CLIENT", "KILL_CLIENT x", "KILL_CLIENT -1", "PAUSE \"\"", "PAUSE \"open", "SHOW-POOLS",
        "SHOW\u{0}POOLS", "PAUSE app'", "ŠHOW POOLS",
    ])
    func otherTextIsNoCommand(text: String) {
        #expect(AdminCommand(parsing: text) == nil)
    }

    @Test func onlyShowIsReadOnly() {
        #expect(AdminCommand.show("pools").readOnly)
        #expect(!AdminCommand.pause(nil).readOnly && !AdminCommand.reload.readOnly && !AdminCommand.killClient(1).readOnly)
    }
}
