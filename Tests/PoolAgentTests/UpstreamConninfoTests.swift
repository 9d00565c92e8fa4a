// The upstream conninfo: parsed by libpq, its TLS settings checked as libpq would, settings carried in `options`.

import Testing

#if canImport(Glibc)
import Glibc
#endif
@testable import PoolAgent

@Suite struct UpstreamConninfoTests {
    @Test func connectParametersKeepTLSAndCarrySettings() throws {
        let conninfo = try UpstreamConninfo(parsing: "host=/run/pg port=5433 user=app password=secret sslmode=verify-full options='-c geqo=off'")
        let parameters = conninfo.connectParameters(
            poolName: "app",
            serverSettings: [("jit", "off"), ("search_path", "a, b")],
            connectTimeout: .milliseconds(2500)
        )
        let byName = Dictionary(parameters, uniquingKeysWith: { _, last in last })
        #expect(byName["sslmode"] == "verify-full", "libpq's TLS settings reach libpq as they are")
        #expect(byName["gssencmode"] == "disable")
        #expect(byName["dbname"] == "app", "the pool name is the default database")
        #expect(byName["connect_timeout"] == "3")
        #expect(byName["options"] == "-c geqo=off -c jit=off -c search_path=a,\\ b")
        #expect(parameters.filter { $0.0 == "sslmode" }.count == 1)
        let plain = try UpstreamConninfo(parsing: "host=db").connectParameters(poolName: "app", serverSettings: [], connectTimeout: .seconds(5))
        #expect(!plain.contains { $0.0 == "sslmode" }, "no sslmode: libpq's default (prefer, or PGSSLMODE)")
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

    @Test func redactedHidesThePasswords() throws {
        let conninfo = try UpstreamConninfo(parsing: "postgresql://app:s3cret@db.example:5432/app?sslpassword=k3y")
        #expect(!conninfo.redacted.contains("s3cret"))
        #expect(!conninfo.redacted.contains("k3y"))
        #expect(conninfo.redacted.contains("password=********"))
        #expect(conninfo.redacted.contains("host=db.example"))
    }

    @Test func libpqsTLSVocabularyIsAccepted() throws {
        for text in [
            "host=/tmp sslmode=disable gssencmode=disable",
            "host=db sslmode=require",
            "host=db sslmode=allow channel_binding=prefer",
            "host=db sslmode=verify-ca sslrootcert=/dev/null sslcrl=/dev/null sslsni=0",
            "host=db sslmode=verify-full sslrootcert=/dev/null ssl_min_protocol_version=tlsv1.3 channel_binding=require",
            "postgresql://db/app?sslmode=require&sslcert=/dev/null&sslkey=/dev/null",
        ] {
            let conninfo = try UpstreamConninfo(parsing: text)
            #expect(throws: Never.self, "\(text)") { try conninfo.checkFiles() }
        }
    }

    @Test(arguments: [
        ("host=db sslmode=sometimes", "sslmode: invalid value \"sometimes\""),
        ("host=db channel_binding=always", "channel_binding: invalid value"),
        ("host=db sslsni=yes", "sslsni: invalid value"),
        ("host=db ssl_max_protocol_version=TLSv2", "ssl_max_protocol_version: invalid value"),
        ("host=db sslmode=disable channel_binding=require", "channel_binding: require needs TLS"),
        ("host=db gssencmode=prefer", "gssencmode:"),
        ("host=db replication=database", "replication connection"),
    ])
    func settingsLibpqWouldRefuseAreRefusedWithTheirKey(text: String, message: String) {
        #expect(throws: Error.self) { try UpstreamConninfo(parsing: text) }
        do {
            _ = try UpstreamConninfo(parsing: text)
        } catch {
            #expect(error.description.contains(message), "\(error.description)")
        }
    }

    @Test func filesAreCheckedAsLibpqWill() throws {
        let missing = "/nonexistent/file.pem"
        // What libpq refuses when it connects is refused now, with the key.
        for (text, keyword) in [
            ("host=db sslmode=verify-full sslrootcert=\(missing)", "sslrootcert"),
            ("host=db sslmode=verify-ca sslrootcert=\(missing)", "sslrootcert"),
            ("host=db sslmode=require sslcert=/dev/null sslkey=\(missing)", "sslkey"),
        ] {
            let conninfo = try UpstreamConninfo(parsing: text)
            #expect(throws: UpstreamConninfoError.setting(keyword, "cannot read \"\(missing)\": No such file or directory"), "\(text)") {
                try conninfo.checkFiles()
            }
        }
        // What libpq goes on without is accepted: a missing client certificate or CRL, and roots that a
        // non-verifying sslmode does not use.
        for text in [
            "host=db sslmode=require sslrootcert=\(missing)",
            "host=db sslmode=prefer sslcert=\(missing) sslkey=\(missing)",
            "host=db sslmode=require sslcrl=\(missing)",
            "host=db sslrootcert=system sslmode=verify-full",
        ] {
            let conninfo = try UpstreamConninfo(parsing: text)
            #expect(throws: Never.self, "\(text)") { try conninfo.checkFiles() }
        }
    }

    @Test func systemRootsMeanVerifyFull() throws {
        let conninfo = try UpstreamConninfo(parsing: "host=db.example sslrootcert=system")
        #expect(conninfo.sslMode == "verify-full" || conninfo.sslMode == Self.environmentMode)
        if LibPQ.version < 160_000 {
            // libpq 15 reads "system" as a file name: the agent gives it the machine's roots, as libpq 16 would.
            #expect(conninfo["sslrootcert"] == UpstreamConninfo.systemRoots)
            #expect(conninfo["sslmode"] == "verify-full")
            #expect(throws: UpstreamConninfoError.self) { try UpstreamConninfo(parsing: "host=db sslrootcert=system sslmode=require") }
        }
    }

    private static var environmentMode: String? { getenv("PGSSLMODE").map { String(cString: $0) } }
}
