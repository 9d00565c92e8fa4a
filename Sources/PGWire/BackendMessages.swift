// Encoders for the messages the agent writes to clients while it stands in for a server.

import NIOCore

extension ByteBuffer {
    /// Writes a typed message: the type byte, a length placeholder, the body, then the real length.
    @inlinable
    public mutating func writeMessage(_ type: UInt8, _ body: (inout ByteBuffer) -> Void) {
        self.writeInteger(type)
        let lengthIndex = self.writerIndex
        self.writeInteger(Int32(0))
        body(&self)
        self.setInteger(Int32(self.writerIndex - lengthIndex), at: lengthIndex)
    }

    public mutating func writeAuthenticationOk() {
        self.writeMessage(BackendMessageID.authentication) { $0.writeInteger(Int32(0)) }
    }

    public mutating func writeParameterStatus(name: String, value: String) {
        self.writeMessage(BackendMessageID.parameterStatus) {
            $0.writeNullTerminatedString(name)
            $0.writeNullTerminatedString(value)
        }
    }

    public mutating func writeBackendKeyData(_ key: CancelRequest) {
        self.writeMessage(BackendMessageID.backendKeyData) {
            $0.writeInteger(key.processID)
            $0.writeInteger(key.secretKey)
        }
    }

    public mutating func writeReadyForQuery(_ status: TransactionStatus) {
        self.writeMessage(BackendMessageID.readyForQuery) { $0.writeInteger(status.rawValue) }
    }

    /// NegotiateProtocolVersion: the newest minor version the agent speaks and the options it ignored.
    public mutating func writeNegotiateProtocolVersion(minorVersion: Int, unsupportedOptions: [String]) {
        self.writeMessage(BackendMessageID.negotiateProtocolVersion) {
            $0.writeInteger(Int32(3 << 16 | minorVersion))
            $0.writeInteger(Int32(unsupportedOptions.count))
            for option in unsupportedOptions { $0.writeNullTerminatedString(option) }
        }
    }

    /// A simple-protocol Query, as the agent sends for resets and parameter changes.
    public mutating func writeQuery(_ sql: String) {
        self.writeMessage(FrontendMessageID.query) { $0.writeNullTerminatedString(sql) }
    }

    public mutating func writeTerminate() {
        self.writeMessage(FrontendMessageID.terminate) { _ in }
    }
}

/// Reads the body of a ParameterStatus message.
public struct ParameterStatus: Equatable, Sendable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    public static func decode(from body: inout ByteBuffer) throws(WireError) -> ParameterStatus {
        guard let name = body.readNullTerminatedString(), let value = body.readNullTerminatedString() else {
            throw .malformed("ParameterStatus is not two null-terminated strings")
        }
        guard body.readableBytes == 0 else {
            throw .leftoverBytes(what: "ParameterStatus", count: body.readableBytes)
        }
        return ParameterStatus(name: name, value: value)
    }
}

extension TransactionStatus {
    /// Reads the body of a ReadyForQuery message.
    public static func decode(from body: inout ByteBuffer) throws(WireError) -> TransactionStatus {
        let status = try Self.decode(MessageBody(index: body.readerIndex, length: body.readableBytes), in: body)
        body.moveReaderIndex(forwardBy: 1)
        return status
    }

    /// Reads the body of a ReadyForQuery message where it lies in `buffer`, without slicing it out; inlined
    /// where the agent reads every ReadyForQuery.
    @inlinable
    public static func decode(_ body: MessageBody, in buffer: ByteBuffer) throws(WireError) -> TransactionStatus {
        guard body.length == 1, let byte = body.firstByte(in: buffer), let status = TransactionStatus(rawValue: byte) else {
            throw .malformed("ReadyForQuery carries no valid transaction status")
        }
        return status
    }
}

/// Reads the body of a DataRow message: each column as text, nil for NULL.
public enum DataRow {
    public static func decode(from body: inout ByteBuffer) throws(WireError) -> [String?] {
        guard let count = body.readInteger(as: Int16.self), count >= 0 else { throw .malformed("DataRow has no column count") }
        var columns: [String?] = []
        columns.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let length = body.readInteger(as: Int32.self) else { throw .malformed("DataRow column without a length") }
            if length < 0 {
                columns.append(nil)
                continue
            }
            guard let text = body.readString(length: Int(length)) else { throw .malformed("DataRow column longer than the message") }
            columns.append(text)
        }
        guard body.readableBytes == 0 else { throw .leftoverBytes(what: "DataRow", count: body.readableBytes) }
        return columns
    }
}

/// Reads and writes the body of a NotificationResponse (an asynchronous NOTIFY delivery).
public struct NotificationResponse: Equatable, Sendable {
    public var processID: Int32
    public var channel: String
    public var payload: String

    public init(processID: Int32, channel: String, payload: String) {
        self.processID = processID
        self.channel = channel
        self.payload = payload
    }

    public static func decode(from body: inout ByteBuffer) throws(WireError) -> NotificationResponse {
        guard let pid = body.readInteger(as: Int32.self), let channel = body.readNullTerminatedString(),
            let payload = body.readNullTerminatedString()
        else { throw .malformed("NotificationResponse is not a process ID and two null-terminated strings") }
        guard body.readableBytes == 0 else { throw .leftoverBytes(what: "NotificationResponse", count: body.readableBytes) }
        return NotificationResponse(processID: pid, channel: channel, payload: payload)
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMessage(BackendMessageID.notificationResponse) {
            $0.writeInteger(self.processID)
            $0.writeNullTerminatedString(self.channel)
            $0.writeNullTerminatedString(self.payload)
        }
    }
}
