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
    /// Where Prometheus text is served over HTTP (`GET /metrics`); nil: off.
    public var metricsListen: Listen?
    /// Peer uids allowed on the control socket (checked with SO_PEERCRED).
    public var controlAllowedUIDs: [Int]
    public var loginTimeout: Duration
    public var shutdownTimeout: Duration
    /// Each loop turn's output goes to the kernel in one io_uring submission (where the kernel allows
    /// io_uring), not with one send(2) per socket.
    public var ioUring: Bool
    /// Client sockets the agent keeps open at once, logged in or not; past it a new one gets 53300.
    public var maxClientConnections: Int
    /// Clients still logging in (no pool joined yet) at once; past it a new one gets 53300.
    public var maxLoginClients: Int
    /// Logged-in clients per user name across all pools; 0: no limit.
    public var maxUserConnections: Int
    /// Users who may use the admin console (the database `pgbouncer`): every command, or SHOW only.
    public var adminUsers: [String]
    public var statsUsers: [String]
    public var logLevel: String
    /// How log lines are written: logfmt (the default) or JSON objects.
    public var logFormat: AgentLogHandler.Format
    public var auth: AuthSettings
    public var tls: TLSSettings
    public var pools: [String: PoolSettings]
    /// `[pools."*"]`: pools made on first use for the databases no pool is configured for.
    public var template: PoolTemplate? = nil

    /// The settings for a client's database: its pool's, else the template's (named after the database).
    func poolSettings(for database: String) -> PoolSettings? {
        self.pools[database] ?? self.template.map { $0.settings(for: database) }
    }
}

public struct AutoscaleSettings: Sendable, Equatable {
    public var interval: Duration
    public var minimum: Int
    public var maximum: Int
}

/// What a transaction-mode pool does when a client's SQL makes session state that cannot move between servers.
public enum PinPolicy: String, Sendable, Equatable {
    /// The client keeps its server until the state is gone, within `max_pinned`.
    case allow
    /// The statement is refused with an error; the client stays connected.
    case refuse
    /// The client is disconnected.
    case close
}

public struct PoolSettings: Sendable, Equatable {
    public var name: String
    /// The libpq conninfo as written; may hold a password, so never log or show it unredacted.
    public var upstream: String
    public var mode: PoolMode
    public var size: Int
    /// `size = "auto"`: computed from the machine and capped by the upstream's max_connections at start.
    public var sizeIsAuto: Bool
    /// Autoscaling: nil when off.
    public var autoscale: AutoscaleSettings?
    /// `recycle = "adaptive"`: max_lifetime follows load between 30 min and 2 h.
    public var adaptiveRecycle: Bool
    public var minIdle: Int
    public var maxOverflow: Int
    public var waitTimeout: Duration
    public var connectTimeout: Duration
    public var resetQuery: String
    /// Transaction mode: protocol-level statements kept per server (LRU); 0 passes names through unchanged.
    public var maxPreparedStatements: Int
    /// Transaction mode: bytes of statement text the pool keeps for the named statements its clients hold.
    public var statementBudget: Int
    /// Transaction mode: named statements one client may hold.
    public var maxClientStatements: Int
    /// Logged-in clients of this pool at once; 0: no limit.
    public var maxClients: Int
    /// Transaction mode: LISTEN is served by one listener connection per pool; off, a LISTEN pins its client.
    public var listener: Bool
    /// Transaction mode: what happens to a client whose session state needs its server (see `PinPolicy`).
    public var pin: PinPolicy
    /// Transaction mode: servers pinned to clients at once; nil: half the pool size, at least 1.
    public var maxPinned: Int?
    /// Transaction mode: a pinned client idle this long is disconnected; nil: never.
    public var pinTimeout: Duration?
    /// Transaction mode: notifications held for a client that does not read before it is disconnected.
    public var notificationQueue: Int
    /// Servers older than this (±10% per server) are closed when released or idle; nil keeps them.
    public var maxLifetime: Duration?
    /// Idle servers above `min_idle` unused this long are closed; nil keeps them.
    public var idleTimeout: Duration?
    /// A server idle longer than this is checked with an empty query before it is handed out; zero: always.
    public var prePingAfter: Duration?
    /// A request running longer than this is cancelled.
    public var queryTimeout: Duration?
    /// A client that leaves its server idle inside a transaction this long is disconnected (rolled back).
    public var idleInTransactionTimeout: Duration?
    /// A client with no activity this long is disconnected.
    public var clientIdleTimeout: Duration?
    public var serverSettings: [(String, String)]
    /// Looks up passwords of users missing from the auth file; nil: off.
    public var authQuery: String?
    /// The conninfo of the auth_query connection; nil: the pool's upstream.
    public var authUpstream: String?

    public var poolConfiguration: PoolConfiguration {
        PoolConfiguration(
            size: self.size,
            minIdle: self.minIdle,
            maxOverflow: self.maxOverflow,
            waitTimeout: self.waitTimeout,
            maxLifetime: self.maxLifetime,
            idleTimeout: self.idleTimeout
        )
    }

    /// Servers that may be pinned at once: `max_pinned`, else half the current size (at least one).
    public func pinnedLimit(size: Int) -> Int { self.maxPinned ?? max(1, size / 2) }

    public static func == (lhs: PoolSettings, rhs: PoolSettings) -> Bool {
        lhs.name == rhs.name && lhs.upstream == rhs.upstream && lhs.mode == rhs.mode && lhs.size == rhs.size
            && lhs.sizeIsAuto == rhs.sizeIsAuto && lhs.autoscale == rhs.autoscale && lhs.adaptiveRecycle == rhs.adaptiveRecycle
            && lhs.minIdle == rhs.minIdle && lhs.maxOverflow == rhs.maxOverflow && lhs.waitTimeout == rhs.waitTimeout
            && lhs.connectTimeout == rhs.connectTimeout && lhs.resetQuery == rhs.resetQuery
            && lhs.maxPreparedStatements == rhs.maxPreparedStatements && lhs.statementBudget == rhs.statementBudget
            && lhs.maxClientStatements == rhs.maxClientStatements && lhs.maxClients == rhs.maxClients && lhs.maxLifetime == rhs.maxLifetime
            && lhs.listener == rhs.listener && lhs.pin == rhs.pin && lhs.maxPinned == rhs.maxPinned && lhs.pinTimeout == rhs.pinTimeout
            && lhs.notificationQueue == rhs.notificationQueue
            && lhs.idleTimeout == rhs.idleTimeout && lhs.prePingAfter == rhs.prePingAfter && lhs.queryTimeout == rhs.queryTimeout
            && lhs.idleInTransactionTimeout == rhs.idleInTransactionTimeout && lhs.clientIdleTimeout == rhs.clientIdleTimeout
            && lhs.serverSettings.elementsEqual(rhs.serverSettings) { $0 == $1 }
            && lhs.authQuery == rhs.authQuery && lhs.authUpstream == rhs.authUpstream
    }
}

/// The catch-all pool (`*` in PgBouncer's `[databases]`): a pool per requested database, made when its first
/// client has logged in, removed when unused, at most `maxPools` at once.
public struct PoolTemplate: Sendable, Equatable {
    public static let name = "*"
    /// Pool settings with the name `*`; the upstream sets no dbname.
    public var settings: PoolSettings
    public var maxPools: Int
    /// A made pool without clients this long closes its servers and goes.
    public var unusedTimeout: Duration

    func settings(for database: String) -> PoolSettings {
        var settings = self.settings
        settings.name = database
        return settings
    }
}
