// A client's named prepared statements in transaction mode: what PostgreSQL would hold for it, and changes in flight.

/// The names a client has prepared, each bound to one of the pool's shared statements (an id), as PostgreSQL
/// would hold them after every message the server has answered, plus the changes still in flight.
///
/// A Parse or Close of a name is an intent until the server answers it: done, or skipped or refused (after an
/// error the server skips to the next Sync, and a rejected Parse creates nothing). Intents resolve in the
/// order they were sent. A message that names a statement is interpreted as PostgreSQL would see it: if an
/// earlier message since the last Sync failed, the server skips this one too, so the intents of the same
/// Sync are assumed done; an intent behind an earlier Sync could still go either way, and the message must
/// wait for it (`Lookup.unresolved`).
public struct ClientStatements: Sendable {
    public enum Change: Equatable, Sendable {
        case parse(name: String, statement: Int)
        case close(name: String)
        /// A Parse of a name the client already has; the server refuses it (42P05) and nothing changes.
        case duplicate(name: String, statement: Int)
        /// A simple Query: it may DEALLOCATE ALL or DISCARD ALL, so no name means anything until it is done.
        case barrier
    }

    public enum Lookup: Equatable, Sendable {
        case absent
        case exists(Int)
        /// An intent for this name sent behind an earlier Sync is still in flight.
        case unresolved
    }

    private struct Intent {
        var id: Int
        /// The server's Sync count when it was sent.
        var syncs: Int
        var change: Change
    }

    private var committed: [String: Int] = [:]
    private var intents: [Intent] = []
    private var intentHead = 0
    /// The newest intent naming each name, by intent id.
    private var newest: [String: Int] = [:]
    private var nextIntent = 0

    public init() {}

    /// Names held plus Parses in flight: what counts against the client's limit.
    public private(set) var count = 0
    /// Queries in flight that every name waits for.
    private var barriers = 0

    public var isSettled: Bool { self.intentHead == self.intents.count }

    /// No name held and nothing in flight.
    public var isEmpty: Bool { self.committed.isEmpty && self.isSettled }

    /// What `name` means to a message sent while the server's Sync count is `syncs`.
    public func lookup(_ name: String, syncs: Int) -> Lookup {
        if self.barriers > 0 { return .unresolved }
        if let id = self.newest[name], let intent = self.intent(id) {
            guard intent.syncs == syncs else { return .unresolved }
            if case .parse(_, let statement) = intent.change { return .exists(statement) }
            return .absent
        }
        return self.committed[name].map { .exists($0) } ?? .absent
    }

    /// A name the client holds (or is preparing) for statement `statement`, for messages that name it.
    public func name(of statement: Int) -> String? {
        for intent in self.intents[self.intentHead...].reversed() {
            if case .parse(let name, statement) = intent.change { return name }
        }
        return self.committed.first { $0.value == statement }?.key
    }

    /// Records a change in flight; returns its intent id for the server machine.
    public mutating func add(_ change: Change, syncs: Int) -> Int {
        let id = self.nextIntent
        self.nextIntent += 1
        self.intents.append(Intent(id: id, syncs: syncs, change: change))
        switch change {
        case .parse(let name, _):
            self.newest[name] = id
            self.count += 1
        case .close(let name):
            self.newest[name] = id
        case .duplicate:
            break
        case .barrier:
            self.barriers += 1
        }
        return id
    }

    /// The change of the oldest intent in flight, which must be `id`; nil when it is not (the caller's
    /// bookkeeping is broken and it must give up the server).
    public func change(of id: Int) -> Change? {
        self.intent(id)?.change
    }

    /// The server answered intent `id` (the oldest in flight). Returns the statement ids whose last hold
    /// by this client ended (the caller releases them), or nil when `id` is not the oldest intent.
    public mutating func resolve(_ id: Int, done: Bool) -> [Int]? {
        guard self.intentHead < self.intents.count, self.intents[self.intentHead].id == id else { return nil }
        let intent = self.intents[self.intentHead]
        self.intentHead += 1
        if self.intentHead == self.intents.count {
            self.intents.removeAll(keepingCapacity: true)
            self.intentHead = 0
        }
        var released: [Int] = []
        switch intent.change {
        case .parse(let name, let statement):
            if self.newest[name] == id { self.newest.removeValue(forKey: name) }
            if done {
                if let replaced = self.committed.updateValue(statement, forKey: name) {
                    self.count -= 1
                    released.append(replaced)
                }
            } else {
                self.count -= 1
                released.append(statement)
            }
        case .close(let name):
            if self.newest[name] == id { self.newest.removeValue(forKey: name) }
            if done, let statement = self.committed.removeValue(forKey: name) {
                self.count -= 1
                released.append(statement)
            }
        case .duplicate:
            break
        case .barrier:
            self.barriers -= 1
        }
        return released
    }

    /// DISCARD ALL or DEALLOCATE ALL ran: the names held are gone; those in flight come after it.
    public mutating func dropCommitted() -> [Int] {
        let released = Array(self.committed.values)
        self.count -= released.count
        self.committed.removeAll()
        return released
    }

    /// The client is gone: every statement it holds or has in flight is released.
    public mutating func removeAll() -> [Int] {
        var released = Array(self.committed.values)
        for intent in self.intents[self.intentHead...] {
            if case .parse(_, let statement) = intent.change { released.append(statement) }
        }
        self.committed.removeAll()
        self.intents.removeAll()
        self.intentHead = 0
        self.newest.removeAll()
        self.count = 0
        self.barriers = 0
        return released
    }

    private func intent(_ id: Int) -> Intent? {
        // Ids are consecutive: the intent's place follows from the oldest one's id.
        guard self.intentHead < self.intents.count else { return nil }
        let index = self.intentHead + (id - self.intents[self.intentHead].id)
        guard index >= self.intentHead, index < self.intents.count, self.intents[index].id == id else { return nil }
        return self.intents[index]
    }
}
