// Which agents a command addresses: control sockets and globs, `ssh://` addresses, or an inventory file with
// labels and `--select`.

import TOMLKit

#if canImport(Glibc)
import Glibc
#endif

/// One agent as poolctl addresses it: a name for people and where its control socket is.
struct AgentTarget: Sendable, Equatable {
    var name: String
    /// A control socket path, or `ssh://[user@]host[:port]/path` for one on another host.
    var address: String
    var labels: [String: String] = [:]
}

/// An inventory: `[agents.<name>]` tables with `socket` and any labels as string keys.
///
///     [agents.db1-eu]
///     socket = "ssh://db1.example/run/poolagent/poolagent.sock"
///     host = "db1"
///     region = "eu"
///     role = "primary"
enum Fleet {
    static func load(_ path: String) throws(ClientError) -> [AgentTarget] {
        let text: String
        do {
            text = try readText(path)
        } catch {
            throw ClientError("\(path): \(error)")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ClientError("\(path): TOML syntax error at line \(error.source.begin.line): \(error.description)")
        } catch {
            throw ClientError("\(path): \(error)")
        }
        for key in table.keys where key != "agents" {
            throw ClientError("\(path): \(key): unknown key; expected [agents.<name>] tables")
        }
        guard let agents = table["agents"]?.table else { throw ClientError("\(path): no [agents.<name>] table") }
        var targets: [AgentTarget] = []
        for name in agents.keys.sorted() {
            guard let entry = agents[name]?.table else { throw ClientError("\(path): agents.\(name): expected a table") }
            guard let socket = entry["socket"]?.string else {
                throw ClientError("\(path): agents.\(name).socket: missing; the agent's control socket path or ssh:// address")
            }
            var labels: [String: String] = [:]
            for key in entry.keys where key != "socket" {
                guard let value = entry[key]?.string else { throw ClientError("\(path): agents.\(name).\(key): a label must be a string") }
                labels[key] = value
            }
            targets.append(AgentTarget(name: name, address: socket, labels: labels))
        }
        return targets
    }

    /// `label=value` (several values as `label=a,b`); every selector must match. `name` matches the agent's name.
    static func select(_ targets: [AgentTarget], _ selectors: [String]) throws(ClientError) -> [AgentTarget] {
        var conditions: [(String, Set<String>)] = []
        for selector in selectors {
            let parts = selector.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw ClientError("--select \(selector): expected label=value")
            }
            conditions.append((parts[0], Set(parts[1].split(separator: ",").map(String.init))))
        }
        return targets.filter { target in
            conditions.allSatisfy { label, values in
                (label == "name" ? target.name : target.labels[label]).map(values.contains) ?? false
            }
        }
    }
}

private func readText(_ path: String) throws(ClientError) -> String {
    guard let file = fopen(path, "r") else { throw ClientError(String(cString: strerror(errno))) }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count == 0 { break }
        bytes += chunk[0..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// An OpenSSH forwarding of a remote control socket to a local one (`ssh -N -L local:remote host`): no TCP port
/// is opened on either side, and the agent's own peer check sees sshd's user on the remote host.
final class SSHTunnel {
    let localSocket: String
    private let directory: String
    private let pid: pid_t

    struct Address: Equatable {
        var user: String?
        var host: String
        var port: Int?
        var path: String
    }

    /// Live tunnels, stopped if poolctl is told to stop (SIGINT, SIGTERM, SIGHUP) while they run.
    private static let live = LiveTunnels()

    /// Called before poolctl exits: when a signal is stopping the tunnels, its thread sets the exit status, and
    /// this waits for it rather than exit with what the stopped tunnels made of the command.
    static func waitIfStopping() {
        if Self.live.isStopping { while true { pause() } }
    }

    /// `ssh://[user@]host[:port]/absolute/path`.
    static func parse(_ address: String) -> Address? {
        guard address.hasPrefix("ssh://") else { return nil }
        let rest = address.dropFirst("ssh://".count)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        var authority = rest[..<slash]
        let path = String(rest[slash...])
        var user: String? = nil
        if let at = authority.lastIndex(of: "@") {
            user = String(authority[..<at])
            authority = authority[authority.index(after: at)...]
        }
        var port: Int? = nil
        if let colon = authority.lastIndex(of: ":"), !authority.hasPrefix("[") || authority[..<colon].hasSuffix("]") {
            guard let number = Int(authority[authority.index(after: colon)...]), (1...65535).contains(number) else { return nil }
            port = number
            authority = authority[..<colon]
        }
        let host = String(authority).trimmingCharacters(in: "[]")
        // Never an option to ssh.
        guard !host.isEmpty, !host.hasPrefix("-"), !(user?.hasPrefix("-") ?? false), path.count > 1 else { return nil }
        return Address(user: user, host: host, port: port, path: path)
    }

    /// Starts `ssh` (or `$POOLCTL_SSH`, split on spaces, e.g. "ssh -F /etc/poolctl/ssh_config") and waits up to
    /// `timeout` seconds for the forwarded socket.
    init(_ address: Address, timeout: Int) throws(ClientError) {
        var template = Array("/tmp/poolctl-ssh-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ClientError("cannot make a directory for the forwarded socket") }
        self.directory = String(cString: made)
        self.localSocket = self.directory + "/agent.sock"
        let command = (getenv("POOLCTL_SSH").map { String(cString: $0) } ?? "ssh").split(separator: " ").map(String.init)
        var arguments = command + [
            "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
            "-N", "-L", "\(self.localSocket):\(address.path)",
        ]
        if let port = address.port { arguments += ["-p", String(port)] }
        if let user = address.user { arguments += ["-l", user] }
        arguments += ["--", address.host]
        let errors = self.directory + "/ssh.err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        // ssh starts with no signal blocked and default dispositions, whatever poolctl inherited: close() stops it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        let spawned = posix_spawnp(&pid, arguments[0], &actions, &attributes, argv, environ)
        guard spawned == 0 else {
            Self.removeDirectory(self.directory)
            throw ClientError("cannot run \(arguments[0]): \(String(cString: strerror(spawned)))")
        }
        self.pid = pid
        Self.live.add(self)
        let deadline = time(nil) + max(5, timeout)
        while access(self.localSocket, F_OK) != 0 {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let message = (try? readText(errors))?.split(separator: "\n").last.map(String.init) ?? "ssh exited"
                Self.live.remove(self)
                Self.removeDirectory(self.directory)
                throw ClientError("ssh to \(address.host): \(message)")
            }
            guard time(nil) < deadline else {
                self.close()
                throw ClientError("ssh to \(address.host): no forwarded socket within \(max(5, timeout)) s")
            }
            usleep(20_000)
        }
    }

    /// Stops ssh (SIGTERM, SIGKILL after 2 s) and removes the forwarded socket.
    func close() {
        Self.live.remove(self)
        kill(self.pid, SIGTERM)
        var status: Int32 = 0
        var waited = 0
        while waitpid(self.pid, &status, WNOHANG) == 0 {
            if waited == 100 {
                kill(self.pid, SIGKILL)
                waitpid(self.pid, &status, 0)
                break
            }
            usleep(20_000)
            waited += 1
        }
        Self.removeDirectory(self.directory)
    }

    private static func removeDirectory(_ path: String) {
        unlink(path + "/agent.sock")
        unlink(path + "/ssh.err")
        rmdir(path)
    }
}

/// The tunnels open now; a thread waiting for SIGINT, SIGTERM or SIGHUP stops them all before poolctl exits, so
/// no ssh process or forwarded socket outlives it.
private final class LiveTunnels: @unchecked Sendable {  // Every access under the lock.
    private var lock = pthread_mutex_t()
    private var tunnels: [ObjectIdentifier: SSHTunnel] = [:]
    private var watching = false
    private var stopping = false

    var isStopping: Bool {
        pthread_mutex_lock(&self.lock)
        defer { pthread_mutex_unlock(&self.lock) }
        return self.stopping
    }

    init() { pthread_mutex_init(&self.lock, nil) }

    func add(_ tunnel: SSHTunnel) {
        pthread_mutex_lock(&self.lock)
        self.tunnels[ObjectIdentifier(tunnel)] = tunnel
        let start = !self.watching
        self.watching = true
        pthread_mutex_unlock(&self.lock)
        if start { self.watchSignals() }
    }

    func remove(_ tunnel: SSHTunnel) {
        pthread_mutex_lock(&self.lock)
        self.tunnels.removeValue(forKey: ObjectIdentifier(tunnel))
        pthread_mutex_unlock(&self.lock)
    }

    /// Blocks the signals in every thread (those made later inherit it; ssh is spawned with none blocked) and
    /// waits for them on one thread.
    private func watchSignals() {
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, signal) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        _ = spawnThread {
            var received: Int32 = 0
            sigwait(&signals, &received)
            pthread_mutex_lock(&self.lock)
            let open = Array(self.tunnels.values)
            self.tunnels = [:]
            self.stopping = true
            pthread_mutex_unlock(&self.lock)
            for tunnel in open { tunnel.close() }
            Glibc.exit(128 + received)
        }
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        String(self.drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
