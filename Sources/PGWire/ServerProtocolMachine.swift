// What one server connection still owes, driven by what was sent and what the server said: it alone decides reuse.

/// The protocol state of one server connection, as a value.
///
/// It is told every message sent to the server (`send`) and every message the server sends back
/// (`readyForQuery`, `errorResponse`, `commandComplete`, `message`), and answers what to do with each server
/// message: forward it, swallow it, rewrite it, or close the server. What the server owes is a queue of the
/// messages it has not yet answered, in order, matched against its responses with the rules PostgreSQL's
/// backend follows (`postgres.c`, `copyfromparse.c`): after an error in the extended protocol it skips
/// everything until Sync; during COPY FROM STDIN it reads CopyData, ignores Sync and Flush, and ends at
/// CopyDone, CopyFail or any other message. COPY and error state change only on server messages.
///
/// A server may go back to the pool only when `mayRelease`: ReadyForQuery `I` arrived and nothing is owed.
/// A server message the machine cannot place, or a sequence whose outcome it cannot tell, closes the
/// server (`Reaction.close`, then `doubt` stays set): it is never reused on a guess.
public struct ServerProtocolMachine: Sendable {
    /// One message sent to the server, or one answer the agent gives in its place, awaiting what it yields.
    public enum Pending: Equatable, Sendable {
        /// The client's Query or FunctionCall: every response up to its ReadyForQuery is forwarded.
        case query
        /// The agent's own Query: every response up to its ReadyForQuery is swallowed.
        case agentQuery
        case parse(ParseKind)
        case bind
        case describe
        case execute
        /// The client's Close of a portal or of the unnamed statement.
        case close
        /// The agent's Close of its statement `id`, evicted from this server: swallowed. `confirmed`: its
        /// Parse had been answered, so a skipped Close leaves it in place.
        case evict(Int, confirmed: Bool)
        /// The agent's Close of its statement `id` right before the client's Parse of it creates it anew, so
        /// the server parses the client's text as PostgreSQL would (it may refuse it): swallowed.
        /// `confirmed`: the statement's own Parse had been answered, so a skipped Close and Parse leave it.
        case replace(Int, confirmed: Bool)
        /// Sync. Not `certain` when a failed COPY may have consumed it: its ReadyForQuery may never come.
        case sync(certain: Bool)
        /// CopyData (one entry for a run of them), CopyDone and CopyFail: nothing answers them outside COPY.
        case copyData
        case copyDone
        case copyFail
        /// A ParseComplete or CloseComplete the agent writes itself once everything before it is through;
        /// `intent` is the client's statement change it stands for.
        case answer(type: UInt8, intent: Int)
        /// Behind a client's Query: done once everything before it is through (a DEALLOCATE ALL in the Query
        /// has dropped the client's statements by then). Nothing is sent or written for it.
        case barrier(intent: Int)
        /// The agent's empty Query after a failed COPY left the number of consumed Syncs open: everything
        /// before its EmptyQueryResponse is the client's, then it and its ReadyForQuery are swallowed.
        case fence(answered: Bool)
    }

    /// What a Parse sent to the server stands for.
    public enum ParseKind: Equatable, Sendable {
        /// The client's own Parse, under the shared statement `statement` when it is a named one: forwarded.
        case client(statement: Int?, intent: Int?)
        /// The agent prepares its statement for a Bind or Describe of the client's: swallowed.
        case agent(statement: Int)
        /// A client's Parse of a name it already has, sent under that statement's server-side name so the
        /// server refuses it itself (42P05), aborting the transaction as PostgreSQL would.
        case duplicate(intent: Int)
    }

    /// What to do with one server message.
    public enum Reaction: Equatable, Sendable {
        case forward
        /// The agent asked for it; the client must not see it.
        case swallow
        /// Forward this ErrorResponse with the server-side statement name replaced by the client's.
        case rewriteDuplicate(intent: Int)
        /// The server said something the machine cannot place: close it, never reuse it (`doubt` says why).
        case close
    }

    /// What follows from a server message, besides its own reaction, in order.
    public enum Event: Equatable, Sendable {
        /// Write this response (ParseComplete or CloseComplete) to the client, after the message just handled.
        case answer(UInt8)
        /// Write this response to the client before the message just handled: the message showed that
        /// uncertain Syncs in front of the answer were consumed.
        case answerFirst(UInt8)
        /// The client's statement change `intent` happened (`done`) or the server skipped or refused it.
        case intent(Int, done: Bool)
        /// The agent's query has its ReadyForQuery.
        case agentQueryDone
        /// A DISCARD ALL or DEALLOCATE ALL ran: every statement the client had before it is gone.
        case clientStatementsDropped
        /// Write the fence (an empty Query) to the server now.
        case sendFence
    }

    /// What becomes of a message the agent sends, or an answer it gives.
    public enum SendOutcome: Equatable, Sendable {
        /// Recorded: the server (or the agent in its turn) will answer it.
        case recorded
        /// The server will discard it: it skips everything but Sync after an error. Nothing needs sending.
        case discarded
        /// An answer with nothing before it: write it to the client now.
        case answerNow
        /// A Sync after a failed COPY: send it, then the fence (an empty Query), recorded too.
        case recordedThenFence
        /// The server cannot be told this without the machine losing track of it: close the server (`doubt`
        /// says why).
        case close
    }

    /// Command tags that change what the server holds beyond the transaction.
    public enum CommandTag: Sendable {
        /// DISCARD ALL, DEALLOCATE ALL: every prepared statement is gone.
        case statementsDropped
        /// PREPARE, DEALLOCATE, other DISCARDs: prepared statements changed in ways the agent did not make.
        case statementsChanged
        /// LISTEN: the server will deliver notifications to whoever holds it.
        case listen
    }

    @usableFromInline enum Mode: Sendable {
        case normal
        /// In COPY FROM STDIN for the head entry: the server reads the messages after it as COPY input.
        case copyIn
        /// In COPY TO STDOUT for the head entry, before and after the server's CopyDone.
        case copyOut
        case copyOutDone
    }

    @usableFromInline var entries: [Pending] = []
    @usableFromInline var head = 0
    @usableFromInline var mode = Mode.normal
    /// Extended-protocol messages went out since the last Sync (or Query): the server is inside their
    /// implicit transaction until one comes, even with every response in.
    public internal(set) var unsynced = false
    /// After an error in the extended protocol, with no Sync sent yet: the server discards all but Sync.
    public internal(set) var skippingUntilSync = false
    /// A failed COPY left Syncs whose ReadyForQuery may or may not come; the fence goes after the next Sync.
    public internal(set) var fenceOwed = false
    public internal(set) var transactionStatus = TransactionStatus.idle
    /// Syncs recorded so far: a message sent with the same count shares its Sync with every message since
    /// the last one, and is skipped by the server if any of them fails.
    public internal(set) var syncsSent = 0
    /// Why the server must be closed, once anything put the machine in doubt.
    public internal(set) var doubt: String? {
        didSet { self.inDoubt = self.doubt != nil }
    }
    /// `doubt` is set: read on every release check, where comparing the optional text would copy the machine.
    @usableFromInline var inDoubt = false
    /// The server sent a FATAL error: it is closing the connection.
    public internal(set) var closing = false
    /// The server's prepared statements may differ from `prepared`: reset them before anyone else uses it.
    public internal(set) var statementsInDoubt = false
    /// A LISTEN ran: unlisten before anyone else uses the server.
    public internal(set) var listening = false
    /// What the messages handled so far made due, in order; `takeEvents` empties it.
    @usableFromInline var events: [Event] = []

    /// One of the agent's statements on this server.
    @usableFromInline struct Prepared: Sendable {
        /// Last use, for the LRU.
        var lastUse: UInt64
        /// The server's Sync count when its Parse went out, until the server answers it.
        var pendingSince: Int?
    }

    /// Whether a statement exists on this server, as a message about to be sent must see it.
    public enum Presence: Equatable, Sendable {
        case present
        case absent
        /// Its Parse, behind an earlier Sync, is not answered yet: it may fail.
        case unresolved
    }

    /// The agent's statements on this server.
    @usableFromInline var prepared: [Int: Prepared] = [:]
    /// Statements that may or may not exist on this server: a Close of one was skipped or refused before its
    /// Parse had been answered. Not in `prepared` (a message sees them absent); a new Parse of one closes it
    /// first. Nothing waits on them.
    @usableFromInline var uncertain: Set<Int> = []
    @usableFromInline var statementClock: UInt64 = 0
    /// Most statements kept on this server; the least recently used is closed to make room.
    public let statementLimit: Int

    public init(statementLimit: Int = 0) {
        self.statementLimit = statementLimit
    }

    // MARK: State

    /// Nothing owed, no COPY, no error skipping, nothing in doubt.
    @inlinable public var isIdle: Bool {
        self.head == self.entries.count && self.mode == .normal && !self.skippingUntilSync && !self.fenceOwed
            && !self.unsynced && !self.inDoubt && !self.closing
    }

    /// The one answer to "may this server serve someone else now?": idle, outside a transaction.
    @inlinable public var mayRelease: Bool { self.isIdle && self.transactionStatus == .idle }

    /// `mayRelease`, for a machine kept in a class: read in place, where the getter would copy the machine
    /// (its arrays and dictionary retained and released) on every release check.
    @inlinable public mutating func checkRelease() -> Bool { self.mayRelease }

    /// `isIdle`, read in place likewise.
    @inlinable public mutating func checkIdle() -> Bool { self.isIdle }

    /// Entries still owed, oldest first.
    public var owed: ArraySlice<Pending> { self.entries[self.head...] }

    @inlinable public var hasEvents: Bool { !self.events.isEmpty }

    /// Hands out the events made due so far, oldest first.
    public mutating func takeEvents() -> [Event] {
        let taken = self.events
        self.events.removeAll(keepingCapacity: true)
        return taken
    }

    @inlinable var first: Pending? { self.head < self.entries.count ? self.entries[self.head] : nil }

    /// A Sync a failed COPY may have consumed is what the server answers now.
    @inlinable var owesUncertainSync: Bool {
        guard self.head < self.entries.count, case .sync(certain: false) = self.entries[self.head] else { return false }
        return true
    }

    /// The agent's own query is what the server answers now.
    var owesAgentQuery: Bool {
        guard self.head < self.entries.count, case .agentQuery = self.entries[self.head] else { return false }
        return true
    }

    // MARK: Sending

    /// Records a message sent to the server (or an answer the agent will give); see `SendOutcome`.
    public mutating func send(_ pending: Pending) -> SendOutcome {
        if self.inDoubt { return .close }
        if self.skippingUntilSync || self.fenceOwed { return self.sendAfterFailure(pending) }
        let empty = self.head == self.entries.count
        switch pending {
        case .parse, .bind, .describe, .execute, .close, .evict, .replace:
            self.unsynced = true
        case .sync:
            self.syncsSent += 1
            self.unsynced = false
        case .query:
            self.unsynced = false
        case .answer:
            if empty { return .answerNow }
        case .copyData:
            // Outside COPY the server ignores COPY messages; only a COPY that may still start reads them.
            if empty { return .discarded }
            if case .copyData? = self.entries.last { return .recorded }
        case .copyDone, .copyFail:
            if empty { return .discarded }
        case .agentQuery, .fence, .barrier:
            break
        }
        self.entries.append(pending)
        return .recorded
    }

    /// `send` while the server skips to the next Sync after an error, or a failed COPY owes its fence.
    private mutating func sendAfterFailure(_ pending: Pending) -> SendOutcome {
        if self.skippingUntilSync {
            guard case .sync = pending else { return .discarded }
            self.skippingUntilSync = false
            if !self.fenceOwed {
                self.syncsSent += 1
                self.unsynced = false
                self.entries.append(pending)
                return .recorded
            }
        }
        switch pending {
        case .copyData, .copyDone, .copyFail:
            // Nothing answers these, whether the server is still skipping or not.
            return .discarded
        case .sync:
            // After this Sync the server runs the fence whatever the failed COPY consumed.
            self.fenceOwed = false
            self.unsynced = false
            self.syncsSent += 1
            self.insertCertainSync()
            self.entries.append(.fence(answered: false))
            return .recordedThenFence
        default:
            return self.enterDoubt("the client sent a request before the Sync that ends a failed COPY")
        }
    }

    // MARK: Statements on this server

    /// Whether the agent's statement `id` exists on this server for a message sent now; marked as just used
    /// when present. A Parse in flight counts as done for messages behind the same Sync: if it fails, the
    /// server skips them too.
    public mutating func presence(of id: Int) -> Presence {
        guard var statement = self.prepared[id] else { return .absent }
        if let since = statement.pendingSince, since != self.syncsSent { return .unresolved }
        self.statementClock += 1
        statement.lastUse = self.statementClock
        self.prepared[id] = statement
        return .present
    }

    public var preparedCount: Int { self.prepared.count }

    /// True when the agent's statement `id` exists on this server or is being prepared, without marking it.
    public func holds(_ id: Int) -> Bool { self.prepared[id] != nil }

    /// Notes that the agent's statement `id` is being prepared here (its Parse goes out next); returns the
    /// statements to close first, each with whether its own Parse had been answered: the least recently used
    /// one when the server already holds `statementLimit` of them, and `id` itself when it may exist
    /// (`uncertain`), so the Parse cannot fail for a name the server already has.
    public mutating func prepare(_ id: Int) -> [(id: Int, confirmed: Bool)] {
        var closes: [(id: Int, confirmed: Bool)] = []
        if self.prepared.count >= self.statementLimit, let oldest = self.prepared.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            self.prepared.removeValue(forKey: oldest.key)
            closes.append((oldest.key, oldest.value.pendingSince == nil))
        }
        if self.uncertain.remove(id) != nil { closes.append((id, false)) }
        self.statementClock += 1
        self.prepared[id] = Prepared(lastUse: self.statementClock, pendingSince: self.syncsSent)
        return closes
    }

    /// Notes that the agent's statement `id`, present here, is closed and parsed again (see `Pending.replace`);
    /// returns whether its earlier Parse had been answered.
    public mutating func reprepare(_ id: Int) -> Bool {
        let confirmed = self.prepared[id]?.pendingSince == nil
        self.statementClock += 1
        self.prepared[id] = Prepared(lastUse: self.statementClock, pendingSince: self.syncsSent)
        return confirmed
    }

    /// The server answered the Parse of statement `id`.
    mutating func confirm(_ id: Int) {
        self.prepared[id]?.pendingSince = nil
        self.uncertain.remove(id)
    }

    /// The agent ran DEALLOCATE ALL (and UNLISTEN *): the server holds none of its statements.
    public mutating func sessionStateReset() {
        self.prepared.removeAll()
        self.uncertain.removeAll()
        self.statementsInDoubt = false
        self.listening = false
    }

    /// A command tag of one of the kinds in `CommandTag` came from the server.
    public mutating func commandTag(_ tag: CommandTag) {
        switch tag {
        case .statementsDropped:
            // Gone, all but those whose Parse comes later in the same pipeline.
            var later = Set<Int>()
            for entry in self.entries[self.head...] {
                switch entry {
                case .parse(.client(let id?, _)), .parse(.agent(let id)): later.insert(id)
                default: break
                }
            }
            self.prepared = self.prepared.filter { later.contains($0.key) }
            self.uncertain.removeAll()
            // A Close still owed was counted on a statement that is gone now: if it is skipped, nothing stays.
            for index in self.head..<self.entries.count {
                switch self.entries[index] {
                case .evict(let id, true): self.entries[index] = .evict(id, confirmed: false)
                case .replace(let id, true): self.entries[index] = .replace(id, confirmed: false)
                default: break
                }
            }
            self.events.append(.clientStatementsDropped)
        case .statementsChanged:
            self.statementsInDoubt = true
        case .listen:
            self.listening = true
        }
    }

    // MARK: Doubt

    /// Marks the server as beyond repair: every later reaction closes it.
    @discardableResult
    mutating func enterDoubt(_ reason: String) -> SendOutcome {
        if self.doubt == nil { self.doubt = reason }
        return .close
    }

    mutating func doubtful(_ reason: String) -> Reaction {
        self.enterDoubt(reason)
        return .close
    }

    // MARK: Queue

    @usableFromInline mutating func pop() {
        self.head += 1
        if self.head == self.entries.count {
            self.entries.removeAllKeepingStorage()
            self.head = 0
        } else if self.head >= 32 && self.head * 2 >= self.entries.count {
            self.entries.removeFirst(self.head)
            self.head = 0
        }
    }

    /// The head was answered: on to the next, handing out what became due (`settle`) when the next is an
    /// answer of the agent's or a COPY message, not a request.
    @inlinable mutating func popAndSettle() {
        self.pop()
        guard self.head < self.entries.count else { return }
        switch self.entries[self.head] {
        case .answer, .barrier, .copyData, .copyDone, .copyFail: self.settle()
        default: break
        }
    }

    /// After the head was answered: answers now due are handed out (`first`: before the message being
    /// handled), and COPY messages the server reads in its main loop (where it ignores them) are dropped.
    @usableFromInline
    mutating func settle(first: Bool = false) {
        while self.head < self.entries.count {
            switch self.entries[self.head] {
            case .answer(let type, let intent):
                self.events.append(first ? .answerFirst(type) : .answer(type))
                self.events.append(.intent(intent, done: true))
            case .barrier(let intent):
                self.events.append(.intent(intent, done: true))
            case .copyData, .copyDone, .copyFail:
                guard self.mode == .normal else { return }
            default:
                return
            }
            self.pop()
        }
    }

}
