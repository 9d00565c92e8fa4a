// The limits a pool state machine enforces: target size, idle floor, overflow and wait timeout.

public struct PoolConfiguration: Sendable, Equatable {
    /// Target number of server connections.
    public var size: Int
    /// Connections kept open and idle ahead of demand, never more than `size`.
    public var minIdle: Int
    /// Temporary connections above `size` while clients queue; closed as soon as they are released idle.
    public var maxOverflow: Int
    /// How long a client may wait for a connection before it is refused.
    public var waitTimeout: Duration
    /// How long refilling `minIdle` pauses after a failed connect, so a dead upstream is not hammered.
    public var retryDelay: Duration
    /// A connection older than this is closed when it is next released or found idle; nil keeps it.
    public var maxLifetime: Duration?
    /// An idle connection above `minIdle` unused this long is closed; nil keeps it.
    public var idleTimeout: Duration?

    public init(
        size: Int,
        minIdle: Int = 0,
        maxOverflow: Int = 0,
        waitTimeout: Duration = .seconds(30),
        retryDelay: Duration = .seconds(1),
        maxLifetime: Duration? = nil,
        idleTimeout: Duration? = nil
    ) {
        self.maxLifetime = maxLifetime
        self.idleTimeout = idleTimeout
        self.size = size
        self.minIdle = minIdle
        self.maxOverflow = maxOverflow
        self.waitTimeout = waitTimeout
        self.retryDelay = retryDelay
    }

    /// The hard limit on open plus opening connections.
    public var maximumConnections: Int { self.size + self.maxOverflow }
}
