// poolctl: the thin command-line client of the agent's JSON-RPC control socket.

import ArgumentParser
import ControlRPC

#if canImport(Glibc)
import Glibc
#endif

struct PoolCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "poolctl",
        abstract: "Steer running poolagent processes over their control sockets.",
        discussion: """
            Exit codes: 0 ok, 1 an agent answered with an error, 2 usage, 3 an agent could not be reached.

            Example:
              poolctl --socket /run/poolagent/poolagent.sock stats
            """,
        subcommands: [Stats.self, Version.self, Call.self]
    )

    @OptionGroup var connection: ConnectionOptions
}

struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Control socket path; repeat for several agents. Default: $POOLAGENT_SOCKET or /run/poolagent/poolagent.sock.")
    var socket: [String] = []

    @Flag(name: .long, help: "Print one JSON line per agent instead of a table.")
    var json = false

    var sockets: [String] {
        if !self.socket.isEmpty { return self.socket }
        if let fromEnvironment = getenv("POOLAGENT_SOCKET") { return [String(cString: fromEnvironment)] }
        return ["/run/poolagent/poolagent.sock"]
    }
}

extension PoolCtl {
    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show pool counters and gauges.",
            discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock stats --pool app"
        )
        @ParentCommand var root: PoolCtl
        @Option(help: "Only this pool.") var pool: String?

        func run() throws {
            let params: JSONValue? = self.pool.map { ["pool": .string($0)] }
            try Client.callAll(self.root.connection, method: "stats", params: params, render: Render.stats)
        }
    }

    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each agent's version and pid.",
            discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock version"
        )
        @ParentCommand var root: PoolCtl

        func run() throws {
            try Client.callAll(self.root.connection, method: "version", params: nil) { result in
                "version \(result["version"]?.stringValue ?? "?") pid \(result["pid"]?.integerValue.map(String.init) ?? "?")"
            }
        }
    }

    struct Call: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Call any method with JSON params and print the result.",
            discussion: "Example:\n  poolctl --socket /tmp/poolagent.sock call stats '{\"pool\": \"app\"}'"
        )
        @ParentCommand var root: PoolCtl
        @Argument(help: "The JSON-RPC method.") var method: String
        @Argument(help: "Params as a JSON object or array.") var params: String?

        func validate() throws {
            if let params {
                guard let value = try? JSONValue.parse(params), value.objectValue != nil || value.arrayValue != nil else {
                    throw ValidationError("params must be a JSON object or array")
                }
            }
        }

        func run() throws {
            let value = try self.params.map { try JSONValue.parse($0) }
            try Client.callAll(self.root.connection, method: self.method, params: value) { $0.serialized }
        }
    }
}

enum Render {
    static func stats(_ result: JSONValue) -> String {
        var lines = ["pool            mode     size  open  idle  active  opening  clients  waiting  connects  failures"]
        for pool in result["pools"]?.arrayValue ?? [] {
            func number(_ path: String...) -> String {
                var value: JSONValue? = pool
                for key in path { value = value?[key] }
                return value?.integerValue.map(String.init) ?? "-"
            }
            let name = pool["name"]?.stringValue ?? "?"
            let mode = pool["mode"]?.stringValue ?? "?"
            lines.append(
                [
                    name.padding(15), mode.padding(8), number("size").padding(5), number("servers", "open").padding(5),
                    number("servers", "idle").padding(5), number("servers", "active").padding(7),
                    number("servers", "opening").padding(8), number("clients", "active").padding(8),
                    number("clients", "waiting").padding(8), number("counters", "server_connects").padding(9),
                    number("counters", "server_connect_failures"),
                ].joined(separator: " ")
            )
            if let error = pool["last_error"]?.stringValue { lines.append("  last error: \(error)") }
        }
        return lines.joined(separator: "\n")
    }
}

extension String {
    func padding(_ width: Int) -> String {
        self.count >= width ? self : self + String(repeating: " ", count: width - self.count)
    }
}

enum Client {
    /// Asks every socket, prints each answer, and exits with the worst outcome's code.
    static func callAll(_ options: ConnectionOptions, method: String, params: JSONValue?, render: (JSONValue) -> String) throws {
        var exitCode: Int32 = 0
        let sockets = options.sockets
        for path in sockets {
            let prefix = sockets.count > 1 && !options.json ? "\(path): " : ""
            do {
                let response = try self.call(path: path, method: method, params: params)
                switch response.outcome {
                case .success(let result):
                    if options.json {
                        print((["socket": .string(path), "result": result] as JSONValue).serialized)
                    } else {
                        print(prefix + render(result))
                    }
                case .failure(let error):
                    exitCode = max(exitCode, 1)
                    if options.json {
                        print((["socket": .string(path), "error": ["code": JSONValue(error.code), "message": .string(error.message), "data": error.data ?? .null]] as JSONValue).serialized)
                    } else {
                        printError("\(path): \(error)")
                    }
                }
            } catch {
                exitCode = 3
                if options.json {
                    print((["socket": .string(path), "unreachable": .string("\(error)")] as JSONValue).serialized)
                } else {
                    printError("\(path): cannot reach the agent: \(error)")
                }
            }
        }
        if exitCode != 0 { throw ExitCode(exitCode) }
    }

    static func call(path: String, method: String, params: JSONValue?) throws -> RPCResponse {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClientError(String(cString: strerror(errno))) }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw ClientError("socket path too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw ClientError(String(cString: strerror(errno))) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = RPCRequest(id: 1, method: method, params: params)
        let line = Array((request.json.serialized + "\n").utf8)
        var sent = 0
        while sent < line.count {
            let count = line[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw ClientError("write failed: \(String(cString: strerror(errno)))") }
            sent += count
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !received.contains(UInt8(ascii: "\n")) {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { throw ClientError(count == 0 ? "the agent closed the connection" : String(cString: strerror(errno))) }
            received += chunk[0..<count]
        }
        let responseLine = received.prefix { $0 != UInt8(ascii: "\n") }
        do {
            return try RPCResponse.decode(try JSONValue.parse(responseLine))
        } catch {
            throw ClientError("invalid response: \(error)")
        }
    }

    static func printError(_ message: String) {
        let bytes = Array((message + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}

struct ClientError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

PoolCtl.main()
