// Talks to agents: one JSON-RPC request per control socket, all sockets at once.

import ControlRPC

#if canImport(Glibc)
import Glibc
#endif

struct ClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One agent's answer: a response, or why it could not be reached.
struct AgentAnswer: Sendable {
    var socket: String
    var outcome: Result<RPCResponse, ClientError>
}

enum ControlClient {
    /// Expands globs in the socket list (a pattern that matches nothing stays, to be reported unreachable).
    static func expand(_ patterns: [String]) -> [String] {
        var paths: [String] = []
        for pattern in patterns {
            guard !pattern.hasPrefix("ssh://"), pattern.contains(where: { "*?[".contains($0) }) else {
                paths.append(pattern)
                continue
            }
            var matches = glob_t()
            defer { globfree(&matches) }
            if glob(pattern, 0, nil, &matches) == 0 {
                for index in 0..<Int(matches.gl_pathc) {
                    if let path = matches.gl_pathv[index] { paths.append(String(cString: path)) }
                }
            } else {
                paths.append(pattern)
            }
        }
        return paths
    }

    /// Calls `method` on every socket concurrently; answers come back in socket order.
    static func callAll(_ sockets: [String], method: String, params: JSONValue?, timeout: Int) -> [AgentAnswer] {
        let answers = Answers(count: sockets.count)
        var threads: [pthread_t] = []
        for (index, socket) in sockets.enumerated() {
            threads.append(spawnThread {
                let outcome: Result<RPCResponse, ClientError>
                do {
                    outcome = .success(try self.call(path: socket, method: method, params: params, timeout: timeout))
                } catch let error as ClientError {
                    outcome = .failure(error)
                } catch {
                    outcome = .failure(ClientError("\(error)"))
                }
                answers.set(index, AgentAnswer(socket: socket, outcome: outcome))
            })
        }
        for thread in threads { pthread_join(thread, nil) }
        return answers.values
    }

    /// Opens a connection, sends one request line, reads one response line.
    static func call(path: String, method: String, params: JSONValue?, timeout: Int) throws -> RPCResponse {
        let connection = try Connection(address: path, timeout: timeout)
        defer { connection.close() }
        try connection.send(RPCRequest(id: 1, method: method, params: params).json.serialized)
        let line = try connection.readLine()
        do {
            return try RPCResponse.decode(try JSONValue.parse(line))
        } catch {
            throw ClientError("invalid response: \(error)")
        }
    }

    private final class Answers: @unchecked Sendable {  // Each thread writes only its own index; read after join.
        private var storage: [AgentAnswer?]
        init(count: Int) { self.storage = Array(repeating: nil, count: count) }
        func set(_ index: Int, _ answer: AgentAnswer) { self.storage[index] = answer }
        var values: [AgentAnswer] { self.storage.map { $0! } }
    }
}

/// Runs `body` on a new thread.
func spawnThread(_ body: @escaping () -> Void) -> pthread_t {
    final class Job: @unchecked Sendable {  // Handed to exactly one thread.
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    let job = Unmanaged.passRetained(Job(body))
    let created = pthread_create(&thread, nil, { argument in
        Unmanaged<Job>.fromOpaque(argument!).takeRetainedValue().body()
        return nil
    }, job.toOpaque())
    guard created == 0 else {
        printError("poolctl: cannot start a thread: \(String(cString: strerror(created)))")
        job.release()
        Glibc.exit(1)
    }
    return thread
}

/// Lines from several threads, whole and flushed one at a time; the worst exit code of those that ended.
final class EventOutput: @unchecked Sendable {  // Every access under the lock.
    private var lock = pthread_mutex_t()
    private var code: Int32 = 0

    init() { pthread_mutex_init(&self.lock, nil) }

    func line(_ text: String) {
        pthread_mutex_lock(&self.lock)
        print(text)
        flushOutput()
        pthread_mutex_unlock(&self.lock)
    }

    func error(_ text: String) {
        pthread_mutex_lock(&self.lock)
        printError(text)
        pthread_mutex_unlock(&self.lock)
    }

    func finished(_ code: Int32) {
        pthread_mutex_lock(&self.lock)
        self.code = max(self.code, code)
        pthread_mutex_unlock(&self.lock)
    }

    var exitCode: Int32 {
        pthread_mutex_lock(&self.lock)
        defer { pthread_mutex_unlock(&self.lock) }
        return self.code
    }
}

/// A blocking Unix-socket connection with a receive timeout; to a socket on another host through an SSH tunnel.
final class Connection {
    private let fd: Int32
    private var buffered: [UInt8] = []
    private let tunnel: SSHTunnel?

    /// `address`: a socket path or `ssh://[user@]host[:port]/path`.
    init(address: String, timeout: Int) throws {
        var tunnel: SSHTunnel? = nil
        var path = address
        if address.hasPrefix("ssh://") {
            guard let remote = SSHTunnel.parse(address) else {
                throw ClientError("expected ssh://[user@]host[:port]/path/to/control.sock, found \(address)")
            }
            tunnel = try SSHTunnel(remote, timeout: timeout)
            path = tunnel!.localSocket
        }
        do {
            self.fd = try UnixSocket.connect(path: path)
        } catch {
            tunnel?.close()
            throw ClientError(error.description)
        }
        self.tunnel = tunnel
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    func close() {
        Glibc.close(self.fd)
        self.tunnel?.close()
    }

    func send(_ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw ClientError("write failed: \(String(cString: strerror(errno)))") }
            sent += count
        }
    }

    /// The next line, without its newline.
    func readLine() throws -> [UInt8] {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let newline = self.buffered.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(self.buffered[..<newline])
                self.buffered.removeFirst(newline + 1)
                return line
            }
            let count = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else {
                if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw ClientError("no answer within the timeout") }
                throw ClientError(count == 0 ? "the agent closed the connection" : String(cString: strerror(errno)))
            }
            self.buffered += chunk[0..<count]
        }
    }
}
