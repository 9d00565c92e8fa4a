// The pool as a value: which connections are idle, leased or opening, who waits, and what to do next.

/// A pool of connections driven by events, returning the action to perform.
///
/// The machine never touches a socket or a clock: the caller reports events with the current instant and
/// performs the returned action (lease, refuse, open, close). Limits hold at every step: open plus opening
/// connections never exceed `size + maxOverflow`, clients are served first come first served, and an
/// overflow connection is closed as soon as it comes back with nobody waiting.
public struct PoolStateMachine<Connection: Hashable & Sendable, Request: Hashable & Sendable, Instant: InstantProtocol>
where Instant.Duration == Duration {
    public struct Action: Equatable, Sendable {
        public enum Primary: Equatable, Sendable {
            case none
            /// Hand `Connection` to `Request`; cancel the request's wait timer if one was set.
            case lease(Connection, to: Request)
            /// The request queues; time it out at `deadline` unless a connection comes first.
            case wait(Request, deadline: Instant)
            /// Refuse the request with this error.
            case fail(Request, PoolError)
            /// Close this connection; the pool has already forgotten it.
            case close(Connection)
        }

        public var primary: Primary
        /// How many new connections to start opening.
        public var open: Int

        public init(_ primary: Primary, open: Int = 0) {
            self.primary = primary
            self.open = open
        }
    }

    struct Waiter {
        var request: Request
        var deadline: Instant
    }

    public private(set) var configuration: PoolConfiguration
    /// Idle connections, most recently used last: leases take the warmest one.
    public private(set) var idle: [Connection] = []
    public private(set) var leased: Set<Connection> = []
    public private(set) var opening = 0
    private var waiters = FIFOQueue<Waiter>()
    private var refillPausedUntil: Instant? = nil
    public private(set) var isShuttingDown = false

    public init(configuration: PoolConfiguration) {
        self.configuration = configuration
    }

    public var openConnections: Int { self.idle.count + self.leased.count }
    public var waiting: Int { self.waiters.count }
    public var waitingRequests: [Request] { self.waiters.elements.map(\.request) }
    public var overflowInUse: Int { max(0, self.openConnections - self.configuration.size) }

    // MARK: Events

    /// A client asks for a connection.
    public mutating func leaseRequested(_ request: Request, now: Instant) -> Action {
        if self.isShuttingDown { return Action(.fail(request, .shuttingDown)) }
        if self.waiters.isEmpty, let connection = self.idle.popLast() {
            self.leased.insert(connection)
            return Action(.lease(connection, to: request), open: self.connectionsToOpen(now: now))
        }
        let deadline = now.advanced(by: self.configuration.waitTimeout)
        self.waiters.append(Waiter(request: request, deadline: deadline))
        return Action(.wait(request, deadline: deadline), open: self.connectionsToOpen(now: now))
    }

    /// A connection started by an `open` action is ready.
    public mutating func connectionOpened(_ connection: Connection, now: Instant) -> Action {
        self.opening -= 1
        self.refillPausedUntil = nil
        return self.place(connection, now: now)
    }

    /// A connection started by an `open` action failed; the oldest waiter not covered by other
    /// connects in progress is refused with the connector's message.
    public mutating func connectionFailed(_ message: String, now: Instant) -> Action {
        self.opening -= 1
        self.refillPausedUntil = now.advanced(by: self.configuration.retryDelay)
        if self.waiters.count > self.opening, let waiter = self.waiters.popFirst() {
            return Action(.fail(waiter.request, .connectFailed(message)), open: self.connectionsToOpen(now: now))
        }
        return Action(.none, open: self.connectionsToOpen(now: now))
    }

    /// A client gives a leased connection back. `reusable` is false when it must not serve anyone again.
    public mutating func connectionReleased(_ connection: Connection, reusable: Bool, now: Instant) -> Action {
        guard self.leased.remove(connection) != nil else { return Action(.none) }
        guard reusable else {
            return Action(.close(connection), open: self.connectionsToOpen(now: now))
        }
        return self.place(connection, now: now)
    }

    /// A connection went away by itself (server closed it, network error) or was closed by the caller.
    public mutating func connectionClosed(_ connection: Connection, now: Instant) -> Action {
        if self.leased.remove(connection) == nil, let index = self.idle.firstIndex(of: connection) {
            self.idle.remove(at: index)
        }
        return Action(.none, open: self.connectionsToOpen(now: now))
    }

    /// The wait timer of `request` fired.
    public mutating func waitTimedOut(_ request: Request, now: Instant) -> Action {
        guard self.waiters.remove(where: { $0.request == request }) != nil else { return Action(.none) }
        return Action(.fail(request, .waitTimeout(self.configuration.waitTimeout)))
    }

    /// Refuses every waiter whose deadline has passed, oldest first; also returns the earliest deadline
    /// still pending, so one timer can serve the whole queue.
    public mutating func expireWaiters(now: Instant) -> (expired: [Request], nextDeadline: Instant?) {
        var expired: [Request] = []
        while let waiter = self.waiters.first, waiter.deadline <= now {
            _ = self.waiters.popFirst()
            expired.append(waiter.request)
        }
        // Deadlines are in arrival order unless wait_timeout changed; the earliest decides the next check.
        let next = self.waiters.elements.map(\.deadline).min()
        return (expired, next)
    }

    /// The client of a waiting request went away.
    public mutating func requestCancelled(_ request: Request) -> Action {
        _ = self.waiters.remove(where: { $0.request == request })
        return Action(.none)
    }

    /// Periodic upkeep: refill `minIdle` once a paused refill may resume.
    public mutating func maintenance(now: Instant) -> Action {
        Action(.none, open: self.connectionsToOpen(now: now))
    }

    /// Stop serving: every waiter is refused, and idle connections are returned for closing.
    public mutating func shutdown() -> (refused: [Request], close: [Connection]) {
        self.isShuttingDown = true
        let refused = self.waiters.removeAll().map(\.request)
        let close = self.idle
        self.idle.removeAll()
        return (refused, close)
    }

    // MARK: Internals

    private mutating func place(_ connection: Connection, now: Instant) -> Action {
        if self.isShuttingDown {
            return Action(.close(connection))
        }
        if let waiter = self.waiters.popFirst() {
            self.leased.insert(connection)
            return Action(.lease(connection, to: waiter.request), open: self.connectionsToOpen(now: now))
        }
        if self.openConnections + 1 > self.configuration.size {
            return Action(.close(connection))
        }
        self.idle.append(connection)
        return Action(.none)
    }

    /// Starts connects for waiters not yet covered, then for the idle floor, within the hard limits.
    private mutating func connectionsToOpen(now: Instant) -> Int {
        if self.isShuttingDown { return 0 }
        let total = self.openConnections + self.opening
        let forWaiters = min(
            max(0, self.waiters.count - self.opening),
            max(0, self.configuration.maximumConnections - total)
        )
        var forIdle = 0
        let refillPaused = self.refillPausedUntil.map { now < $0 } ?? false
        if !refillPaused {
            let spareOpening = max(0, self.opening + forWaiters - self.waiters.count)
            let idleShort = max(0, min(self.configuration.minIdle, self.configuration.size) - self.idle.count - spareOpening)
            forIdle = min(idleShort, max(0, self.configuration.size - total - forWaiters))
        }
        self.opening += forWaiters + forIdle
        return forWaiters + forIdle
    }
}
