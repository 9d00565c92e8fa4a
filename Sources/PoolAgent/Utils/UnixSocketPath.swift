// Unix socket files: tell a live listener from a stale file, and create parent directories.

import ControlRPC

#if canImport(Glibc)
import Glibc
#endif

enum UnixSocketPath {
    /// True when something accepts connections on `path`.
    static func isLive(_ path: String) -> Bool {
        guard let fd = try? UnixSocket.connect(path: path) else { return false }
        close(fd)
        return true
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
