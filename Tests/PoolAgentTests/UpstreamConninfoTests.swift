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

    @Test func keepalivesUnlessTheConninfoSetsItsOwn() throws {
        let plain = try UpstreamConninfo(parsing: "host=db port=5432").connectParameters(poolName: "app", serverSettings: [], connectTimeout: .seconds(5))
        let byName = Dictionary(plain, uniquingKeysWith: { _, last in last })
        #expect(byName["keepalives"] == "1")
        #expect(byName["keepalives_idle"] == "30")
        #expect(byName["tcp_user_timeout"] == nil, "a zero window must not end a live server")
        let own = try UpstreamConninfo(parsing: "host=db keepalives_idle=120 tcp_user_timeout=0")
            .connectParameters(poolName: "app", serverSettings: [], connectTimeout: .seconds(5))
        #expect(own.filter { $0.0 == "keepalives_idle" }.map(\.1) == ["120"])
        #expect(own.filter { $0.0 == "tcp_user_timeout" }.map(\.1) == ["0"])
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
