// The authentication exchange the agent runs with clients: its requests and the client's password messages.

import NIOCore

/// Authentication request codes of the `R` message.
public enum AuthenticationCode {
    public static let ok: Int32 = 0
    public static let md5Password: Int32 = 5
    public static let sasl: Int32 = 10
    public static let saslContinue: Int32 = 11
    public static let saslFinal: Int32 = 12
}

extension ByteBuffer {
    /// AuthenticationMD5Password with its four-byte salt.
    public mutating func writeAuthenticationMD5Password(salt: [UInt8]) {
        precondition(salt.count == 4)
        self.writeMessage(BackendMessageID.authentication) {
            $0.writeInteger(AuthenticationCode.md5Password)
            $0.writeBytes(salt)
        }
    }

    /// AuthenticationSASL: the mechanisms offered, in order of preference.
    public mutating func writeAuthenticationSASL(mechanisms: [String]) {
        self.writeMessage(BackendMessageID.authentication) {
            $0.writeInteger(AuthenticationCode.sasl)
            for mechanism in mechanisms { $0.writeNullTerminatedString(mechanism) }
            $0.writeInteger(UInt8(0))
        }
    }

    /// AuthenticationSASLContinue (server-first-message) or AuthenticationSASLFinal (server-final-message).
    public mutating func writeAuthenticationSASL(code: Int32, data: [UInt8]) {
        self.writeMessage(BackendMessageID.authentication) {
            $0.writeInteger(code)
            $0.writeBytes(data)
        }
    }
}

/// The body of a SASLInitialResponse: the chosen mechanism and the client-first-message.
public struct SASLInitialResponse: Equatable, Sendable {
    public var mechanism: String
    /// Nil when the client sent a length of -1 (no initial response).
    public var data: [UInt8]?

    public init(mechanism: String, data: [UInt8]?) {
        self.mechanism = mechanism
        self.data = data
    }

    /// Reads the body of a `p` message sent in answer to AuthenticationSASL; the length must match exactly.
    public static func decode(from body: inout ByteBuffer) throws(WireError) -> SASLInitialResponse {
        guard let mechanism = body.readNullTerminatedString() else {
            throw .malformed("SASLInitialResponse: the mechanism name is not terminated")
        }
        guard let length = body.readInteger(as: Int32.self) else {
            throw .malformed("SASLInitialResponse: the response length is missing")
        }
        if length == -1 {
            guard body.readableBytes == 0 else { throw .malformed("SASLInitialResponse: bytes after an absent response") }
            return SASLInitialResponse(mechanism: mechanism, data: nil)
        }
        guard length >= 0, Int(length) == body.readableBytes else {
            throw .malformed("SASLInitialResponse: response length \(length) does not match the \(body.readableBytes) bytes sent")
        }
        return SASLInitialResponse(mechanism: mechanism, data: body.readBytes(length: Int(length)) ?? [])
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMessage(FrontendMessageID.passwordMessage) {
            $0.writeNullTerminatedString(self.mechanism)
            if let data = self.data {
                $0.writeInteger(Int32(data.count))
                $0.writeBytes(data)
            } else {
                $0.writeInteger(Int32(-1))
            }
        }
    }
}
