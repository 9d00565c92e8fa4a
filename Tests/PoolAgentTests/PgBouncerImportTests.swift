// pgbouncer.ini read as PgBouncer reads it, and converted with PgBouncer's defaults spelled out.

import Testing
@testable import PoolAgent

@Suite struct PgBouncerImportTests {
    let here = IniLocation(file: "t.ini", line: 1)

    /// Converts files given by name and text.
    func convert(_ files: [String: String], userlist: String? = nil) throws -> PgBouncerImport {
        let directory = "/tmp/poolagent-import-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        mkdir(directory, 0o700)
        for (name, text) in files {
            let descriptor = open(directory + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            _ = Array(text.utf8).withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            close(descriptor)
        }
        return try PgBouncerImport(iniPath: directory + "/pgbouncer.ini", userlist: userlist.map { directory + "/" + $0 }, workingDirectory: directory)
    }

    @Test func connectionStringsQuoteAsPgBouncerDoes() throws {
        let pairs = try PgBouncerIni.connectionString("host=a  password='it''s a secret' port=5433", location: here)
        #expect(pairs.map(\.0) == ["host", "password", "port"])
        #expect(pairs[1].1 == "it's a secret")
        #expect(throws: IniError.self) { try PgBouncerIni.connectionString("host=", location: here) }
        #expect(throws: IniError.self) { try PgBouncerIni.connectionString("password='open", location: here) }
        #expect(throws: IniError.self) { try PgBouncerIni.connectionString("hostonly", location: here) }
        #expect(PgBouncerImport.conninfoValue("it's") == "'it\\'s'")
    }

    @Test func numbersAndDurationsReadAsPgBouncerReadsThem() {
        #expect(PgBouncerImport.cInteger("010") == 8)
        #expect(PgBouncerImport.cInteger("0x10") == 16)
        #expect(PgBouncerImport.cInteger("12a") == nil)
        #expect(PgBouncerImport.duration(3600) == "1h")
        #expect(PgBouncerImport.duration(90) == "90s")
        #expect(PgBouncerImport.duration(600) == "10m")
        #expect(PgBouncerImport.duration(1.5) == "1500ms")
        #expect(PgBouncerImport.prefixLength("255.255.255.0") == 24)
        #expect(PgBouncerImport.prefixLength("255.0.255.0") == nil)
        #expect(PgBouncerImport.tomlString("a\"b\\c\u{1}") == "\"a\\\"b\\\\c\\u0001\"")
    }

    @Test func defaultsAreWrittenOutAndASecondHeaderResets() throws {
        let converted = try self.convert([
            "pgbouncer.ini": """
                [pgbouncer]
                default_pool_size = 7
                %include more.ini
                [databases]
                app = host=/tmp user=app
                """,
            "more.ini": "[pgbouncer] ; the listener\r\nlisten_port = 7000\r\n",
        ])
        // The second [pgbouncer] header forgot default_pool_size = 7: PgBouncer's 20 applies.
        #expect(converted.toml.contains("size = 20"))
        #expect(converted.notes.contains { $0.contains("second [pgbouncer] header") && $0.contains("default_pool_size") })
        #expect(converted.toml.contains("listen = []"))
        #expect(converted.toml.contains("unix_socket_dir = \"/tmp\"") && converted.toml.contains("unix_socket_port = 7000"))
        #expect(converted.toml.contains("max_client_conn = 100") && converted.toml.contains("max_lifetime = \"1h\""))
        #expect(converted.toml.contains("wait_timeout = \"2m\"") && converted.toml.contains("tcp = \"md5\""))
        let configuration = try ConfigLoader.parse(converted.toml, file: "converted.toml")
        #expect(configuration.pools["app"]?.size == 20)
        #expect(configuration.maxClientConnections == 100)
    }

    @Test func hbaRulesAndTheTemplateConvert() throws {
        let converted = try self.convert([
            "pgbouncer.ini": """
                [databases]
                * = host=10.0.0.5 user=app
                [pgbouncer]
                listen_addr = *
                auth_type = hba
                auth_hba_file = hba.conf
                autodb_idle_timeout = 600
                """,
            "hba.conf": """
                # comment
                local all all peer
                host app,reports alice 10.0.0.0 255.0.0.0 scram-sha-256
                hostssl all all ::1/128 cert
                host sameuser all all md5
                """,
        ])
        let configuration = try ConfigLoader.parse(converted.toml, file: "converted.toml")
        #expect(configuration.template?.unusedTimeout == .seconds(600))
        #expect(configuration.auth.tcp == .reject && configuration.auth.unix == .reject)
        // The sameuser line cannot be said as a rule: it rejects its connection type rather than let later lines widen.
        #expect(configuration.auth.rules.map(\.method) == [.peer, .scramSHA256, .reject, .reject])
        #expect(configuration.auth.rules[3].connection == "host" && configuration.auth.rules[3].databases == nil)
        #expect(configuration.auth.rules[1].databases == ["app", "reports"] && configuration.auth.rules[1].users == ["alice"])
        #expect(converted.dropped.contains { $0.reason.contains("method cert") })
        #expect(converted.dropped.contains { $0.reason.contains("sameuser") })
        #expect(configuration.listen == [.init(host: "0.0.0.0", port: 6432)])
    }

    @Test func badInputNamesFileAndLine() {
        #expect { try self.convert(["pgbouncer.ini": "[pgbouncer]\nlisten_port = many\n"]) } throws: {
            ($0 as? IniError)?.description.hasSuffix("pgbouncer.ini:2: listen_port: expected an integer, found \"many\"") == true
        }
        #expect { try self.convert(["pgbouncer.ini": "[mystery]\n"]) } throws: { "\($0)".contains("unknown section [mystery]") }
        #expect { try self.convert(["pgbouncer.ini": "[pgbouncer] x\n"]) } throws: { "\($0)".contains("section header") }
        #expect { try self.convert(["pgbouncer.ini": "[users]\nalice = pool_mode\n"]) } throws: { "\($0)".contains("pgbouncer.ini:2") }
        #expect { try self.convert(["pgbouncer.ini": "[databases]\napp = host\n"]) } throws: { "\($0)".contains("pgbouncer.ini:2") }
        #expect { try self.convert(["pgbouncer.ini": "[pgbouncer]\n%include missing.ini\n"]) } throws: { "\($0)".contains("cannot read") }
    }
}

#if canImport(Glibc)
import Glibc
#endif
