// Connecting to a Unix stream socket by path: what poolctl and the agent's stale-socket check share.

#if canImport(Glibc)
import Glibc
#endif

public enum UnixSocket {
    /// A connected socket's descriptor, or the reason it could not connect (the descriptor is closed then).
    public static func connect(path: String) throws(UnixSocketError) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw UnixSocketError(String(cString: strerror(errno))) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw UnixSocketError("socket path too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw UnixSocketError(reason)
        }
        return fd
    }
}

public struct UnixSocketError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
