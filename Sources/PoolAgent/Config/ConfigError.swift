// A configuration problem: the file, the key and the reason, printed as one line.

public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    /// Dotted path of the offending key, e.g. `pools.app.size`; empty for file-level problems.
    public var key: String
    public var reason: String

    public init(file: String, key: String, reason: String) {
        self.file = file
        self.key = key
        self.reason = reason
    }

    public var description: String {
        self.key.isEmpty ? "\(self.file): \(self.reason)" : "\(self.file): \(self.key): \(self.reason)"
    }
}
