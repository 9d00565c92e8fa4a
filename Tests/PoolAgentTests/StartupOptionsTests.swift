// The settings a client asks for at startup, including libpq's `options` switches.

import PGWire
import Testing
@testable import PoolAgent

@Suite struct StartupOptionsTests {
    @Test func plainParametersAndOptionsBecomeSettings() throws {
        let startup = StartupMessage(parameters: [
            ("user", "app"), ("database", "db"), ("application_name", "psql"), ("client_encoding", "UTF8"),
            ("options", "-c search_path=a,b --statement-timeout=5s -cwork_mem=4MB -c x.y=with\\ space"),
            ("_pq_.thing", "1"),
        ])
        let settings = try StartupOptions.settings(of: startup)
        #expect(settings.map { "\($0.0)=\($0.1)" } == [
            "application_name=psql", "client_encoding=UTF8", "search_path=a,b", "statement_timeout=5s",
            "work_mem=4MB", "x.y=with space",
        ])
    }

    @Test(arguments: ["-d 5", "-c", "-c novalue", "--=x", "plain"])
    func unsupportedOptionsAreRefused(options: String) {
        #expect(throws: StartupOptionsError.self) { try StartupOptions.parseOptions(options) }
    }

    @Test func literalsAreSafeWhateverStandardConformingStrings() {
        #expect(SettingsPlan.literal("it's a \\ test") == "E'it''s a \\\\ test'")
    }
}
