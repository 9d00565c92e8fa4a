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
            guard pattern.contains(where: { "*?[".contains($0) }) else {
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
            let job = Job {
                let outcome: Result<RPCResponse, ClientError>
                do {
                    outcome = .success(try self.call(path: socket, method: method, params: params, timeout: timeout))
                } catch let error as ClientError {
                    outcome = .failure(error)
                } catch {
                    outcome = .failure(ClientError("\(error)"))
                }
                answers.set(index, AgentAnswer(socket: socket, outcome: outcome))
            }
            var thread = pthread_t()
            pthread_create(&thread, nil, { argument in
                Unmanaged<Job>.fromOpaque(argument!).takeRetainedValue().body()
                return nil
            }, Unmanaged.passRetained(job).toOpaque())
            threads.append(thread)
        }
        for thread in threads { pthread_join(thread, nil) }
        return answers.values
    }

    /// Opens a connection, sends one request line, reads one response line.
    static func call(path: String, method: String, params: JSONValue?, timeout: Int) throws -> RPCResponse {
        let connection = try Connection(path: path, timeout: timeout)
        defer { connection.close() }
        try connection.send(RPCRequest(id: 1, method: method, params: params).json.serialized)
        let line = try connection.readLine()
        do {
            return try RPCResponse.decode(try JSONValue.parse(line))
        } catch {
            throw ClientError("invalid response: \(error)")
        }
    }

    private final class Job: @unchecked Sendable {  // Handed to exactly one thread.
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private final class Answers: @unchecked Sendable {  // Each thread writes only its own index; read after join.
        private var storage: [AgentAnswer?]
        init(count: Int) { self.storage = Array(repeating: nil, count: count) }
        func set(_ index: Int, _ answer: AgentAnswer) { self.storage[index] = answer }
        var values: [AgentAnswer] { self.storage.map { $0! } }
    }
}

/// A blocking Unix-socket connection with a receive timeout.
final class Connection {
    private let fd: Int32
    private var buffered: [UInt8] = []

    init(path: String, timeout: Int) throws {
        do {
            self.fd = try UnixSocket.connect(path: path)
        } catch {
            throw ClientError(error.description)
        }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    func close() { Glibc.close(self.fd) }

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
