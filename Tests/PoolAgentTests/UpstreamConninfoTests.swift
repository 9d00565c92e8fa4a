// The upstream conninfo: parsed by libpq, forced to plaintext, settings carried in `options`.

import Testing
@testable import PoolAgent

@Suite struct UpstreamConninfoTests {
    @Test func connectParametersForcePlaintextAndCarrySettings() throws {
        let conninfo = try UpstreamConninfo(parsing: "host=/run/pg port=5433 user=app password=secret options='-c geqo=off'")
        let parameters = conninfo.connectParameters(
            poolName: "app",
            serverSettings: [("jit", "off"), ("search_path", "a, b")],
            connectTimeout: .milliseconds(2500)
        )
        let byName = Dictionary(parameters, uniquingKeysWith: { _, last in last })
        #expect(byName["sslmode"] == "disable")
        #expect(byName["gssencmode"] == "disable")
        #expect(byName["dbname"] == "app", "the pool name is the default database")
        #expect(byName["connect_timeout"] == "3")
        #expect(byName["options"] == "-c geqo=off -c jit=off -c search_path=a,\\ b")
        #expect(parameters.filter { $0.0 == "sslmode" }.count == 1)
    }

    @Test func redactedHidesThePassword() throws {
        let conninfo = try UpstreamConninfo(parsing: "postgresql://app:s3cret@db.example:5432/app")
        #expect(!conninfo.redacted.contains("s3cret"))
        #expect(conninfo.redacted.contains("password=********"))
        #expect(conninfo.redacted.contains("host=db.example"))
    }

    @Test func explicitDisableIsAccepted() throws {
        #expect(throws: Never.self) { try UpstreamConninfo(parsing: "host=/tmp sslmode=disable gssencmode=disable") }
    }
}
