// The untyped packets a client may send before its session starts: startup, SSL/GSSENC and cancel requests.

import NIOCore

public enum StartupPacket: Equatable, Sendable {
    /// A StartupMessage. `minorVersion` > 0 asks for protocol 3.x, answered with NegotiateProtocolVersion.
    case startup(StartupMessage)
    case sslRequest
    case gssEncRequest
    case cancelRequest(CancelRequest)

    public static let sslRequestCode: Int32 = 80_877_103
    public static let gssEncRequestCode: Int32 = 80_877_104
    public static let cancelRequestCode: Int32 = 80_877_102
    /// An SSLRequest as a client sends it: length 8 and the code, big-endian.
    public static let sslRequestPacket: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]
    /// PostgreSQL's own limit on a startup packet, counted without its 4-byte length word.
    public static let maximumLength = 10_000

    /// Decodes one packet from the front of `buffer`; returns nil while it is incomplete.
    public static func decode(from buffer: inout ByteBuffer) throws(StartupError) -> StartupPacket? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return nil }
        guard length >= 8 else { throw .invalidLength(Int(length)) }
        guard length - 4 <= Self.maximumLength else { throw .tooLarge(Int(length) - 4) }
        guard buffer.readableBytes >= Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        var body = buffer.readSlice(length: Int(length) - 4)!
        let code = body.readInteger(as: Int32.self)!
        switch code {
        case Self.sslRequestCode, Self.gssEncRequestCode:
            guard body.readableBytes == 0 else { throw .invalidLength(Int(length)) }
            return code == Self.sslRequestCode ? .sslRequest : .gssEncRequest
        case Self.cancelRequestCode:
            guard body.readableBytes == 8,
                let pid = body.readInteger(as: Int32.self),
                let secret = body.readInteger(as: Int32.self)
            else { throw .invalidLength(Int(length)) }
            return .cancelRequest(CancelRequest(processID: pid, secretKey: secret))
        default:
            let major = Int(code >> 16)
            let minor = Int(code & 0xFFFF)
            guard major == 3 else { throw .unsupportedProtocol(major: major, minor: minor) }
            return .startup(try StartupMessage.decodeParameters(from: &body, minorVersion: minor))
        }
    }
}

/// A StartupMessage: protocol minor version and the key/value parameters in the order sent.
public struct StartupMessage: Equatable, Sendable {
    public var minorVersion: Int
    public var parameters: [(String, String)]

    public init(minorVersion: Int = 0, parameters: [(String, String)]) {
        self.minorVersion = minorVersion
        self.parameters = parameters
    }

    public subscript(name: String) -> String? {
        self.parameters.first { $0.0 == name }?.1
    }

    public var user: String? { self["user"] }

    /// The database asked for; PostgreSQL defaults it to the user name.
    public var database: String? { self["database"].flatMap { $0.isEmpty ? nil : $0 } ?? self.user }

    /// Protocol options (`_pq_.*`) the agent does not support; NegotiateProtocolVersion lists them.
    public var protocolOptions: [String] { self.parameters.map(\.0).filter { $0.hasPrefix("_pq_.") } }

    static func decodeParameters(from body: inout ByteBuffer, minorVersion: Int) throws(StartupError) -> StartupMessage {
        var parameters: [(String, String)] = []
        while true {
            guard let name = body.readNullTerminatedString() else {
                throw .malformed("startup packet parameters are not terminated")
            }
            if name.isEmpty { break }
            guard let value = body.readNullTerminatedString() else {
                throw .malformed("startup packet parameter \"\(name)\" has no value")
            }
            parameters.append((name, value))
        }
        guard body.readableBytes == 0 else {
            throw .malformed("startup packet has \(body.readableBytes) bytes after its terminator")
        }
        return StartupMessage(minorVersion: minorVersion, parameters: parameters)
    }

    public func encode(into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(Int32(0))
        buffer.writeInteger(Int32(3 << 16 | self.minorVersion))
        for (name, value) in self.parameters {
            buffer.writeNullTerminatedString(name)
            buffer.writeNullTerminatedString(value)
        }
        buffer.writeInteger(UInt8(0))
        buffer.setInteger(Int32(buffer.writerIndex - start), at: start)
    }

    public static func == (lhs: StartupMessage, rhs: StartupMessage) -> Bool {
        lhs.minorVersion == rhs.minorVersion && lhs.parameters.elementsEqual(rhs.parameters) { $0 == $1 }
    }
}

/// The key a client presents in a CancelRequest, matching a BackendKeyData it received.
public struct CancelRequest: Hashable, Sendable {
    public var processID: Int32
    public var secretKey: Int32

    public init(processID: Int32, secretKey: Int32) {
        self.processID = processID
        self.secretKey = secretKey
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(Int32(16))
        buffer.writeInteger(StartupPacket.cancelRequestCode)
        buffer.writeInteger(self.processID)
        buffer.writeInteger(self.secretKey)
    }
}

/// Why a startup packet was refused; `sqlState` is what PostgreSQL itself reports for it.
public enum StartupError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidLength(Int)
    case tooLarge(Int)
    case unsupportedProtocol(major: Int, minor: Int)
    case malformed(String)

    public var sqlState: String {
        switch self {
        case .unsupportedProtocol: "0A000"
        default: "08P01"
        }
    }

    public var description: String {
        switch self {
        case .invalidLength(let length):
            "invalid length of startup packet: \(length) bytes"
        case .tooLarge(let length):
            "startup packet of \(length) bytes exceeds the limit of \(StartupPacket.maximumLength) bytes"
        case .unsupportedProtocol(let major, let minor):
            "unsupported frontend protocol \(major).\(minor): server supports 3.0 to 3.0"
        case .malformed(let reason):
            reason
        }
    }
}
