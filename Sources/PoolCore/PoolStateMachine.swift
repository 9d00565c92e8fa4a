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
            /// Hand `Connection` to `Request`.
            case lease(Connection, to: Request)
            /// The request queues until `deadline` unless a connection comes first (`expireWaiters` refuses
            /// it then; one timer serves the whole queue).
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

    struct ConnectionInfo {
        var createdAt: Instant
        var idleSince: Instant
        var generation: Int
        /// This connection's share of `maxLifetime` (jitter spreads expiry so connections do not expire in waves).
        var lifetimeFactor: Double
    }

    public private(set) var configuration: PoolConfiguration
    /// Idle connections, most recently used last: leases take the warmest one.
    public private(set) var idle: [Connection] = []
    public private(set) var leased: Set<Connection> = []
    public private(set) var opening = 0
    private var waiters = FIFOQueue<Waiter>()
    private var refillPausedUntil: Instant? = nil
    public private(set) var isShuttingDown = false
    /// Draining: no leases, every connection closed as it comes back, no new ones opened.
    public private(set) var isDraining = false
    private var info: [Connection: ConnectionInfo] = [:]
    /// Connections from an older generation are replaced as they come back (`retireAll`).
    private var generation = 0
    /// Connects in progress when `retireAll` ran; the next that many to open count as retired.
    private var openingRetired = 0

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
        if self.waiters.isEmpty, !self.isDraining, let connection = self.idle.popLast() {
            self.leased.insert(connection)
            return Action(.lease(connection, to: request), open: self.connectionsToOpen(now: now))
        }
        let deadline = now.advanced(by: self.configuration.waitTimeout)
        self.waiters.append(Waiter(request: request, deadline: deadline))
        return Action(.wait(request, deadline: deadline), open: self.connectionsToOpen(now: now))
    }

    /// A connection started by an `open` action is ready. `lifetimeFactor` (0.9…1.1, from the caller's
    /// random source) scales `maxLifetime` for this connection.
    public mutating func connectionOpened(_ connection: Connection, now: Instant, lifetimeFactor: Double = 1) -> Action {
        self.opening -= 1
        self.refillPausedUntil = nil
        // A connection started before `retireAll` belongs to the retired generation.
        var generation = self.generation
        if self.openingRetired > 0 {
            self.openingRetired -= 1
            generation -= 1
        }
        self.info[connection] = ConnectionInfo(createdAt: now, idleSince: now, generation: generation, lifetimeFactor: lifetimeFactor)
        return self.place(connection, now: now)
    }

    /// A connection started by an `open` action failed; the oldest waiter not covered by other
    /// connects in progress is refused with the connector's message.
    public mutating func connectionFailed(_ message: String, now: Instant) -> Action {
        self.opening -= 1
        self.openingRetired = min(self.openingRetired, self.opening)
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
        self.info.removeValue(forKey: connection)
        return Action(.none, open: self.connectionsToOpen(now: now))
    }

    /// Refuses every waiter whose deadline has passed, oldest first; also returns the earliest deadline
    /// still pending, so one timer can serve the whole queue.
    public mutating func expireWaiters(now: Instant) -> (expired: [Request], nextDeadline: Instant?) {
        // A drain holds clients without counting their wait; `resume` starts their clocks again.
        if self.isDraining { return ([], nil) }
        var expired: [Request] = []
        // Usually a leading run; after wait_timeout was lowered a later waiter can expire first.
        while let waiter = self.waiters.remove(where: { $0.deadline <= now }) {
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

    /// Periodic upkeep: closes idle connections past their lifetime, of an old generation, or unused for
    /// `idleTimeout` above `minIdle`; refills `minIdle` once a paused refill may resume.
    public mutating func maintenance(now: Instant) -> (close: [Connection], open: Int) {
        var close: [Connection] = []
        var keep: [Connection] = []
        // Oldest idle first, so idle_timeout trims the coldest and keeps the floor warm.
        for connection in self.idle {
            if self.isRetired(connection, now: now) {
                close.append(connection)
            } else {
                keep.append(connection)
            }
        }
        if let idleTimeout = self.configuration.idleTimeout {
            var surplus = keep.count - self.configuration.minIdle
            keep = keep.filter { connection in
                guard surplus > 0, let info = self.info[connection], info.idleSince.advanced(by: idleTimeout) <= now else {
                    return true
                }
                surplus -= 1
                close.append(connection)
                return false
            }
        }
        self.idle = keep
        for connection in close { self.info.removeValue(forKey: connection) }
        return (close, self.connectionsToOpen(now: now))
    }

    // MARK: Operations

    /// New limits, applied at once: idle connections above the new size are returned for closing, leased
    /// ones close when released.
    public mutating func resize(size: Int, minIdle: Int, maxOverflow: Int, now: Instant) -> (close: [Connection], open: Int) {
        self.configuration.size = size
        self.configuration.minIdle = min(minIdle, size)
        self.configuration.maxOverflow = maxOverflow
        var close: [Connection] = []
        while self.openConnections > size, !self.idle.isEmpty {
            let connection = self.idle.removeFirst()
            self.info.removeValue(forKey: connection)
            close.append(connection)
        }
        return (close, self.connectionsToOpen(now: now))
    }

    /// Changes timeouts and lifetimes; existing connections are judged by the new values from now on.
    public mutating func setPolicy(waitTimeout: Duration? = nil, maxLifetime: Duration??, idleTimeout: Duration??) {
        if let waitTimeout { self.configuration.waitTimeout = waitTimeout }
        if let maxLifetime { self.configuration.maxLifetime = maxLifetime }
        if let idleTimeout { self.configuration.idleTimeout = idleTimeout }
    }

    /// Every connection open now is replaced: idle ones are returned for closing, leased ones close when
    /// released; `minIdle` is refilled with new ones.
    public mutating func retireAll(now: Instant) -> (close: [Connection], open: Int) {
        self.generation += 1
        self.openingRetired = self.opening
        let close = self.idle
        self.idle.removeAll()
        for connection in close { self.info.removeValue(forKey: connection) }
        return (close, self.connectionsToOpen(now: now))
    }

    /// Holds new leases and closes every connection: idle ones now (returned), leased ones on release.
    public mutating func drain() -> [Connection] {
        self.isDraining = true
        let close = self.idle
        self.idle.removeAll()
        for connection in close { self.info.removeValue(forKey: connection) }
        return close
    }

    /// True once a drain has closed everything.
    public var isDrained: Bool { self.isDraining && self.openConnections == 0 && self.opening == 0 }

    /// Lifts a drain: waiters' clocks start again from `now`; returns how many connections to open and
    /// the earliest wait deadline.
    public mutating func resume(now: Instant) -> (open: Int, nextDeadline: Instant?) {
        guard self.isDraining else { return (0, nil) }
        self.isDraining = false
        let waiting = self.waiters.removeAll()
        let deadline = now.advanced(by: self.configuration.waitTimeout)
        for waiter in waiting { self.waiters.append(Waiter(request: waiter.request, deadline: deadline)) }
        return (self.connectionsToOpen(now: now), waiting.isEmpty ? nil : deadline)
    }

    /// `isRetired`, read in place: on a machine kept in a class property the non-mutating call copies the
    /// whole machine (its collections retained and released) every time.
    @inlinable
    public mutating func checkRetired(_ connection: Connection, now: Instant) -> Bool {
        self.isRetired(connection, now: now)
    }

    /// Past its lifetime or from an older generation (reconnect, changed upstream): closed when released.
    public func isRetired(_ connection: Connection, now: Instant) -> Bool {
        guard let info = self.info[connection] else { return false }
        if info.generation < self.generation { return true }
        if let lifetime = self.configuration.maxLifetime, info.createdAt.advanced(by: lifetime * info.lifetimeFactor) <= now {
            return true
        }
        return false
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
        if self.isShuttingDown || self.isDraining || self.isRetired(connection, now: now) {
            self.info.removeValue(forKey: connection)
            return Action(.close(connection), open: self.connectionsToOpen(now: now))
        }
        self.info[connection]?.idleSince = now
        // Above the hard limit (after a resize down) a connection closes even when clients wait.
        if self.openConnections + 1 > self.configuration.maximumConnections {
            self.info.removeValue(forKey: connection)
            return Action(.close(connection))
        }
        if let waiter = self.waiters.popFirst() {
            self.leased.insert(connection)
            return Action(.lease(connection, to: waiter.request), open: self.connectionsToOpen(now: now))
        }
        if self.openConnections + 1 > self.configuration.size {
            self.info.removeValue(forKey: connection)
            return Action(.close(connection))
        }
        self.idle.append(connection)
        return Action(.none)
    }

    /// Starts connects for waiters not yet covered, then for the idle floor, within the hard limits.
    private mutating func connectionsToOpen(now: Instant) -> Int {
        if self.isShuttingDown || self.isDraining { return 0 }
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
