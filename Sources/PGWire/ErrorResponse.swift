// ErrorResponse and NoticeResponse: the fields the agent writes and the ones it reads back from servers.

import NIOCore

public struct ErrorResponse: Equatable, Sendable, CustomStringConvertible {
    public enum Severity: String, Sendable {
        case error = "ERROR"
        case fatal = "FATAL"
        case warning = "WARNING"
        case notice = "NOTICE"
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
}
