// Errors raised while framing or decoding PostgreSQL messages; each names what was wrong.

public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidLength(type: UInt8?, length: Int)
    case messageTooLarge(type: UInt8?, length: Int, limit: Int)
    case malformed(String)
    case leftoverBytes(what: String, count: Int)

    public var description: String {
        switch self {
        case .invalidLength(let type, let length):
            "invalid message length \(length)\(Self.describe(type))"
        case .messageTooLarge(let type, let length, let limit):
            "message of \(length) bytes\(Self.describe(type)) exceeds the limit of \(limit) bytes"
        case .malformed(let reason):
            reason
        case .leftoverBytes(let what, let count):
            "\(what) has \(count) unexpected trailing bytes"
        }
    }

    private static func describe(_ type: UInt8?) -> String {
        guard let type else { return "" }
        if type >= 0x20 && type < 0x7F {
            return " for message type '\(Character(Unicode.Scalar(type)))'"
        }
        return " for message type 0x\(String(type, radix: 16))"
    }
}
