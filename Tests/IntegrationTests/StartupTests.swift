// The startup handshake and routing: encryption requests, protocol versions, bad packets, unknown databases.

import Foundation
import Testing

extension Integration {
    @Suite struct Startup {
        static func pool(_ role: String) throws -> String {
            """
            [pools.postgres]
            upstream = "\(try Upstream.role(role))"
            size = 2
            """
        }

        @Test func unknownDatabaseGets3D000() throws {
            let agent = try AgentProcess(pools: try Self.pool("pa_startup"))
            #expect {
                _ = try PGConnection(agent.conninfo(database: "nosuchdb"))
            } throws: { ($0 as? PGError)?.message.contains("database \"nosuchdb\" does not exist") == true }
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.startupPacket([("user", "postgres"), ("database", "nosuchdb")]))
            #expect(RawConnection.firstError(in: raw.readUntilClosed().bytes)?.sqlState == "3D000")
        }

        @Test func sslAndGSSEncryptionRequestsAreDeclined() throws {
            let agent = try AgentProcess(pools: try Self.pool("pa_ssl"))
            let prefer = try PGConnection(agent.conninfo(extra: "sslmode=prefer gssencmode=prefer"))
            #expect(try prefer.value("SELECT 1") == "1")
            #expect(throws: PGError.self, "sslmode=require cannot be met") {
                _ = try PGConnection(agent.conninfo(extra: "sslmode=require"))
            }
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.int32(8) + RawConnection.int32(80_877_103))
            #expect(raw.readExactly(1) == [UInt8(ascii: "N")])
            raw.send(RawConnection.int32(8) + RawConnection.int32(80_877_104))
            #expect(raw.readExactly(1) == [UInt8(ascii: "N")], "GSSAPI after SSL is allowed, as libpq does the reverse")
            raw.send(RawConnection.int32(8) + RawConnection.int32(80_877_103))
            let third = raw.readUntilClosed()
            #expect(RawConnection.firstError(in: third.bytes)?.sqlState == "08P01", "each is negotiated once")
        }

        @Test func malformedStartupPacketsAreRefusedAndOthersStillServed() throws {
            let agent = try AgentProcess(pools: try Self.pool("pa_malformed"))
            let bystander = try PGConnection(agent.conninfo())

            let oversized = try RawConnection(port: agent.port)
            oversized.send(RawConnection.int32(20_000) + RawConnection.int32(196_608))
            let oversizedError = RawConnection.firstError(in: oversized.readUntilClosed().bytes)
            #expect(oversizedError?.sqlState == "08P01")
            #expect(oversizedError?.message?.contains("10000") == true)

            let oldProtocol = try RawConnection(port: agent.port)
            oldProtocol.send(RawConnection.startupPacket([("user", "postgres")], version: 2 << 16))
            let oldError = RawConnection.firstError(in: oldProtocol.readUntilClosed().bytes)
            #expect(oldError?.sqlState == "0A000")
            #expect(oldError?.message?.contains("unsupported frontend protocol 2.0") == true)

            let garbage = try RawConnection(port: agent.port)
            garbage.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            let garbageReply = garbage.readUntilClosed()
            #expect(garbageReply.closed)
            #expect(RawConnection.firstError(in: garbageReply.bytes)?.sqlState == "08P01")

            let noTerminator = try RawConnection(port: agent.port)
            noTerminator.send(RawConnection.int32(16) + RawConnection.int32(196_608) + Array("user".utf8) + [0, 0x61, 0x62, 0x63])
            #expect(RawConnection.firstError(in: noTerminator.readUntilClosed().bytes)?.sqlState == "08P01")

            let noUser = try RawConnection(port: agent.port)
            noUser.send(RawConnection.startupPacket([("database", "postgres")]))
            #expect(RawConnection.firstError(in: noUser.readUntilClosed().bytes)?.sqlState == "28000")

            do {
                let truncated = try RawConnection(port: agent.port)
                truncated.send(Array(RawConnection.startupPacket([("user", "postgres")]).prefix(10)))
            }
            #expect(try bystander.value("SELECT 'still served'") == "still served")
            #expect(try PGConnection(agent.conninfo()).value("SELECT 1") == "1")
        }

        @Test func newerMinorProtocolIsNegotiatedDown() throws {
            let agent = try AgentProcess(pools: try Self.pool("pa_minor"))
            let raw = try RawConnection(port: agent.port)
            raw.send(RawConnection.startupPacket([("user", "postgres"), ("database", "postgres"), ("_pq_.future", "1")], version: 3 << 16 | 5))
            let reply = raw.readMessages(until: UInt8(ascii: "Z"))
            #expect(reply.first == UInt8(ascii: "v"), "NegotiateProtocolVersion comes first")
            #expect(Array(reply[5..<9]) == RawConnection.int32(3 << 16), "the agent offers 3.0")
            #expect(RawConnection.firstError(in: reply) == nil)
        }

        @Test func loginTimeoutClosesSilentClients() throws {
            let agent = try AgentProcess(pools: try Self.pool("pa_login"), agentExtra: "login_timeout = \"1s\"")
            let silent = try RawConnection(port: agent.port)
            let started = Date()
            let reply = silent.readUntilClosed()
            #expect(reply.closed)
            #expect(Date().timeIntervalSince(started) < 5)
            #expect(RawConnection.firstError(in: reply.bytes)?.message?.contains("login timeout") == true)
        }

        @Test func clientsConnectOverTheUnixSocket() throws {
            let agent = try AgentProcess(pools: try Self.pool("pa_unix"))
            let client = try PGConnection(agent.unixConninfo)
            #expect(try client.value("SELECT current_user") == "pa_unix")
        }

        @Test func backendKeyIsTheAgentsAndParametersAreReported() throws {
            let agent = try AgentProcess(pools: try Self.pool("pa_key"))
            let client = try PGConnection(agent.conninfo())
            let serverPID = try client.value("SELECT pg_backend_pid()")
            #expect(client.keyPID != 0)
            #expect(String(client.keyPID) != serverPID, "the agent issues its own BackendKeyData")
            #expect(client.parameterStatus("server_encoding") == "UTF8")
            #expect(client.parameterStatus("integer_datetimes") == "on")
        }
    }
}
