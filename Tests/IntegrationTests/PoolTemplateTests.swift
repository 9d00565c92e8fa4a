// The pool template ([pools."*"]): a pool per requested database, made on first use, bounded, removed when unused.

import Foundation
import Testing

extension Integration {
    @Suite struct PoolTemplates {
        static func poolNames(_ agent: AgentProcess) throws -> [String] {
            let stats = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "stats"])
            let line = stats.output.split(separator: "\n").first.map(String.init) ?? ""
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                let result = object["result"] as? [String: Any], let pools = result["pools"] as? [[String: Any]]
            else { return [] }
            return pools.compactMap { $0["pool"] as? String ?? $0["name"] as? String }.sorted()
        }

        @Test func aTemplateMakesAPoolPerDatabaseWithinMaxPoolsAndRemovesUnusedOnes() throws {
            let upstream = try Upstream.role("pa_template").replacingOccurrences(of: " dbname=postgres", with: "")
            let admin = try Upstream.admin()
            try admin.query("DROP DATABASE IF EXISTS pa_template_db")
            try admin.query("CREATE DATABASE pa_template_db")
            defer { _ = try? admin.query("DROP DATABASE IF EXISTS pa_template_db WITH (FORCE)") }
            let agent = try AgentProcess(pools: """
                [pools."*"]
                upstream = "\(upstream)"
                mode = "transaction"
                size = 2
                max_pools = 2
                unused_timeout = "2s"
                """)
            #expect(try Self.poolNames(agent).isEmpty)

            let first = try PGConnection(agent.conninfo(database: "postgres"))
            #expect(try first.value("SELECT current_database()") == "postgres")
            let second = try PGConnection(agent.conninfo(database: "template1"))
            #expect(try second.value("SELECT current_database()") == "template1")
            #expect(try Self.poolNames(agent) == ["postgres", "template1"])

            // Two pools made: a third database waits for one to go unused.
            #expect {
                try PGConnection(agent.conninfo(database: "pa_template_db"))
            } throws: { ($0 as? PGError)?.message.contains("max_pools (2)") == true }

            second.close()
            #expect(try eventually(timeout: 8) { try Self.poolNames(agent) == ["postgres"] }, "\(agent.log)")
            let third = try PGConnection(agent.conninfo(database: "pa_template_db"))
            #expect(try third.value("SELECT current_database()") == "pa_template_db")
            // The pool in use stayed through the other's timeout.
            #expect(try first.value("SELECT 1") == "1")

            // A database the server does not have: the client gets the server's error, and the pool holds
            // no place among max_pools afterwards.
            third.close()
            #expect(try eventually(timeout: 8) { try Self.poolNames(agent) == ["postgres"] })
            #expect {
                try PGConnection(agent.conninfo(database: "pa_template_missing"))
            } throws: { ($0 as? PGError)?.message.contains("pa_template_missing") == true }
            #expect(try eventually(timeout: 5) { try Self.poolNames(agent) == ["postgres"] }, "\(agent.log)")
            let again = try PGConnection(agent.conninfo(database: "pa_template_db"))
            #expect(try again.value("SELECT current_database()") == "pa_template_db")

            let config = try Shell.run(TestEnvironment.poolctlBinary, ["--socket", agent.controlSocket, "--json", "config"])
            #expect(config.output.contains("\"max_pools\":2"), "\(config.output)")
        }
    }
}
