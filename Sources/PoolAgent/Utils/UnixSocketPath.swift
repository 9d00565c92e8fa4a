// Unix socket files: tell a live listener from a stale file, and create parent directories.

#if canImport(Glibc)
import Glibc
#endif

enum UnixSocketPath {
    /// True when something accepts connections on `path`.
    static func isLive(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0
    }

    /// Prepares `path` for binding: refuses a live socket, removes a stale one, creates the directory.
    static func prepare(_ path: String, what: String) throws(AgentStartError) {
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else {
                throw AgentStartError("\(what) \(path) exists and is not a socket")
            }
            if self.isLive(path) {
                throw AgentStartError("\(what) \(path) is in use by a running process (another poolagent?)")
            }
            unlink(path)
        }
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !directory.isEmpty { try self.makeDirectories(directory) }
    }

    private static func makeDirectories(_ path: String) throws(AgentStartError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw AgentStartError("cannot create directory \(current): \(String(cString: strerror(errno)))")
            }
        }
    }
}

/// A reason the agent cannot start, printed as one line.
public struct AgentStartError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
