// Starts the real poolagent binary with a generated configuration and stops it after the test.

import Foundation
import Testing

final class AgentProcess: @unchecked Sendable {  // Driven from one test at a time.
    let process = Process()
    let directory: URL
    let port: Int
    let controlSocket: String
    let logFile: URL

    /// Trust for every client: the tests of pooling are not about authentication.
    static let trustEveryone = "[auth]\ntcp = \"trust\"\nunix = \"trust\""

    /// `pools` is the TOML of the [pools.*] tables (and [defaults] if wanted); the [agent] table is generated.
    /// `sections` holds the [auth] and [tls] tables.
    /// `descriptorLimit` starts the agent under `ulimit -n` (soft and hard) of that many.
    /// `environment` is added to the test's own for the agent process.
    init(pools: String, agentExtra: String = "", sections: String = AgentProcess.trustEveryone, descriptorLimit: Int? = nil,
         environment: [String: String] = [:]) throws {
        self.directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("poolagent-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        self.port = try Self.freePort()
        self.controlSocket = self.directory.appendingPathComponent("control.sock").path
        let config = """
            [agent]
            listen = ["127.0.0.1:\(self.port)"]
            unix_socket_dir = "\(self.directory.path)"
            control_socket = "\(self.controlSocket)"
            \(agentExtra.contains("shutdown_timeout") ? "" : "shutdown_timeout = \"5s\"")
            \(agentExtra)

            \(sections)

            \(pools)
            """
        let configFile = self.directory.appendingPathComponent("poolagent.toml")
        try config.write(to: configFile, atomically: true, encoding: .utf8)
        self.logFile = self.directory.appendingPathComponent("agent.log")
        _ = FileManager.default.createFile(atPath: self.logFile.path, contents: nil)
        let arguments = ["--config", configFile.path, "--log-level", "debug"]
        if let descriptorLimit {
            // exec keeps the process id: the agent is still `process`.
            self.process.executableURL = URL(fileURLWithPath: "/bin/sh")
            self.process.arguments = ["-c", "ulimit -n \(descriptorLimit) && exec \"$0\" \"$@\"", TestEnvironment.agentBinary] + arguments
        } else {
            self.process.executableURL = URL(fileURLWithPath: TestEnvironment.agentBinary)
            self.process.arguments = arguments
        }
        if !environment.isEmpty {
            self.process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, added in added }
        }
        let log = try FileHandle(forWritingTo: self.logFile)
        self.process.standardOutput = log
        self.process.standardError = log
        try self.process.run()
        try self.waitUntilListening()
    }

    deinit {
        if self.process.isRunning {
            kill(self.process.processIdentifier, SIGINT)
            if self.waitForExit(timeout: 10) == nil {
                Issue.record("poolagent did not stop within 10 s of SIGINT")
                kill(self.process.processIdentifier, SIGKILL)
                self.process.waitUntilExit()
            }
        }
        try? FileManager.default.removeItem(at: self.directory)
    }

    var log: String { (try? String(contentsOf: self.logFile, encoding: .utf8)) ?? "" }

    func conninfo(database: String = "postgres", user: String = "postgres", extra: String = "") -> String {
        "host=127.0.0.1 port=\(self.port) dbname=\(database) user=\(user) connect_timeout=10 \(extra)"
    }

    var unixConninfo: String { "host=\(self.directory.path) port=\(self.port) dbname=postgres user=postgres" }

    func signal(_ number: Int32) { kill(self.process.processIdentifier, number) }

    /// Waits for the process to exit; returns its status, or nil after `timeout`.
    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while self.process.isRunning && Date() < deadline { usleep(20_000) }
        return self.process.isRunning ? nil : self.process.terminationStatus
    }

    private func waitUntilListening() throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            guard self.process.isRunning else {
                throw PGError(message: "poolagent exited at start: \(self.log)", sqlState: nil)
            }
            // The control socket is bound last: once it exists, everything listens.
            if FileManager.default.fileExists(atPath: self.controlSocket), (try? RawConnection(port: self.port)) != nil { return }
            usleep(20_000)
        }
        throw PGError(message: "poolagent did not listen within 20 s: \(self.log)", sqlState: nil)
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(fd, pointer, length) == 0 else { return -1 }
                return getsockname(fd, pointer, &length)
            }
        }
        guard bound == 0 else { throw PGError(message: "no free port", sqlState: nil) }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Test fixtures on the real cluster: a login role per test, so its server connections can be counted.
enum Upstream {
    static func admin() throws -> PGConnection { try PGConnection(TestEnvironment.directConninfo) }

    /// Creates (or recreates) a login role and returns a pool upstream conninfo for it.
    static func role(_ name: String) throws -> String {
        let admin = try self.admin()
        try admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '\(name)'")
        try admin.query("DROP ROLE IF EXISTS \(name)")
        try admin.query("CREATE ROLE \(name) LOGIN")
        try admin.query("GRANT CREATE ON SCHEMA public TO \(name)")
        return "host=\(TestEnvironment.pgHost ?? "") port=\(TestEnvironment.pgPort ?? 5432) dbname=postgres user=\(name)"
    }

    /// Server connections of `role` as PostgreSQL sees them.
    static func connections(of role: String) throws -> Int {
        Int(try self.admin().value("SELECT count(*) FROM pg_stat_activity WHERE usename = '\(role)'") ?? "0") ?? 0
    }

    static func pids(of role: String) throws -> Set<String> {
        Set(try self.admin().query("SELECT pid FROM pg_stat_activity WHERE usename = '\(role)'").compactMap { $0[0] })
    }
}

/// Runs `body` on `count` threads at once and waits for all; returns each thread's outcome.
func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) -> [Result<T, any Error>] {
    let results = LockedBox([Result<T, any Error>?](repeating: nil, count: count))
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        let thread = Thread {
            let outcome = Result { try body(index) }
            results.mutate { $0[index] = outcome }
            group.leave()
        }
        thread.start()
    }
    group.wait()
    return results.value.map { $0! }
}

final class LockedBox<Value>: @unchecked Sendable {  // Every access goes through the lock.
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { self.stored = value }
    var value: Value { self.lock.withLock { self.stored } }
    func mutate(_ body: (inout Value) -> Void) { self.lock.withLock { body(&self.stored) } }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: TimeInterval = 5, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(50_000)
    }
    return try condition()
}
