// ErrorResponse and NoticeResponse: the fields the agent writes and the ones it reads back from servers.

import NIOCore

public struct ErrorResponse: Equatable, Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable {
        case error = "ERROR"
        case fatal = "FATAL"
        case warning = "WARNING"
        case notice = "NOTICE"
        case panic = "PANIC"
    }

    public var severity: Severity
    public var sqlState: String
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(_ severity: Severity, sqlState: String, message: String, detail: String? = nil, hint: String? = nil) {
        self.severity = severity
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    public static func fatal(_ sqlState: String, _ message: String, detail: String? = nil) -> ErrorResponse {
        ErrorResponse(.fatal, sqlState: sqlState, message: message, detail: detail)
    }

    public var description: String { "\(self.severity.rawValue) \(self.sqlState): \(self.message)" }

    public func encode(into buffer: inout ByteBuffer, notice: Bool = false) {
        buffer.writeMessage(notice ? BackendMessageID.noticeResponse : BackendMessageID.errorResponse) {
            Self.writeField(UInt8(ascii: "S"), self.severity.rawValue, into: &$0)
            Self.writeField(UInt8(ascii: "V"), self.severity.rawValue, into: &$0)
            Self.writeField(UInt8(ascii: "C"), self.sqlState, into: &$0)
            Self.writeField(UInt8(ascii: "M"), self.message, into: &$0)
            if let detail = self.detail { Self.writeField(UInt8(ascii: "D"), detail, into: &$0) }
            if let hint = self.hint { Self.writeField(UInt8(ascii: "H"), hint, into: &$0) }
            $0.writeInteger(UInt8(0))
        }
    }

    private static func writeField(_ code: UInt8, _ value: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(code)
        // A NUL inside a field would end it early on the client; PostgreSQL never sends one.
        buffer.writeNullTerminatedString(value.contains("\0") ? String(value.filter { $0 != "\0" }) : value)
    }

    /// Reads an ErrorResponse or NoticeResponse body; unknown field codes are skipped as the protocol asks.
    public static func decode(from body: inout ByteBuffer) throws(WireError) -> ErrorResponse {
        var fields: [UInt8: String] = [:]
        while true {
            guard let code = body.readInteger(as: UInt8.self) else {
                throw .malformed("ErrorResponse is not terminated")
            }
            if code == 0 { break }
            guard let value = body.readNullTerminatedString() else {
                throw .malformed("ErrorResponse field is not terminated")
            }
            fields[code] = value
        }
        guard body.readableBytes == 0 else {
            throw .leftoverBytes(what: "ErrorResponse", count: body.readableBytes)
        }
        let severityText = fields[UInt8(ascii: "V")] ?? fields[UInt8(ascii: "S")] ?? "ERROR"
        return ErrorResponse(
            Severity(rawValue: severityText) ?? .error,
            sqlState: fields[UInt8(ascii: "C")] ?? "XX000",
            message: fields[UInt8(ascii: "M")] ?? "",
            detail: fields[UInt8(ascii: "D")],
            hint: fields[UInt8(ascii: "H")]
        )
    }

    /// An ErrorResponse body with every occurrence of the name `name` in its message replaced by
    /// `replacement`, the other fields as they came; a message that mentions it under another name (a longer
    /// one it is the start of) is left alone.
    public static func renaming(_ name: String, to replacement: String, inBody body: ByteBuffer) -> ByteBuffer? {
        var reader = body
        var out = ByteBuffer()
        out.reserveCapacity(body.readableBytes + replacement.utf8.count)
        while true {
            guard let code = reader.readInteger(as: UInt8.self) else { return nil }
            out.writeInteger(code)
            if code == 0 { break }
            guard let value = reader.readNullTerminatedString() else { return nil }
            out.writeNullTerminatedString(code == UInt8(ascii: "M") ? Self.replacingName(name, with: replacement, in: value) : value)
        }
        return out
    }

    private static func replacingName(_ name: String, with replacement: String, in text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let range = rest.firstRange(of: name) {
            let next = rest[range.upperBound...].first
            result += rest[..<range.lowerBound]
            result += next.map { $0.isNumber } == true ? String(rest[range]) : replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
