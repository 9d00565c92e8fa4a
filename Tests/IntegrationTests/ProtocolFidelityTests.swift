// Protocol fidelity in both modes, with raw messages: pipelines with errors, Flush, named statements, big results.

import Foundation
import Testing

extension Integration {
    @Suite struct ProtocolFidelity {
        static func agent(_ role: String, mode: String, size: Int = 2) throws -> AgentProcess {
            let upstream = try Upstream.role(role)
            return try AgentProcess(pools: """
                [pools.postgres]
                upstream = "\(upstream)"
                mode = "\(mode)"
                size = \(size)
                """)
        }

        @Test(arguments: ["session", "transaction"])
        func pipelineWithAnErrorAnswersLikePostgreSQL(mode: String) throws {
            let agent = try Self.agent("pa_pipe_\(mode)", mode: mode)
            let raw = try RawConnection(port: agent.port)
            try raw.login()
            // Segment 1 fails at Parse: the server skips to Sync. Segment 2 uses a named statement.
            // Then a simple query, and a named statement closed and described again.
            raw.send(
                RawConnection.parse("", "SELEC oops") + RawConnection.bind("") + RawConnection.execute() + RawConnection.sync()
                    + RawConnection.parse("s1", "SELECT $1::int * 2") + RawConnection.bind("s1", ["21"])
                    + RawConnection.execute() + RawConnection.sync()
                    + RawConnection.query("SELECT 'q'")
                    + RawConnection.describeStatement("s1") + RawConnection.closeStatement("s1") + RawConnection.sync()
                    + RawConnection.bind("s1", ["1"]) + RawConnection.execute() + RawConnection.sync()
            )
            let types = String(raw.readTypes(untilReady: 5))
            #expect(types == "EZ" + "12DCZ" + "TDCZ" + "tT3Z" + "EZ", "got \(types)")
        }

        @Test(arguments: ["session", "transaction"])
        func flushDeliversResponsesBeforeSync(mode: String) throws {
            let agent = try Self.agent("pa_flush_\(mode)", mode: mode)
            let raw = try RawConnection(port: agent.port)
            try raw.login()
            raw.send(RawConnection.parse("f1", "SELECT 5") + RawConnection.flush())
            #expect(raw.readMessage()?.type == UInt8(ascii: "1"), "ParseComplete arrives on Flush")
            raw.send(RawConnection.bind("f1") + RawConnection.execute() + RawConnection.flush())
            let three = (0..<3).compactMap { _ in raw.readMessage()?.type }.map { Character(Unicode.Scalar($0)) }
            #expect(String(three) == "2DC")
            raw.send(RawConnection.sync())
            #expect(raw.readMessage()?.type == UInt8(ascii: "Z"))
            // The same statement parsed again is answered at once in transaction mode, by the server otherwise.
            raw.send(RawConnection.parse("f2", "SELECT 5") + RawConnection.bind("f2") + RawConnection.execute() + RawConnection.sync())
            #expect(String(raw.readTypes(untilReady: 1)) == "12DCZ")
        }

        @Test(arguments: ["session", "transaction"])
        func slowReaderOfAHundredMegabytesDoesNotGrowTheAgentOrSlowOthers(mode: String) throws {
            let agent = try Self.agent("pa_big_\(mode)", mode: mode, size: 2)
            let other = try PGConnection(agent.conninfo())
            #expect(try other.value("SELECT 1") == "1")
            let baseline = Self.rss(of: agent.process.processIdentifier)
            let raw = try RawConnection(port: agent.port)
            try raw.login()
            raw.send(RawConnection.query("SELECT repeat('x', 1048576) FROM generate_series(1, 100)"))
            let peak = LockedBox(0)
            let slowest = LockedBox(0.0)
            let done = LockedBox(false)
            let observer = Thread {
                while !done.value {
                    peak.mutate { $0 = max($0, Self.rss(of: agent.process.processIdentifier)) }
                    let started = Date()
                    _ = try? other.value("SELECT 1")
                    slowest.mutate { $0 = max($0, Date().timeIntervalSince(started)) }
                    usleep(50_000)
                }
            }
            observer.start()
            var received = 0
            var chunk = [UInt8](repeating: 0, count: 256 << 10)
            var tail: [UInt8] = []
            while true {
                let count = chunk.withUnsafeMutableBytes { recv(raw.fd, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { break }
                received += count
                tail = Array((tail + chunk[0..<count]).suffix(6))
                if tail == [UInt8(ascii: "Z"), 0, 0, 0, 5, UInt8(ascii: "I")] { break }
                usleep(8_000)  // about 30 MB/s: far slower than the server sends
            }
            done.mutate { $0 = true }
            while observer.isExecuting { usleep(10_000) }
            #expect(received > 100 << 20, "the whole result arrived")
            #expect(peak.value - baseline < 40 << 20, "agent RSS grew by \(peak.value - baseline) bytes for a 100 MB result")
            #expect(slowest.value < 0.5, "another client's query took \(slowest.value) s meanwhile")
        }

        static func rss(of pid: Int32) -> Int {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
            else { return 0 }
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) * 1024
        }
    }
}
