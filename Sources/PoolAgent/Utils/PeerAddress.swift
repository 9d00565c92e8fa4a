// A client's IP address and port, held inline: an idle client keeps no array for them.

/// An IPv4 or IPv6 address (4 or 16 bytes, in network order) and a TCP port, in 20 bytes of the session itself.
struct PeerAddress: Equatable {
    private var head: UInt64 = 0
    private var tail: UInt64 = 0
    /// 4 or 16.
    private(set) var count: UInt8
    let port: UInt16

    /// nil unless `bytes` is an IPv4 or IPv6 address.
    init?(bytes: [UInt8], port: Int) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.count = UInt8(bytes.count)
        self.port = UInt16(truncatingIfNeeded: port)
        withUnsafeMutableBytes(of: &self.head) { head in
            for index in 0..<min(8, bytes.count) { head[index] = bytes[index] }
        }
        withUnsafeMutableBytes(of: &self.tail) { tail in
            for index in 8..<max(8, bytes.count) { tail[index - 8] = bytes[index] }
        }
    }

    /// The address's bytes, as address rules and `inet_ntop` take them.
    var bytes: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(self.count))
        withUnsafeBytes(of: self.head) { head in
            for index in 0..<min(8, bytes.count) { bytes[index] = head[index] }
        }
        withUnsafeBytes(of: self.tail) { tail in
            for index in 8..<max(8, bytes.count) { bytes[index] = tail[index - 8] }
        }
        return bytes
    }
}
