// Byte-building helpers shared by the PGWire tests: literal wire bytes in, readable bytes out.

import NIOCore

/// The big-endian bytes of a 32-bit integer, as every length and code on the wire is written.
func int32(_ value: Int32) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
}

/// The UTF-8 bytes of `text` followed by a NUL, as PostgreSQL writes strings.
func cString(_ text: String) -> [UInt8] {
    Array(text.utf8) + [0]
}

/// A typed message as a client or server would send it: type byte, length including itself, body.
func typedMessage(_ type: Character, _ body: [UInt8]) -> [UInt8] {
    [type.asciiValue!] + int32(Int32(body.count + 4)) + body
}

/// An untyped startup-phase packet: length including itself, then the body.
func untypedPacket(_ body: [UInt8]) -> [UInt8] {
    int32(Int32(body.count + 4)) + body
}

extension ByteBuffer {
    /// The readable bytes, for comparing with literal wire bytes.
    var bytes: [UInt8] { Array(self.readableBytesView) }
}

/// Splits `buffer` into typed messages by their length fields; nil unless they fill it exactly.
func typedMessages(in buffer: ByteBuffer) -> [(type: UInt8, body: ByteBuffer)]? {
    var buffer = buffer
    var messages: [(type: UInt8, body: ByteBuffer)] = []
    while buffer.readableBytes > 0 {
        guard let type = buffer.readInteger(as: UInt8.self),
            let length = buffer.readInteger(as: Int32.self), length >= 4,
            let body = buffer.readSlice(length: Int(length) - 4)
        else { return nil }
        messages.append((type, body))
    }
    return messages
}

/// The one typed message `buffer` holds; nil when it holds none, several, or a cut one.
func onlyMessage(in buffer: ByteBuffer) -> (type: UInt8, body: ByteBuffer)? {
    guard let messages = typedMessages(in: buffer), messages.count == 1 else { return nil }
    return messages[0]
}

/// Writes with `write` into a fresh buffer and returns the bytes written.
func written(_ write: (inout ByteBuffer) -> Void) -> [UInt8] {
    var buffer = ByteBuffer()
    write(&buffer)
    return buffer.bytes
}
