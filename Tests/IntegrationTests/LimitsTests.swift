// Client limits, the descriptor limit and descriptors of dead servers, against the real agent and cluster.

import Foundation
import Testing

extension Integration {
    @Suite struct Limits {
        /// The agent's open descriptors and, of its sockets, the TCP ones in CLOSE-WAIT.
        static func descriptors(of agent: AgentProcess) -> (open: Int, closeWait: Int) {
            let pid = agent.process.processIdentifier
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            var inodes = Set<String>()
            for entry in entries {
                if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(entry)"),
                    target.hasPrefix("socket:[")
                {
                    inodes.insert(String(target.dropFirst(8).dropLast()))
                }
            }
            var closeWait = 0
            for table in ["/proc/\(pid)/net/tcp", "/proc/\(pid)/net/tcp6"] {
                // procfs files report size 0: read to the end rather than by size.
                let text = FileHandle(forReadingAtPath: table).map { String(decoding: $0.readDataToEndOfFile(), as: UTF8.self) } ?? ""
                for line in text.split(separator: "\n").dropFirst() {
                    let fields = line.split(separator: " ")
                    // st 08 is CLOSE_WAIT; field 9 is the inode.
                    if fields.count > 9, fields[3] == "08", inodes.contains(String(fields[9])) { closeWait += 1 }
                }
            }
            return (entries.count, closeWait)
        }

        /// `stats`' agent limits, through poolctl.
        static func agentLimits(_ agent: AgentProcess) throws -> [String: Any] {
            let stats = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "stats"])
            let object = try JSONSerialization.jsonObject(with: Data(stats.output.utf8)) as? [String: Any]
            let result = object?["result"] as? [String: Any]
            return (result?["agent"] as? [String: Any])?["limits"] as? [String: Any] ?? [:]
        }

        /// `count` clients logged in to `database`, each expected to succeed.
        static func loggedIn(_ count: Int, to agent: AgentProcess, database: String = "postgres") throws -> [RawConnection] {
            try (0..<count).map { _ in
                let connection = try RawConnection(port: agent.port)
                #expect(Self.loginError(connection, database: database) == nil)
                return connection
            }
        }

        /// `count` clients that send six bytes of a startup packet and stop: they stay logging in.
        static func halfStarted(_ count: Int, to agent: AgentProcess) throws -> [RawConnection] {
            let connections = try (0..<count).map { _ in try RawConnection(port: agent.port) }
            for connection in connections { connection.send(Array(RawConnection.startupPacket([("user", "postgres")]).prefix(6))) }
            return connections
        }

        /// The first ErrorResponse of a connection that sent `startup`, or nil when it logged in.
        static func loginError(_ connection: RawConnection, user: String = "postgres", database: String = "postgres") -> ServerError? {
            connection.send(RawConnection.startupPacket([("user", user), ("database", database)]))
            while let message = connection.readMessage() {
                if message.type == UInt8(ascii: "Z") { return nil }
                if message.type == UInt8(ascii: "E") {
                    return RawConnection.firstError(in: RawConnection.message("E", message.body))
                }
            }
            return ServerError(fields: ["M": "closed without an answer"])
        }

        @Test func terminatedBackendsLeaveNoDescriptorAndNoCloseWait() throws {
            let role = "pa_fdleak"
            _ = try Upstream.role(role)
            // TCP to the cluster, so a socket libpq or the agent forgot would show as CLOSE-WAIT.
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "host=127.0.0.1 port=\(TestEnvironment.pgPort ?? 5432) dbname=postgres user=\(role)"
                mode = "transaction"
                size = 2
                """)
            #expect(try PGConnection(agent.conninfo()).value("SELECT 1") == "1")
            #expect(eventually { Self.descriptors(of: agent).open > 0 })
            let baseline = Self.descriptors(of: agent)
            let admin = try Upstream.admin()
            for round in 1...10 {
                let killed = try admin.value("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '\(role)'")
                #expect(killed != "0", "round \(round): a backend to terminate")
                // With no server left the pool probes the upstream (after 2 s, on the janitor's tick); the probe's
                // connection is one of those that must close.
                usleep(3_200_000)
                // The pool sees the server go and reconnects for the next client (a client handed the dead
                // server before the agent read its end gets an error, hence the retries).
                #expect(eventually(timeout: 10) { (try? PGConnection(agent.conninfo()).value("SELECT \(round)")) == "\(round)" })
            }
            let settled = eventually(timeout: 5) {
                let now = Self.descriptors(of: agent)
                return now.closeWait == 0 && now.open <= baseline.open
            }
            let final = Self.descriptors(of: agent)
            #expect(settled, "descriptors \(baseline.open) → \(final.open), CLOSE-WAIT \(final.closeWait)")
        }

        @Test func clientsPastMaxClientConnGet53300AndANewOneIsServedOnceTheyLeave() throws {
            let upstream = try Upstream.role("pa_maxconn")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 2
                """, agentExtra: "max_client_conn = 100")
            var held: [RawConnection] = []
            var refused = 0
            var other: [String] = []
            for _ in 0..<130 {
                let connection = try RawConnection(port: agent.port)
                if let error = Self.loginError(connection) {
                    if error.sqlState == "53300", error.message == "sorry, too many clients already" {
                        refused += 1
                    } else {
                        other.append("\(error.sqlState ?? "-"): \(error.message ?? "")")
                    }
                } else {
                    held.append(connection)
                }
            }
            #expect(held.count == 100)
            #expect(refused == 30)
            #expect(other.isEmpty, "\(other)")
            let limits = try Self.agentLimits(agent)
            #expect(limits["max_client_conn"] as? [String: Int] == ["limit": 100, "used": 100])
            #expect((limits["refused"] as? [String: Int])?["max_client_conn"] == 30)
            // Those served still are.
            held[0].send(RawConnection.message("Q", RawConnection.cString("SELECT 1")))
            #expect(held[0].readTypes(untilReady: 1).contains("D"))
            held.removeAll()
            #expect(eventually { (try? PGConnection(agent.conninfo()).value("SELECT 'after'")) == "after" })
        }

        @Test func aRefusedClientReadsWhyWhateverItsSSLMode() throws {
            let files = try Authentication.directory()
            defer { try? FileManager.default.removeItem(at: files) }
            let tls = try Authentication.makeCertificate(in: files, name: "server")
            let upstream = try Upstream.role("pa_refused_tls")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 1
                """, agentExtra: "max_client_conn = 1", sections: """
                \(AgentProcess.trustEveryone)
                [tls]
                cert_file = "\(tls.cert)"
                key_file = "\(tls.key)"
                """)
            let holder = try PGConnection(agent.conninfo())
            // libpq shows nothing sent in answer to an SSLRequest: the reason comes after the TLS handshake
            // (require), or in plaintext after N (prefer, disable).
            for mode in ["require", "prefer", "disable"] {
                #expect(Authentication.loginFails(agent.conninfo(extra: "sslmode=\(mode)"), containing: "sorry, too many clients already"),
                        "sslmode=\(mode)")
            }
            #expect(try holder.value("SELECT 'held'") == "held")
        }

        @Test func poolAndUserLimitsRefuseOnlyTheirOwnClients() throws {
            let upstream = try Upstream.role("pa_poollimit")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 2
                max_clients = 3

                [pools.other]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 2
                """, agentExtra: "max_user_connections = 5")
            var held = try Self.loggedIn(3, to: agent)
            let fourth = Self.loginError(try RawConnection(port: agent.port))
            #expect(fourth?.sqlState == "53300")
            #expect(fourth?.fields["D"]?.contains("max_clients") == true, "\(fourth?.fields ?? [:])")
            // Another pool still takes the same user, up to max_user_connections (5) for that user.
            held += try Self.loggedIn(2, to: agent, database: "other")
            let sixth = Self.loginError(try RawConnection(port: agent.port), database: "other")
            #expect(sixth?.sqlState == "53300")
            #expect(sixth?.fields["D"]?.contains("max_user_connections") == true, "\(sixth?.fields ?? [:])")
            // Another user is not limited by this one's clients.
            _ = try Upstream.role("pa_poollimit_b")
            let otherUser = try RawConnection(port: agent.port)
            #expect(Self.loginError(otherUser, user: "pa_poollimit_b", database: "other") == nil)
            held.removeAll()
            #expect(eventually { (try? RawConnection(port: agent.port)).map { Self.loginError($0) == nil } ?? false })
        }

        @Test func clientsStillLoggingInAreCapped() throws {
            let upstream = try Upstream.role("pa_logincap")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 1
                """, agentExtra: "max_login_clients = 20")
            // (The start-up check's connection has gone.)
            #expect(eventually { (try? Self.agentLimits(agent)["max_login_clients"] as? [String: Int])?["used"] == 0 })
            // Twenty sockets that send part of a startup packet and stop hold every login slot...
            let silent = try Self.halfStarted(20, to: agent)
            usleep(200_000)
            let refused = Self.loginError(try RawConnection(port: agent.port))
            #expect(refused?.sqlState == "53300")
            #expect(refused?.fields["D"]?.contains("max_login_clients") == true)
            #expect((try Self.agentLimits(agent)["max_login_clients"] as? [String: Int]) == ["limit": 20, "used": 20])
            // A logged-in client does not count against it: once the silent ones go, 25 clients log in and stay.
            for connection in silent { connection.shutdownWrite() }
            #expect(eventually { (try? Self.agentLimits(agent)["max_login_clients"] as? [String: Int])?["used"] == 0 })
            let loggedIn = try Self.loggedIn(25, to: agent)
            #expect((try Self.agentLimits(agent)["max_client_conn"] as? [String: Int])?["used"] == 25)
            withExtendedLifetime(loggedIn) {}
        }

        @Test func outOfDescriptorsTheNewestLoginsAreShedAndServersStillConnect() throws {
            let upstream = try Upstream.role("pa_shed")
            // 100 descriptors; a pool of 2 keeps 2 × 3 + 32 of them for servers.
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 2
                """, descriptorLimit: 100)
            let holder = try PGConnection(agent.conninfo())
            try holder.query("BEGIN")
            #expect(try holder.value("SELECT 'in a transaction'") == "in a transaction")
            // Eighty sockets that start a startup packet and stop: more than the descriptors left for clients.
            let flood = try Self.halfStarted(80, to: agent)
            // A client still gets in (retrying while the flood is shed) and its request needs a second server,
            // which connects from the reserve.
            #expect(eventually(timeout: 10) { (try? PGConnection(agent.conninfo()).value("SELECT 'served'")) == "served" })
            #expect(try holder.value("SELECT 'still'") == "still")
            try holder.query("COMMIT")
            var shed = 0
            for connection in flood {
                var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
                setsockopt(connection.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                if let message = connection.readMessage(), message.type == UInt8(ascii: "E"),
                    let error = RawConnection.firstError(in: RawConnection.message("E", message.body)),
                    error.sqlState == "53300", error.fields["D"]?.contains("out of file descriptors") == true
                {
                    shed += 1
                }
            }
            #expect(shed > 0, "some of the flood was told why it was closed")
            let refused = try Self.agentLimits(agent)["refused"] as? [String: Int]
            #expect((refused?["descriptors"] ?? 0) > 0)
        }

        @Test func theSoftDescriptorLimitIsRaisedToTheHardOne() throws {
            let upstream = try Upstream.role("pa_nofile")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                """)
            let limits = try String(contentsOfFile: "/proc/\(agent.process.processIdentifier)/limits", encoding: .utf8)
            let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }
            let fields = line?.split(separator: " ", omittingEmptySubsequences: true) ?? []
            #expect(fields.count >= 5)
            #expect(fields.count >= 5 && fields[3] == fields[4], "soft equals hard: \(line ?? "")")
            #expect(agent.log.contains("descriptor limit"))
        }

        @Test func checkWarnsWhenTheLimitsCannotFitTheDescriptorLimit() throws {
            let file = NSTemporaryDirectory() + "poolagent-nofile-\(UUID().uuidString.prefix(8)).toml"
            try """
                [agent]
                max_client_conn = 5000
                [pools.app]
                upstream = "host=/tmp dbname=app"
                size = 20
                """.write(toFile: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: file) }
            let low = try Shell.run("/bin/sh", ["-c", "ulimit -n 2048 && exec \(TestEnvironment.agentBinary) --check --config \(file)"])
            #expect(low.status == 0, "a warning, not an error: \(low.output)")
            #expect(low.output.contains("warning"))
            #expect(low.output.contains("max_client_conn 5000"))
            let high = try Shell.run("/bin/sh", ["-c", "ulimit -n 65536 && exec \(TestEnvironment.agentBinary) --check --config \(file)"])
            #expect(!high.output.contains("warning"), "\(high.output)")
        }
    }
}
