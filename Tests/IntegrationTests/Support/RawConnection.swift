// Raw TCP to the agent, for bytes no driver would send: malformed startup packets and handshakes.

import Foundation

struct ServerError {
    var fields: [Character: String]
    var sqlState: String? { self.fields["C"] }
    var message: String? { self.fields["M"] }
    var severity: String? { self.fields["V"] ?? self.fields["S"] }
}

final class RawConnection {
    let fd: Int32

    init(port: Int) throws {
        self.fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw PGError(message: "connect failed: \(errno)", sqlState: nil) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(self.fd) }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Foundation.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Closes the sending half: the agent sees end of input.
    func shutdownWrite() {
        shutdown(self.fd, Int32(SHUT_WR))
    }

    /// Reads until the peer closes or `limit` bytes or the receive timeout; returns what arrived.
    func readUntilClosed(limit: Int = 1 << 20) -> (bytes: [UInt8], closed: Bool) {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while received.count < limit {
            let count = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return (received, true) }
            if count < 0 { return (received, errno == ECONNRESET) }
            received += chunk[0..<count]
        }
        return (received, false)
    }

    func readExactly(_ count: Int) -> [UInt8] {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: count)
        while received.count < count {
            let got = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, count - received.count, 0) }
            if got <= 0 { break }
            received += chunk[0..<got]
        }
        return received
    }

    /// Reads whole messages until one of type `last` (or an ErrorResponse) arrives; returns all bytes read.
    func readMessages(until last: UInt8) -> [UInt8] {
        var received: [UInt8] = []
        while true {
            let header = self.readExactly(5)
            guard header.count == 5 else { return received + header }
            let length = Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
            received += header + self.readExactly(max(0, length - 4))
            if header[0] == last || header[0] == UInt8(ascii: "E") { return received }
        }
    }

    /// The first ErrorResponse in `bytes`, if any.
    static func firstError(in bytes: [UInt8]) -> ServerError? {
        var index = 0
        while index + 5 <= bytes.count {
            let type = bytes[index]
            let length = Int(bytes[index + 1]) << 24 | Int(bytes[index + 2]) << 16 | Int(bytes[index + 3]) << 8 | Int(bytes[index + 4])
            guard length >= 4, index + 1 + length <= bytes.count else { return nil }
            if type == UInt8(ascii: "E") {
                var fields: [Character: String] = [:]
                var cursor = index + 5
                while cursor < index + 1 + length, bytes[cursor] != 0 {
                    let code = Character(Unicode.Scalar(bytes[cursor]))
                    cursor += 1
                    let end = bytes[cursor...].firstIndex(of: 0) ?? bytes.count
                    fields[code] = String(decoding: bytes[cursor..<end], as: UTF8.self)
                    cursor = end + 1
                }
                return ServerError(fields: fields)
            }
            index += 1 + length
        }
        return nil
    }

    /// Reads one typed message; nil when the peer closed.
    func readMessage() -> (type: UInt8, body: [UInt8])? {
        let header = self.readExactly(5)
        guard header.count == 5 else { return nil }
        let length = Int(header[1]) << 24 | Int(header[2]) << 16 | Int(header[3]) << 8 | Int(header[4])
        let body = self.readExactly(max(0, length - 4))
        return (header[0], body)
    }

    /// Logs in (trust) and reads up to the first ReadyForQuery.
    func login(user: String = "postgres", database: String = "postgres") throws {
        self.send(Self.startupPacket([("user", user), ("database", database)]))
        while let message = self.readMessage() {
            if message.type == UInt8(ascii: "Z") { return }
            if message.type == UInt8(ascii: "E") { throw PGError(message: "login failed", sqlState: nil) }
        }
        throw PGError(message: "closed during login", sqlState: nil)
    }

    /// Reads messages until `readyCount` ReadyForQuery messages have arrived; returns their types.
    func readTypes(untilReady readyCount: Int) -> [Character] {
        var types: [Character] = []
        var ready = 0
        while ready < readyCount, let message = self.readMessage() {
            types.append(Character(Unicode.Scalar(message.type)))
            if message.type == UInt8(ascii: "Z") { ready += 1 }
        }
        return types
    }

    static func message(_ type: Character, _ body: [UInt8]) -> [UInt8] {
        [UInt8(ascii: type.unicodeScalars.first!)] + int32(Int32(body.count + 4)) + body
    }

    static func cString(_ text: String) -> [UInt8] { Array(text.utf8) + [0] }

    static func parse(_ name: String, _ query: String) -> [UInt8] {
        message("P", cString(name) + cString(query) + [0, 0])
    }

    static func bind(_ statement: String, _ parameters: [String] = []) -> [UInt8] {
        var body = cString("") + cString(statement) + [0, 0]
        body += [UInt8(parameters.count >> 8), UInt8(parameters.count & 0xFF)]
        for parameter in parameters { body += int32(Int32(parameter.utf8.count)) + Array(parameter.utf8) }
        return message("B", body + [0, 0])
    }

    static func execute() -> [UInt8] { message("E", cString("") + int32(0)) }
    static func sync() -> [UInt8] { message("S", []) }
    static func flush() -> [UInt8] { message("H", []) }
    static func query(_ sql: String) -> [UInt8] { message("Q", cString(sql)) }
    static func describeStatement(_ name: String) -> [UInt8] { message("D", [UInt8(ascii: "S")] + cString(name)) }
    static func closeStatement(_ name: String) -> [UInt8] { message("C", [UInt8(ascii: "S")] + cString(name)) }

    static func int32(_ value: Int32) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    static func startupPacket(_ parameters: [(String, String)], version: Int32 = 196_608) -> [UInt8] {
        var body = int32(version)
        for (name, value) in parameters {
            body += Array(name.utf8) + [0] + Array(value.utf8) + [0]
        }
        body += [0]
        return int32(Int32(body.count + 4)) + body
    }
}
