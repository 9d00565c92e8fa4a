// Client authentication and TLS against the real agent: libpq with SCRAM, md5, peer, auth_query, sslmode,
// and hostile SASL input through a raw socket.

import Foundation
import Testing

extension Integration {
    @Suite struct Authentication {
        static let verbose = "connect_timeout=10"

        static func pool(_ role: String, extra: String = "") throws -> String {
            """
            [pools.postgres]
            upstream = "\(try Upstream.role(role))"
            size = 5
            \(extra)
            """
        }

        /// A userlist in the agent's test directory: alice (SCRAM verifier), bob (plaintext), carol (md5).
        static func writeUserList(in directory: URL) throws -> String {
            let admin = try Upstream.admin()
            try admin.query("SET password_encryption = 'scram-sha-256'")
            try admin.query("DROP ROLE IF EXISTS pa_scram_source")
            try admin.query("CREATE ROLE pa_scram_source PASSWORD 'alice-secret'")
            let verifier = try #require(try admin.value("SELECT rolpassword FROM pg_authid WHERE rolname = 'pa_scram_source'"))
            let carol = "md5" + Insecure.md5Hex("carol-secret" + "carol")
            let path = directory.appendingPathComponent("users.txt").path
            try """
                ; written by the test
                "alice" "\(verifier)"
                "bob" "bob-secret"
                "carol" "\(carol)"
                "dave" ""
                """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        static func directory() throws -> URL {
            let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("poolagent-auth-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            return url
        }

        /// A self-signed certificate and key made with the openssl CLI.
        static func makeCertificate(in directory: URL, name: String, commonName: String = "localhost") throws -> (cert: String, key: String) {
            let cert = directory.appendingPathComponent("\(name).crt").path
            let key = directory.appendingPathComponent("\(name).key").path
            let result = try Shell.run("/usr/bin/openssl", [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=\(commonName)",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert,
            ])
            try #require(result.status == 0, "openssl: \(result.output)")
            return (cert, key)
        }

        static func loginFails(_ conninfo: String, containing text: String) -> Bool {
            do {
                _ = try PGConnection(conninfo)
                return false
            } catch {
                return (error as? PGError)?.message.contains(text) == true
            }
        }

        @Test func scramAndMD5WithTheAuthFile() throws {
            let files = try Self.directory()
            defer { try? FileManager.default.removeItem(at: files) }
            let users = try Self.writeUserList(in: files)
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_file"), sections: """
                [auth]
                file = "\(users)"
                [[auth.rules]]
                user = ["carol", "nobody"]
                method = "md5"
                """)
            // SCRAM with a verifier taken from pg_authid, and with a plaintext secret.
            let alice = try PGConnection(agent.conninfo(user: "alice", extra: "password=alice-secret"))
            #expect(try alice.value("SELECT 1") == "1")
            let bob = try PGConnection(agent.conninfo(user: "bob", extra: "password=bob-secret"))
            #expect(try bob.value("SELECT 2") == "2")
            // md5 by rule, answered with libpq's md5 response.
            let carol = try PGConnection(agent.conninfo(user: "carol", extra: "password=carol-secret"))
            #expect(try carol.value("SELECT 3") == "3")
            let psql = try Shell.run("/usr/bin/psql", [agent.conninfo(user: "bob", extra: "password=wrong"), "-Atc", "SELECT 1"])
            #expect(psql.status != 0 && psql.output.contains("password authentication failed for user \"bob\""), "\(psql.output)")
            for (user, password) in [("alice", "wrong"), ("bob", "Bob-secret"), ("carol", "wrong"), ("nobody", "x"), ("dave", "x")] {
                #expect(Self.loginFails(agent.conninfo(user: user, extra: "password=\(password)"),
                                        containing: "password authentication failed for user \"\(user)\""), "\(user)")
            }
            #expect(Self.loginFails(agent.conninfo(user: "alice"), containing: "password"), "no password given")
            // Under md5 an unknown user is asked for SCRAM like a user with a verifier: the request tells nothing.
            let probe = try RawConnection(port: agent.port)
            probe.send(RawConnection.startupPacket([("user", "nobody"), ("database", "postgres")]))
            let request = try #require(probe.readMessage())
            #expect(request.type == UInt8(ascii: "R") && request.body.prefix(4) == [0, 0, 0, 10])
            #expect(!agent.log.contains("alice-secret") && !agent.log.contains("bob-secret") && !agent.log.contains("Bob-secret"),
                    "passwords never reach the log")
            #expect(try alice.value("SELECT 1") == "1", "established sessions are untouched by failed logins")
        }

        @Test func wrongPasswordIs28P01OnTheWire() throws {
            let files = try Self.directory()
            defer { try? FileManager.default.removeItem(at: files) }
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_wire"), sections: "[auth]\nfile = \"\(try Self.writeUserList(in: files))\"")
            // SCRAM: a well-formed exchange with a proof that cannot verify.
            let raw = try RawConnection(port: agent.port)
            let serverFirst = try Self.startSCRAM(raw, user: "alice")
            let nonce = try #require(serverFirst.split(separator: ",").first { $0.hasPrefix("r=") })
            let proof = Data(repeating: 0, count: 32).base64EncodedString()
            raw.send(RawConnection.message("p", Array("c=biws,\(nonce),p=\(proof)".utf8)))
            #expect(RawConnection.firstError(in: raw.readUntilClosed().bytes)?.sqlState == "28P01")
            // The same for a user that does not exist: same shape of exchange, same answer.
            let ghost = try RawConnection(port: agent.port)
            let ghostFirst = try Self.startSCRAM(ghost, user: "ghost")
            #expect(ghostFirst.contains(",i=4096"))
            let ghostNonce = try #require(ghostFirst.split(separator: ",").first { $0.hasPrefix("r=") })
            ghost.send(RawConnection.message("p", Array("c=biws,\(ghostNonce),p=\(proof)".utf8)))
            #expect(RawConnection.firstError(in: ghost.readUntilClosed().bytes)?.sqlState == "28P01")
        }

        /// Sends a startup packet and a SASLInitialResponse; returns the server-first-message.
        static func startSCRAM(_ raw: RawConnection, user: String) throws -> String {
            raw.send(RawConnection.startupPacket([("user", user), ("database", "postgres")]))
            let request = try #require(raw.readMessage())
            try #require(request.type == UInt8(ascii: "R") && request.body.prefix(4) == [0, 0, 0, 10], "AuthenticationSASL")
            #expect(String(decoding: request.body.dropFirst(4), as: UTF8.self) == "SCRAM-SHA-256\0\0")
            let first = Array("n,,n=,r=clientnonce123".utf8)
            raw.send(RawConnection.message("p", RawConnection.cString("SCRAM-SHA-256") + RawConnection.int32(Int32(first.count)) + first))
            let reply = try #require(raw.readMessage())
            try #require(reply.type == UInt8(ascii: "R") && reply.body.prefix(4) == [0, 0, 0, 11], "AuthenticationSASLContinue")
            return String(decoding: reply.body.dropFirst(4), as: UTF8.self)
        }

        /// Each hostile input ends its connection with 08P01 (or 0A000) and nothing else; the agent keeps serving.
        @Test func malformedSASLInputIsRefusedAndTheAgentStaysUp() throws {
            let files = try Self.directory()
            defer { try? FileManager.default.removeItem(at: files) }
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_sasl"), sections: "[auth]\nfile = \"\(try Self.writeUserList(in: files))\"")
            let mechanism = RawConnection.cString("SCRAM-SHA-256")
            func initial(_ text: String) -> [UInt8] {
                RawConnection.message("p", mechanism + RawConnection.int32(Int32(text.utf8.count)) + Array(text.utf8))
            }
            let firstMessages: [(String, [UInt8], String)] = [
                ("unknown mechanism", RawConnection.message("p", RawConnection.cString("SCRAM-SHA-1") + RawConnection.int32(3) + Array("n,,".utf8)), "08P01"),
                ("length larger than sent", RawConnection.message("p", mechanism + RawConnection.int32(1000) + Array("n,,n=,r=abc".utf8)), "08P01"),
                ("negative length", RawConnection.message("p", mechanism + RawConnection.int32(-5)), "08P01"),
                ("no initial response", RawConnection.message("p", mechanism + RawConnection.int32(-1)), "08P01"),
                ("mechanism not terminated", RawConnection.message("p", Array("SCRAM-SHA-256".utf8)), "08P01"),
                ("missing nonce", initial("n,,n="), "08P01"),
                ("empty nonce", initial("n,,n=,r="), "08P01"),
                ("channel binding not offered", initial("p=tls-server-end-point,,n=,r=abc"), "08P01"),
                ("authorization identity", initial("n,a=postgres,n=,r=abc"), "0A000"),
                ("non-printable bytes", initial("n,,n=\u{1},r=abc"), "08P01"),
                ("garbage", initial(String(repeating: "\u{7F}", count: 2000)), "08P01"),
                ("absurd message length", [UInt8(ascii: "p")] + RawConnection.int32(1 << 30), "08P01"),
                ("length below 4", [UInt8(ascii: "p")] + RawConnection.int32(2), "08P01"),
                ("a query instead of a password", RawConnection.query("SELECT 1"), "08P01"),
            ]
            for (name, bytes, sqlState) in firstMessages {
                let raw = try RawConnection(port: agent.port)
                raw.send(RawConnection.startupPacket([("user", "alice"), ("database", "postgres")]))
                _ = raw.readMessage()
                raw.send(bytes)
                let answer = raw.readUntilClosed()
                #expect(answer.closed, "\(name): connection closed")
                #expect(RawConnection.firstError(in: answer.bytes)?.sqlState == sqlState, "\(name)")
            }
            let finalMessages: [(String, (String) -> String)] = [
                ("wrong nonce", { _ in "c=biws,r=clientnonce123AAAA,p=\(Data(count: 32).base64EncodedString())" }),
                ("short proof", { "c=biws,\($0),p=AAAA" }),
                ("proof not base64", { "c=biws,\($0),p=!!!!" }),
                ("missing proof", { "c=biws,\($0)" }),
                ("bytes after the proof", { "c=biws,\($0),p=\(Data(count: 32).base64EncodedString()),x=1" }),
                ("wrong channel binding", { "c=eSws,\($0),p=\(Data(count: 32).base64EncodedString())" }),
                ("empty", { _ in "" }),
            ]
            for (name, build) in finalMessages {
                let raw = try RawConnection(port: agent.port)
                let serverFirst = try Self.startSCRAM(raw, user: "alice")
                let nonce = String(try #require(serverFirst.split(separator: ",").first { $0.hasPrefix("r=") }))
                raw.send(RawConnection.message("p", Array(build(nonce).utf8)))
                let answer = raw.readUntilClosed()
                #expect(answer.closed, "\(name): connection closed")
                #expect(RawConnection.firstError(in: answer.bytes)?.sqlState == "08P01", "\(name)")
            }
            // Half a message, then the client goes away.
            let truncated = try RawConnection(port: agent.port)
            truncated.send(RawConnection.startupPacket([("user", "alice"), ("database", "postgres")]))
            _ = truncated.readMessage()
            truncated.send([UInt8(ascii: "p"), 0, 0, 0, 100, 1, 2, 3])
            truncated.shutdownWrite()
            #expect(truncated.readUntilClosed().closed)
            let client = try PGConnection(agent.conninfo(user: "bob", extra: "password=bob-secret"))
            #expect(try client.value("SELECT 1") == "1", "the agent still serves")
        }

        @Test func aClientThatStallsInTheExchangeIsCutOffByTheLoginTimeout() throws {
            let files = try Self.directory()
            defer { try? FileManager.default.removeItem(at: files) }
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_stall"), agentExtra: "login_timeout = \"1s\"",
                                         sections: "[auth]\nfile = \"\(try Self.writeUserList(in: files))\"")
            let raw = try RawConnection(port: agent.port)
            _ = try Self.startSCRAM(raw, user: "alice")
            let answer = raw.readUntilClosed()
            #expect(answer.closed)
            let error = RawConnection.firstError(in: answer.bytes)
            #expect(error?.sqlState == "08006")
            #expect(error?.message?.contains("authentication not completed") == true, "\(String(describing: error))")
        }

        @Test func peerOnTheUnixSocket() throws {
            let osUser = String(cString: getpwuid(geteuid())!.pointee.pw_name)
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_peer"), sections: "[auth]\nunix = \"peer\"")
            let conninfo = "host=\(agent.directory.path) port=\(agent.port) dbname=postgres connect_timeout=10"
            let same = try PGConnection("\(conninfo) user=\(osUser)")
            #expect(try same.value("SELECT 1") == "1")
            let other = osUser == "nobody_pa" ? "root" : "nobody_pa"
            #expect(Self.loginFails("\(conninfo) user=\(other)", containing: "peer authentication failed for user \"\(other)\""))
            // TCP keeps its own default: SCRAM, which an unknown user fails.
            #expect(Self.loginFails(agent.conninfo(user: osUser, extra: "password=x"), containing: "password authentication failed"))
        }

        @Test func rulesRejectAndTrustByUserDatabaseAndAddress() throws {
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_rules"), sections: """
                [auth]
                [[auth.rules]]
                user = "mallory"
                method = "reject"
                [[auth.rules]]
                connection = "host"
                address = "127.0.0.0/8"
                database = "postgres"
                user = ["trusted", "other"]
                method = "trust"
                [[auth.rules]]
                connection = "host"
                address = "10.0.0.0/8"
                method = "trust"
                """)
            #expect(try PGConnection(agent.conninfo(user: "trusted")).value("SELECT 1") == "1")
            #expect(Self.loginFails(agent.conninfo(user: "mallory"), containing: "connection rejected"))
            #expect(Self.loginFails(agent.conninfo(user: "mallory"), containing: "auth rule 1"))
            #expect(Self.loginFails(agent.conninfo(user: "stranger", extra: "password=x"), containing: "password authentication failed"),
                    "10.0.0.0/8 does not match 127.0.0.1: the TCP default applies")
        }

        @Test func authQueryHonoursValidUntilAndIgnoresTheClientsSearchPath() throws {
            let admin = try Upstream.admin()
            try admin.query("SET password_encryption = 'scram-sha-256'")
            for role in ["pa_aq_ok", "pa_aq_expired", "pa_aq_later"] {
                try admin.query("DROP ROLE IF EXISTS \(role)")
            }
            try admin.query("CREATE ROLE pa_aq_ok LOGIN PASSWORD 'ok-secret'")
            try admin.query("CREATE ROLE pa_aq_expired LOGIN PASSWORD 'old-secret' VALID UNTIL '2001-01-01'")
            try admin.query("CREATE ROLE pa_aq_later LOGIN PASSWORD 'later-secret' VALID UNTIL 'infinity'")
            // A look-alike of pg_authid that a client could reach through its own search_path.
            try admin.query("DROP SCHEMA IF EXISTS pa_evil CASCADE")
            try admin.query("CREATE SCHEMA pa_evil")
            try admin.query("CREATE TABLE pa_evil.pg_authid (rolname name, rolpassword text, rolvaliduntil timestamptz, rolcanlogin bool)")
            try admin.query("INSERT INTO pa_evil.pg_authid VALUES ('pa_aq_ok', 'forged', NULL, true)")
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_query", extra: """
                mode = "transaction"
                auth_query = "SELECT rolpassword, rolvaliduntil FROM pg_authid WHERE rolname = $1 AND rolcanlogin"
                auth_upstream = "\(TestEnvironment.directConninfo)"
                """), sections: "[auth]\ntcp = \"scram-sha-256\"")
            #expect(try PGConnection(agent.conninfo(user: "pa_aq_ok", extra: "password=ok-secret")).value("SELECT 1") == "1", "\(agent.log)")
            #expect(try PGConnection(agent.conninfo(user: "pa_aq_later", extra: "password=later-secret")).value("SELECT 1") == "1")
            #expect(Self.loginFails(agent.conninfo(user: "pa_aq_ok", extra: "password=wrong"), containing: "password authentication failed"))
            #expect(Self.loginFails(agent.conninfo(user: "pa_aq_expired", extra: "password=old-secret"), containing: "password authentication failed"))
            #expect(Self.loginFails(agent.conninfo(user: "pa_aq_none", extra: "password=x"), containing: "password authentication failed"))
            #expect(Self.loginFails(agent.conninfo(user: "pa_aq_ok", extra: "password=forged options='-c search_path=pa_evil,pg_catalog'"),
                                    containing: "password authentication failed"), "the client's search_path cannot reach auth_query")
            #expect(agent.log.contains("VALID UNTIL"), "the log says why pa_aq_expired was refused")
            // Many logins at once: lookups queue one behind another and all get their answer.
            let storm = concurrently(30) { _ in
                try PGConnection(agent.conninfo(user: "pa_aq_ok", extra: "password=ok-secret")).value("SELECT 1")
            }
            #expect(storm.allSatisfy { (try? $0.get()) == "1" }, "\(storm)")
            try admin.query("DROP SCHEMA pa_evil CASCADE")
        }

        @Test func aHangingAuthQueryEndsWithinItsStatementTimeout() throws {
            // A lookup that never returns on its own (a lock, a slow catalog): statement_timeout ends it, the
            // login fails in about 10 s instead of waiting for login_timeout, and the next lookup runs.
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_hang", extra: """
                auth_query = "SELECT $1::text FROM pg_sleep(600)"
                auth_upstream = "\(TestEnvironment.directConninfo)"
                """), sections: "[auth]\ntcp = \"scram-sha-256\"")
            let started = Date()
            #expect(Self.loginFails(agent.conninfo(user: "pa_aq_hang", extra: "password=x connect_timeout=60"), containing: "cannot look up the password"))
            let took = Date().timeIntervalSince(started)
            #expect(took >= 9 && took < 20, "the lookup ended after \(took) s")
            #expect(agent.log.contains("statement timeout"), "the log says why")
        }

        @Test func tlsRequiredRefusesPlaintextAndReloadsTheCertificate() throws {
            let files = try Self.directory()
            defer { try? FileManager.default.removeItem(at: files) }
            let users = try Self.writeUserList(in: files)
            let first = try Self.makeCertificate(in: files, name: "first")
            let second = try Self.makeCertificate(in: files, name: "second")
            let cert = files.appendingPathComponent("server.crt").path
            let key = files.appendingPathComponent("server.key").path
            try FileManager.default.copyItem(atPath: first.cert, toPath: cert)
            try FileManager.default.copyItem(atPath: first.key, toPath: key)
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_tls"), sections: """
                [auth]
                file = "\(users)"
                [tls]
                cert_file = "\(cert)"
                key_file = "\(key)"
                client_tls = "require"
                """)
            // psql as an operator would run it.
            let psql = try Shell.run("/usr/bin/psql", [
                "host=127.0.0.1 port=\(agent.port) dbname=postgres user=alice password=alice-secret sslmode=require",
                "-Atc", "SELECT 'over tls'",
            ])
            #expect(psql.status == 0 && psql.output.contains("over tls"), "\(psql.output)")
            let refused = try Shell.run("/usr/bin/psql", [
                "host=127.0.0.1 port=\(agent.port) dbname=postgres user=alice password=alice-secret sslmode=disable", "-Atc", "SELECT 1",
            ])
            #expect(refused.status != 0 && refused.output.contains("TLS is required"), "\(refused.output)")
            let secure = try PGConnection(agent.conninfo(user: "alice", extra: "password=alice-secret sslmode=require"))
            #expect(secure.usesTLS)
            #expect(try secure.value("SELECT 1") == "1")
            // SCRAM-SHA-256-PLUS: libpq binds the exchange to the certificate it was shown.
            let bound = try PGConnection(agent.conninfo(user: "bob", extra: "password=bob-secret sslmode=require channel_binding=require"))
            #expect(try bound.value("SELECT 1") == "1")
            #expect(Self.loginFails(agent.conninfo(user: "alice", extra: "password=wrong sslmode=require"), containing: "password authentication failed"))
            #expect(Self.loginFails(agent.conninfo(user: "alice", extra: "password=alice-secret sslmode=disable"), containing: "TLS is required"))
            let plain = try RawConnection(port: agent.port)
            plain.send(RawConnection.startupPacket([("user", "alice"), ("database", "postgres")]))
            #expect(RawConnection.firstError(in: plain.readUntilClosed().bytes)?.sqlState == "28000")
            // verify-ca pins the certificate: the second one is trusted only after reload.
            let pinned = "password=alice-secret sslmode=verify-ca sslrootcert=\(second.cert)"
            #expect(Self.loginFails(agent.conninfo(user: "alice", extra: pinned), containing: "certificate"))
            try FileManager.default.removeItem(atPath: cert)
            try FileManager.default.removeItem(atPath: key)
            try FileManager.default.copyItem(atPath: second.cert, toPath: cert)
            try FileManager.default.copyItem(atPath: second.key, toPath: key)
            let reload = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "reload"])
            #expect(reload.status == 0, "\(reload.output)")
            #expect(try PGConnection(agent.conninfo(user: "alice", extra: pinned)).usesTLS)
            #expect(try secure.value("SELECT 2") == "2", "a session on the old certificate goes on")
            // A broken key file makes reload fail and keeps the working certificate.
            try "not a key".write(toFile: key, atomically: true, encoding: .utf8)
            let broken = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "reload"])
            #expect(broken.status != 0)
            #expect(broken.output.contains(key), "\(broken.output)")
            #expect(try PGConnection(agent.conninfo(user: "alice", extra: pinned)).usesTLS)
        }

        @Test func pythonDriversLogInWithTheirOwnSCRAM() throws {
            guard let python = TestEnvironment.python else {
                if TestEnvironment.isCI { Issue.record("POOLAGENT_TEST_PYTHON is not set; run scripts/test") }
                return
            }
            let files = try Self.directory()
            defer { try? FileManager.default.removeItem(at: files) }
            let users = try Self.writeUserList(in: files)
            let tls = try Self.makeCertificate(in: files, name: "server")
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_py", extra: "mode = \"transaction\""), sections: """
                [auth]
                file = "\(users)"
                [[auth.rules]]
                user = "carol"
                method = "md5"
                [tls]
                cert_file = "\(tls.cert)"
                key_file = "\(tls.key)"
                """)
            let run = try Shell.run(python, [TestEnvironment.driversScript, "authentication", String(agent.port)])
            #expect(run.status == 0 && run.output.contains("authentication ok"), "\(run.output)")
        }

        @Test func bytesPipelinedAfterSSLRequestAreRefused() throws {
            let files = try Self.directory()
            defer { try? FileManager.default.removeItem(at: files) }
            let tls = try Self.makeCertificate(in: files, name: "server")
            let agent = try AgentProcess(pools: try Self.pool("pa_auth_pipelined"), sections: """
                \(AgentProcess.trustEveryone)
                [tls]
                cert_file = "\(tls.cert)"
                key_file = "\(tls.key)"
                """)
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.int32(8) + RawConnection.int32(80_877_103) + RawConnection.startupPacket([("user", "postgres")]))
            let answer = raw.readUntilClosed()
            #expect(answer.closed)
            let error = RawConnection.firstError(in: answer.bytes)
            #expect(error?.sqlState == "08P01")
            #expect(error?.message == "received unencrypted data after SSL request")
            // client_tls = allow: TLS when asked, plaintext otherwise.
            #expect(try PGConnection(agent.conninfo(extra: "sslmode=require")).usesTLS)
            #expect(try !PGConnection(agent.conninfo(extra: "sslmode=disable")).usesTLS)
        }
    }
}

/// md5 for the test's userlist, from the openssl CLI (the tests do not link a crypto library).
enum Insecure {
    static func md5Hex(_ text: String) -> String {
        let result = try? Shell.run("/usr/bin/openssl", ["dgst", "-md5", "-r"], stdin: text)
        return String(result?.output.prefix(32) ?? "")
    }
}
