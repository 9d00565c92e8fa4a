// The validated configuration of the agent and its pools, as plain values.

import CLibPQ
import PoolCore

public enum PoolMode: String, Sendable, Equatable {
    case session
    case transaction
}

public struct AgentConfiguration: Sendable, Equatable {
    public struct Listen: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var description: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }
    }

    /// The file this configuration was read from, for reload and error messages.
    public var path: String
    public var listen: [Listen]
    /// Directory for the `.s.PGSQL.<port>` Unix socket; nil means no Unix socket.
    public var unixSocketDirectory: String?
    /// Port used in the Unix socket name; the first TCP listener's port unless set.
    public var unixSocketPort: Int
    public var controlSocket: String
    public var controlSocketMode: Int
    public var loginTimeout: Duration
    public var shutdownTimeout: Duration
    public var logLevel: String
    public var pools: [String: PoolSettings]
}

public struct PoolSettings: Sendable, Equatable {
    public var name: String
    /// The libpq conninfo as written; may hold a password, so never log or show it unredacted.
    public var upstream: String
    public var mode: PoolMode
    public var size: Int
    public var minIdle: Int
    public var maxOverflow: Int
    public var waitTimeout: Duration
    public var connectTimeout: Duration
    public var resetQuery: String
    /// Transaction mode: protocol-level statements kept per server (LRU); 0 passes names through unchanged.
    public var maxPreparedStatements: Int
    public var serverSettings: [(String, String)]

    public var poolConfiguration: PoolConfiguration {
        PoolConfiguration(size: self.size, minIdle: self.minIdle, maxOverflow: self.maxOverflow, waitTimeout: self.waitTimeout)
    }

    public static func == (lhs: PoolSettings, rhs: PoolSettings) -> Bool {
        lhs.name == rhs.name && lhs.upstream == rhs.upstream && lhs.mode == rhs.mode && lhs.size == rhs.size
            && lhs.minIdle == rhs.minIdle && lhs.maxOverflow == rhs.maxOverflow && lhs.waitTimeout == rhs.waitTimeout
            && lhs.connectTimeout == rhs.connectTimeout && lhs.resetQuery == rhs.resetQuery
            && lhs.maxPreparedStatements == rhs.maxPreparedStatements
            && lhs.serverSettings.elementsEqual(rhs.serverSettings) { $0 == $1 }
    }
}
