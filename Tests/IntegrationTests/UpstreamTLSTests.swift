// Pools in front of a PostgreSQL that takes TCP connections over TLS only (hostssl lines, ssl = on): libpq's
// sslmode vocabulary, certificate checks, client certificates, channel binding, passwords, and the data path
// (session and transaction modes, prepared statements, COPY, cancel) over the TLS session the loop carries on.

import Foundation
import Testing

extension Integration {
    @Suite(.enabled(if: TestEnvironment.tlsClusterAvailable, "needs scripts/test: the TLS-only cluster"))
    struct UpstreamTLS {
        static var directory: String { TestEnvironment.tlsDirectory ?? "/nonexistent" }
        static var port: Int { TestEnvironment.tlsPort ?? 5432 }
        static var ca: String { directory + "/certs/ca.crt" }

        /// The TLS cluster as its superuser, over its Unix socket (no TLS there).
        static func admin() throws -> PGConnection {
            try PGConnection("host=\(directory)/run port=\(port) user=postgres dbname=postgres")
        }

        static func upstream(user: String = "tlsuser", _ extra: String) -> String {
            var conninfo = "host=127.0.0.1 port=\(port) dbname=postgres user=\(user) \(extra)"
            if user == "tlsuser", !extra.contains("password") && !extra.contains("passfile") { conninfo += " password=tls-secret" }
            return conninfo
        }

        /// Backends of `user` with whether each is TLS, from pg_stat_ssl.
        static func backendsUseTLS(_ user: String) throws -> [Bool] {
            try self.admin().query("""
                SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                WHERE a.usename = '\(user)' AND a.pid <> pg_backend_pid()
                """).map { $0[0] == "t" }
        }

        static func terminate(_ user: String) throws {
            try self.admin().query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '\(user)'")
        }

        @Test func verifyFullCarriesSessionAndTransactionModes() throws {
            try Self.terminate("tlsuser")
            let admin = try Self.admin()
            try admin.query("DROP TABLE IF EXISTS pa_tls_copy")
            try admin.query("CREATE TABLE pa_tls_copy (id int, note text)")
            try admin.query("GRANT ALL ON pa_tls_copy TO tlsuser")
            let verifyFull = "sslmode=verify-full sslrootcert=\(Self.ca)"
            let agent = try AgentProcess(pools: """
                [pools.txn]
                upstream = "\(Self.upstream(verifyFull))"
                mode = "transaction"
                size = 2
                [pools.session]
                upstream = "\(Self.upstream(verifyFull))"
                mode = "session"
                size = 2
                """)
            for database in ["txn", "session"] {
                let client = try PGConnection(agent.conninfo(database: database))
                #expect(try client.value("SELECT current_user") == "tlsuser")
                #expect(try client.value("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "true", "\(database)")
                try client.prepare("tls_add", "SELECT $1::int + $2::int")
                for round in 0..<20 {
                    #expect(try client.execPrepared("tls_add", ["\(round)", "1"]).first?[0] == "\(round + 1)")
                }
                // Large rows cross many TLS records both ways.
                let wide = try client.value("SELECT length(string_agg(md5(g::text), '')) FROM generate_series(1, 20000) g")
                #expect(wide == "640000")
                let copyIn = (1...2000).map { "\($0)\t\(database)-row-\($0)" }.joined(separator: "\n") + "\n"
                let loaded = try Shell.run("/usr/bin/psql", [agent.conninfo(database: database), "-v", "ON_ERROR_STOP=1", "-c", "COPY pa_tls_copy FROM STDIN"], stdin: copyIn)
                #expect(loaded.status == 0, "\(loaded.output)")
                let copyOut = try Shell.run("/usr/bin/psql", [agent.conninfo(database: database), "-At", "-c", "COPY (SELECT * FROM pa_tls_copy WHERE note LIKE '\(database)-%' ORDER BY id) TO STDOUT"])
                #expect(copyOut.status == 0)
                #expect(copyOut.output.split(separator: "\n").count == 2000)
                #expect(try client.value("SELECT count(*) FROM pa_tls_copy WHERE note LIKE '\(database)-%'") == "2000")
            }
            let backends = try Self.backendsUseTLS("tlsuser")
            #expect(!backends.isEmpty)
            #expect(backends.allSatisfy { $0 }, "every backend of the pools is TLS: \(backends)")
            #expect(!agent.log.contains("tls-secret"), "the server password never reaches the log")
        }

        @Test func pgbenchThroughAVerifyFullPool() throws {
            let admin = try Self.admin()
            _ = try Shell.run("/usr/bin/pgbench", ["-i", "-q", "-s", "1", "host=\(Self.directory)/run port=\(Self.port) user=postgres dbname=postgres"])
            try admin.query("GRANT SELECT ON ALL TABLES IN SCHEMA public TO tlsuser")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(Self.upstream("sslmode=verify-full sslrootcert=\(Self.ca)"))"
                mode = "transaction"
                size = 4
                """)
            let bench = try Shell.run("/usr/bin/pgbench", ["-S", "-c", "10", "-j", "2", "-t", "300", "-n", agent.conninfo()])
            #expect(bench.status == 0, "\(bench.output)")
            #expect(bench.output.contains("number of transactions actually processed: 3000/3000"), "\(bench.output)")
            #expect(try Self.backendsUseTLS("tlsuser").allSatisfy { $0 })
        }

        @Test func certificatesThatDoNotMatchAreRefusedInLibpqsWords() throws {
            let agent = try AgentProcess(pools: """
                [pools.wrongca]
                upstream = "\(Self.upstream("sslmode=verify-full sslrootcert=\(Self.directory)/certs/other-ca.crt"))"
                size = 1
                [pools.wronghost]
                upstream = "\(Self.upstream("host=wrong.example hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=\(Self.ca)"))"
                size = 1
                [pools.verifyca]
                upstream = "\(Self.upstream("host=wrong.example hostaddr=127.0.0.1 sslmode=verify-ca sslrootcert=\(Self.ca)"))"
                size = 1
                [pools.plain]
                upstream = "\(Self.upstream("sslmode=disable"))"
                size = 1
                """)
            #expect(Authentication.loginFails(agent.conninfo(database: "wrongca"), containing: "certificate verify failed"))
            #expect(Authentication.loginFails(agent.conninfo(database: "wronghost"), containing: "does not match host name \"wrong.example\""))
            #expect(Authentication.loginFails(agent.conninfo(database: "wrongca"), containing: "cannot connect to the upstream of pool \"wrongca\""))
            // verify-ca checks the chain, not the name.
            #expect(try PGConnection(agent.conninfo(database: "verifyca")).value("SELECT 1") == "1")
            // The server takes no plaintext: its own refusal reaches the client.
            #expect(Authentication.loginFails(agent.conninfo(database: "plain"), containing: "no encryption"))
        }

        @Test func systemRootsAreTheMachinesTrustedRoots() throws {
            // sslrootcert=system: OpenSSL's default roots, which SSL_CERT_FILE replaces; here, the test CA.
            let trusted = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(Self.upstream("sslrootcert=system"))"
                size = 1
                """, environment: ["SSL_CERT_FILE": Self.ca])
            let client = try PGConnection(trusted.conninfo())
            #expect(try client.value("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "true")
            // The same conninfo where the test CA is not among the roots: verify-full refuses the server.
            let untrusted = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(Self.upstream("sslrootcert=system"))"
                size = 1
                """, environment: ["SSL_CERT_FILE": Self.directory + "/certs/other-ca.crt"])
            #expect(Authentication.loginFails(untrusted.conninfo(), containing: "certificate verify failed"))
        }

        @Test func requireWithoutRootsClientCertificatesAndChannelBinding() throws {
            try Self.terminate("certuser")
            let certs = Self.directory + "/certs"
            let agent = try AgentProcess(pools: """
                [pools.require]
                upstream = "\(Self.upstream("sslmode=require"))"
                size = 1
                [pools.cert]
                upstream = "\(Self.upstream(user: "certuser", "sslmode=verify-full sslrootcert=\(Self.ca) sslcert=\(certs)/client.crt sslkey=\(certs)/client.key"))"
                mode = "transaction"
                size = 1
                [pools.bound]
                upstream = "\(Self.upstream("sslmode=require channel_binding=require"))"
                mode = "transaction"
                size = 1
                """)
            #expect(try PGConnection(agent.conninfo(database: "require")).value("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "true")
            let certified = try PGConnection(agent.conninfo(database: "cert"))
            #expect(try certified.value("SELECT current_user") == "certuser", "cert authentication with the client certificate")
            #expect(try certified.value("SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "/CN=certuser")
            // channel_binding=require: SCRAM-SHA-256-PLUS, or libpq refuses the login.
            #expect(try PGConnection(agent.conninfo(database: "bound")).value("SELECT 1") == "1")
            #expect(try Self.backendsUseTLS("certuser") == [true])
        }

        @Test func passwordsFromAPassfileNeverShowAndFailuresNameThePool() throws {
            let files = FileManager.default.temporaryDirectory.appendingPathComponent("pa-tls-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: files, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: files) }
            let passfile = files.appendingPathComponent("pgpass").path
            try "127.0.0.1:\(Self.port):postgres:tlsuser:tls-secret\n".write(toFile: passfile, atomically: true, encoding: .utf8)
            chmod(passfile, 0o600)
            let agent = try AgentProcess(pools: """
                [pools.pgpass]
                upstream = "\(Self.upstream("passfile=\(passfile) sslmode=verify-full sslrootcert=\(Self.ca)"))"
                size = 1
                [pools.wrong]
                upstream = "\(Self.upstream("password=not-the-password sslmode=require"))"
                size = 1
                """)
            #expect(try PGConnection(agent.conninfo(database: "pgpass")).value("SELECT current_user") == "tlsuser")
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.startupPacket([("user", "postgres"), ("database", "wrong")]))
            let error = RawConnection.firstError(in: raw.readUntilClosed().bytes)
            #expect(error?.sqlState == "08006")
            #expect(error?.message?.contains("cannot connect to the upstream of pool \"wrong\"") == true, "\(String(describing: error?.message))")
            #expect(error?.message?.contains("password authentication failed for user \"tlsuser\"") == true, "\(String(describing: error?.message))")
            let config = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "config"])
            #expect(config.status == 0)
            #expect(!config.output.contains("not-the-password"))
            #expect(config.output.contains("sslmode=require"))
            #expect(agent.log.contains("password authentication failed"), "the failure is in the log")
            #expect(!agent.log.contains("not-the-password") && !agent.log.contains("tls-secret"))
        }

        @Test func connectTimeoutBoundsTheHandshakeAndMultiHostFallsOver() throws {
            // A listener that never accepts: the TCP connect succeeds, the SSLRequest is never answered.
            let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(silent) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let silentPort = try AgentProcess.freePort()
            address.sin_port = in_port_t(UInt16(silentPort).bigEndian)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(silent, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            #expect(bound == 0)
            #expect(listen(silent, 16) == 0)
            let verifyFull = "sslmode=verify-full sslrootcert=\(Self.ca) connect_timeout=2"
            let agent = try AgentProcess(pools: """
                [pools.silent]
                upstream = "\(Self.upstream("port=\(silentPort) \(verifyFull)"))"
                size = 1
                [pools.fallover]
                upstream = "\(Self.upstream("host=127.0.0.1,127.0.0.1 port=\(silentPort),\(Self.port) target_session_attrs=read-write \(verifyFull)"))"
                size = 1
                """)
            let started = Date()
            #expect(Authentication.loginFails(agent.conninfo(database: "silent"), containing: "timeout expired"))
            #expect(Date().timeIntervalSince(started) < 6, "connect_timeout ends the handshake's wait")
            let client = try PGConnection(agent.conninfo(database: "fallover"))
            #expect(try client.value("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "true")
            #expect(try client.value("SELECT inet_server_port()") == "\(Self.port)")
        }

        @Test func cancelRequestsReachTLSServers() throws {
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(Self.upstream("sslmode=verify-full sslrootcert=\(Self.ca)"))"
                mode = "transaction"
                size = 2
                """)
            try CancelAndUpstream.expectCancelReachesOnlyTheClientsServer(agent)
            #expect(agent.log.contains("cancel request sent") && agent.log.contains("tls=true"), "the cancel went over TLS")
        }
    }
}
