// Cancel requests through the agent, unreachable upstreams, and shutdown by signal.

import Foundation
import Testing

extension Integration {
    @Suite struct CancelAndUpstream {
        @Test func cancelReachesOnlyTheClientsServer() throws {
            let upstream = try Upstream.role("pa_cancel")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 2
                """)
            try Self.expectCancelReachesOnlyTheClientsServer(agent)
        }

        /// Two clients of the pool "postgres" (two servers) run a query each; cancelling one ends only its query,
        /// within five seconds, and leaves it usable.
        static func expectCancelReachesOnlyTheClientsServer(_ agent: AgentProcess) throws {
            let sleeper = try PGConnection(agent.conninfo())
            let bystander = try PGConnection(agent.conninfo())
            try bystander.sendQuery("SELECT pg_sleep(1.5), 'bystander'")
            try sleeper.sendQuery("SELECT pg_sleep(30)")
            usleep(300_000)
            let started = Date()
            #expect(sleeper.cancel())
            #expect {
                _ = try sleeper.finishQuery()
            } throws: { ($0 as? PGError)?.sqlState == "57014" }
            #expect(Date().timeIntervalSince(started) < 5)
            #expect(try bystander.finishQuery().first?[1] == "bystander", "the other client's query was not cancelled")
            #expect(try sleeper.value("SELECT 'after cancel'") == "after cancel")
        }

        @Test func cancelWithAWrongKeyDoesNothing() throws {
            let upstream = try Upstream.role("pa_badcancel")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 1
                """)
            let client = try PGConnection(agent.conninfo())
            try client.sendQuery("SELECT pg_sleep(1), 'finished'")
            usleep(200_000)
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.int32(16) + RawConnection.int32(80_877_102) + RawConnection.int32(client.keyPID) + RawConnection.int32(12345))
            #expect(raw.readUntilClosed().closed)
            #expect(try client.finishQuery().first?[1] == "finished")
        }

        @Test func unreachableUpstreamGets08006AndOtherPoolsKeepServing() throws {
            let good = try Upstream.role("pa_good")
            let deadPort = try AgentProcess.freePort()
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(good)"
                size = 1

                [pools.dead]
                upstream = "host=127.0.0.1 port=\(deadPort) user=nobody password=hunter2 dbname=dead"
                size = 1
                connect_timeout = "2s"
                """)
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.startupPacket([("user", "postgres"), ("database", "dead")]))
            let error = RawConnection.firstError(in: raw.readUntilClosed().bytes)
            #expect(error?.sqlState == "08006")
            #expect(error?.message?.contains("pool \"dead\"") == true)
            #expect(error?.message?.contains("refused") == true, "libpq's reason is passed on: \(error?.message ?? "")")
            #expect(error?.message?.contains("hunter2") == false)
            #expect(!agent.log.contains("hunter2"), "the password never reaches the log")
            #expect(try PGConnection(agent.conninfo()).value("SELECT 'alive'") == "alive")
        }

        @Test func multiHostUpstreamFallsOverToTheLiveHost() throws {
            _ = try Upstream.role("pa_multihost")
            let deadPort = try AgentProcess.freePort()
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "host=127.0.0.1,\(TestEnvironment.pgHost ?? "") port=\(deadPort),\(TestEnvironment.pgPort ?? 5432) user=pa_multihost dbname=postgres"
                size = 1
                """)
            let client = try PGConnection(agent.conninfo())
            #expect(try client.value("SELECT current_user") == "pa_multihost", "libpq tried the dead host, then the live one")
        }

        @Test func sigtermLetsSessionsFinishThenStops() throws {
            let upstream = try Upstream.role("pa_sigterm")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 2
                """)
            let client = try PGConnection(agent.conninfo())
            agent.signal(SIGTERM)
            usleep(300_000)
            #expect(try client.value("SELECT 'still here'") == "still here", "graceful shutdown lets the session go on")
            #expect(throws: PGError.self, "no new clients during shutdown") { _ = try PGConnection(agent.conninfo()) }
            client.close()
            #expect(agent.waitForExit(timeout: 10) == 0)
            #expect(try eventually { try Upstream.connections(of: "pa_sigterm") == 0 })
        }

        @Test func sigintStopsAtOnce() throws {
            let upstream = try Upstream.role("pa_sigint")
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                size = 2
                """)
            let client = try PGConnection(agent.conninfo())
            try client.sendQuery("SELECT pg_sleep(30)")
            usleep(200_000)
            let started = Date()
            agent.signal(SIGINT)
            #expect(agent.waitForExit(timeout: 10) == 0)
            #expect(Date().timeIntervalSince(started) < 5)
            #expect(throws: PGError.self) { _ = try client.finishQuery() }
        }
    
        @Test func sigtermEndsWithinTheShutdownTimeoutWhileAWorkerIsStuckConnecting() throws {
            // An upstream that takes the TCP connection and never answers: libpq waits in its connect until
            // connect_timeout (a minute here), on a worker thread.
            let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(silent) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(silent, $0, length) } }
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(silent, $0, &length) } }
            listen(silent, 16)
            let port = Int(UInt16(bigEndian: address.sin_port))
            let agent = try AgentProcess(pools: """
                [pools.postgres]
                upstream = "host=127.0.0.1 port=\(port) user=nobody dbname=postgres"
                size = 1
                connect_timeout = "60s"
                wait_timeout = "60s"
                """, agentExtra: "shutdown_timeout = \"1s\"")
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.startupPacket([("user", "postgres"), ("database", "postgres")]))
            usleep(500_000)
            let started = Date()
            agent.signal(SIGTERM)
            #expect(agent.waitForExit(timeout: 20) != nil)
            let took = Date().timeIntervalSince(started)
            // shutdown_timeout, two seconds for the last FATALs to flush, three for the workers at most.
            #expect(took < 8, "stopped after \(took) s")
        }
    }
}
