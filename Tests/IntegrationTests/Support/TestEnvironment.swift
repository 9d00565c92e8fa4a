// Where the integration tests find PostgreSQL and the agent binary; under CI a missing piece fails the run.

import Foundation
import Testing

enum TestEnvironment {
    static let environment = ProcessInfo.processInfo.environment
    static let isCI = environment["CI"] == "true"

    /// Host (Unix socket directory) and port of the throwaway cluster started by scripts/test.
    static let pgHost = environment["POOLAGENT_TEST_PGHOST"]
    static let pgPort = environment["POOLAGENT_TEST_PGPORT"].flatMap(Int.init)

    /// The cluster that takes TCP connections over TLS only (scripts/test's start_tls_cluster): its port, and
    /// its directory with certs/ (ca.crt, other-ca.crt, client.crt, client.key) and run/ (its Unix socket).
    static let tlsPort = environment["POOLAGENT_TEST_TLS_PGPORT"].flatMap(Int.init)
    static let tlsDirectory = environment["POOLAGENT_TEST_TLS_DIR"]

    /// The OpenSSH server scripts/test starts (as the postgres OS user) for ssh:// control sockets.
    static let sshPort = environment["POOLAGENT_TEST_SSH_PORT"].flatMap(Int.init)
    static let sshUser = environment["POOLAGENT_TEST_SSH_USER"]
    static let sshKey = environment["POOLAGENT_TEST_SSH_KEY"]

    /// True when the TLS-only cluster is there; under CI its absence is an error, never a skip.
    static var tlsClusterAvailable: Bool {
        let ready = tlsPort != nil && tlsDirectory != nil
        if !ready && isCI {
            Issue.record("the upstream TLS tests need POOLAGENT_TEST_TLS_PGPORT and POOLAGENT_TEST_TLS_DIR; run scripts/test")
            return true
        }
        return ready
    }

    static var binaryDirectory: String {
        if let directory = environment["POOLAGENT_TEST_BINARY_DIR"] { return directory }
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        return packageRoot.appendingPathComponent(".build/debug").path
    }

    /// A Python with psycopg 3 and asyncpg, prepared by scripts/test.
    static let python = environment["POOLAGENT_TEST_PYTHON"]

    static var driversScript: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Drivers/drivers.py").path
    }

    static var agentBinary: String { binaryDirectory + "/poolagent" }
    static var poolctlBinary: String { binaryDirectory + "/poolctl" }

    /// True when the suite can run; under CI a missing cluster or binary is an error, never a skip.
    static var isAvailable: Bool {
        let ready = pgHost != nil && pgPort != nil && FileManager.default.isExecutableFile(atPath: agentBinary)
        if !ready && isCI {
            Issue.record("integration tests need POOLAGENT_TEST_PGHOST, POOLAGENT_TEST_PGPORT and \(agentBinary); run scripts/test")
            return true
        }
        return ready
    }

    /// A conninfo reaching the cluster directly as its superuser.
    static var directConninfo: String {
        "host=\(pgHost ?? "/nonexistent") port=\(pgPort ?? 5432) user=postgres dbname=postgres"
    }
}
