// The extended-protocol messages whose statement names the agent reads and rewrites: Parse, Bind, Describe, Close.

import NIOCore

/// Parse: a statement name, its query text and parameter type OIDs.
public struct ParseMessage: Equatable, Sendable {
    public var statement: String
    /// The query exactly as sent: in the client's encoding, which need not be UTF-8.
    public var queryBytes: [UInt8]
    public var parameterTypes: [UInt32]

    public init(statement: String, queryBytes: [UInt8], parameterTypes: [UInt32]) {
        self.statement = statement
        self.queryBytes = queryBytes
        self.parameterTypes = parameterTypes
    }

    public init(statement: String, query: String, parameterTypes: [UInt32]) {
        self.init(statement: statement, queryBytes: Array(query.utf8), parameterTypes: parameterTypes)
    }

    /// The query as text, for display; invalid UTF-8 is replaced.
    public var query: String { String(decoding: self.queryBytes, as: UTF8.self) }

    public static func decode(from body: inout ByteBuffer) throws(WireError) -> ParseMessage {
        guard let statement = body.readNullTerminatedString(),
            let end = body.readableBytesView.firstIndex(of: 0),
            let query = body.readBytes(length: end - body.readerIndex),
            body.readInteger(as: UInt8.self) == 0,
            // An unsigned count, as PostgreSQL reads it: libpq allows up to 65535 parameters.
            let count = body.readInteger(as: UInt16.self), body.readableBytes == Int(count) * 4
        else { throw .malformed("Parse message is malformed") }
        var types: [UInt32] = []
        types.reserveCapacity(Int(count))
        for _ in 0..<count { types.append(body.readInteger(as: UInt32.self)!) }
        return ParseMessage(statement: statement, queryBytes: query, parameterTypes: types)
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMessage(FrontendMessageID.parse) {
            $0.writeNullTerminatedString(self.statement)
            $0.writeBytes(self.queryBytes)
            $0.writeInteger(UInt8(0))
            $0.writeInteger(UInt16(truncatingIfNeeded: self.parameterTypes.count))
            for type in self.parameterTypes { $0.writeInteger(type) }
        }
    }
}

/// Bind: only the portal and statement names are read; the rest is carried as it came.
public struct BindMessage: Equatable, Sendable {
    public var portal: String
    public var statement: String
    /// Formats, parameters and result formats, untouched.
    public var rest: ByteBuffer

    public init(portal: String, statement: String, rest: ByteBuffer) {
        self.portal = portal
        self.statement = statement
        self.rest = rest
    }

    public static func decode(from body: inout ByteBuffer) throws(WireError) -> BindMessage {
        guard let portal = body.readNullTerminatedString(), let statement = body.readNullTerminatedString() else {
            throw .malformed("Bind message is malformed")
        }
        return BindMessage(portal: portal, statement: statement, rest: body.readSlice(length: body.readableBytes)!)
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMessage(FrontendMessageID.bind) {
            $0.writeNullTerminatedString(self.portal)
            $0.writeNullTerminatedString(self.statement)
            $0.writeImmutableBuffer(self.rest)
        }
    }
}

/// Describe or Close: a kind (`S` statement, `P` portal) and a name.
public struct TargetMessage: Equatable, Sendable {
    public static let statement = UInt8(ascii: "S")
    public static let portal = UInt8(ascii: "P")

    public var kind: UInt8
    public var name: String

    public init(kind: UInt8, name: String) {
        self.kind = kind
        self.name = name
    }

    public var isStatement: Bool { self.kind == Self.statement }

    public static func decode(from body: inout ByteBuffer) throws(WireError) -> TargetMessage {
        guard let kind = body.readInteger(as: UInt8.self), kind == Self.statement || kind == Self.portal,
            let name = body.readNullTerminatedString(), body.readableBytes == 0
        else { throw .malformed("Describe or Close message is malformed") }
        return TargetMessage(kind: kind, name: name)
    }

    public func encode(into buffer: inout ByteBuffer, type: UInt8) {
        buffer.writeMessage(type) {
            $0.writeInteger(self.kind)
            $0.writeNullTerminatedString(self.name)
        }
    }
}

extension BackendMessageID {
    public static let parseComplete: UInt8 = 0x31  // '1'
    public static let bindComplete: UInt8 = 0x32  // '2'
    public static let closeComplete: UInt8 = 0x33  // '3'
    public static let parameterDescription: UInt8 = 0x74  // 't'
    public static let rowDescription: UInt8 = 0x54  // 'T'
    public static let noData: UInt8 = 0x6E  // 'n'
    public static let portalSuspended: UInt8 = 0x73  // 's'
}

// MARK: Peeking at names

// Transaction mode rewrites only named statements; these tell from the first bytes of a captured body, where it
// lies in the scanned buffer, whether a message names one, so the unnamed ones (most drivers' extended
// protocol) pass without being sliced or decoded.

extension MessageBody {
    /// The body's byte at `offset`, if the body is that long.
    @inlinable
    public func byte(at offset: Int, in buffer: ByteBuffer) -> UInt8? {
        offset < self.length ? buffer.getInteger(at: self.index + offset, as: UInt8.self) : nil
    }
}

extension ParseMessage {
    /// True when the Parse in `body` prepares the unnamed statement.
    @inlinable
    public static func isUnnamed(_ body: MessageBody, in buffer: ByteBuffer) -> Bool {
        body.byte(at: 0, in: buffer) == 0
    }
}

extension BindMessage {
    /// True when the Bind in `body` binds the unnamed statement; false also when the body is malformed.
    @inlinable
    public static func bindsUnnamedStatement(_ body: MessageBody, in buffer: ByteBuffer) -> Bool {
        // Usually the unnamed portal: its terminator first, then the statement name's first byte.
        if body.byte(at: 0, in: buffer) == 0 { return body.byte(at: 1, in: buffer) == 0 }
        var offset = 1
        while let byte = body.byte(at: offset, in: buffer) {
            if byte == 0 { return body.byte(at: offset + 1, in: buffer) == 0 }
            offset += 1
        }
        return false
    }
}

extension TargetMessage {
    /// True when the Describe or Close in `body` targets a named prepared statement.
    @inlinable
    public static func namesStatement(_ body: MessageBody, in buffer: ByteBuffer) -> Bool {
        guard let kind = body.byte(at: 0, in: buffer), let first = body.byte(at: 1, in: buffer) else { return false }
        return kind == Self.statement && first != 0
    }
}
