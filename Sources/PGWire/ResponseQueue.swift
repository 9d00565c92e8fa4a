// The responses a server owes, in order, so the agent can drop, add or attribute them exactly.

/// What one message sent to the server (or one answer the agent gives itself) yields on the way back.
public enum ExpectedResponse: Equatable, Sendable {
    /// ParseComplete; `swallow` when the agent sent the Parse itself. `statement` is the agent's statement
    /// id the Parse creates, forgotten again if the server skips or rejects it.
    case parse(swallow: Bool, statement: Int?)
    case bind
    /// RowDescription or NoData, after a ParameterDescription for a statement.
    case describe
    /// CloseComplete; `swallow` when the agent closed a statement of its own.
    case close(swallow: Bool)
    /// CloseComplete of the agent's own Close of statement `id` (LRU eviction): always swallowed.
    case evict(Int)
    /// Rows until CommandComplete, EmptyQueryResponse or PortalSuspended (COPY included).
    case execute
    /// ReadyForQuery.
    case sync
    /// A simple Query or FunctionCall: everything up to ReadyForQuery.
    case query
    /// A response the agent writes itself (ParseComplete or CloseComplete) once all before it are through.
    case synthesize(UInt8)

    /// True for responses to extended-protocol messages the server skips after an error until Sync.
    var isSkippedAfterError: Bool {
        switch self {
        case .parse, .bind, .describe, .close, .evict, .execute, .synthesize: true
        case .sync, .query: false
        }
    }
}

/// A FIFO of expected responses with the rules of the extended query protocol.
public struct ResponseQueue: Sendable {
    /// What to do with one server message.
    public enum Disposition: Equatable, Sendable {
        case forward
        /// Do not pass this message to the client: the agent asked for it.
        case swallow
    }

    @usableFromInline var entries: [ExpectedResponse] = []
    @usableFromInline var head = 0
    /// After an error in the extended protocol the server discards every message until Sync.
    public private(set) var skippingUntilSync = false

    public init() {}

    // Read for every request the agent forwards: inlined into the caller instead of copying the queue.
    @inlinable public var isEmpty: Bool { self.head == self.entries.count }
    @inlinable public var count: Int { self.entries.count - self.head }
    @inlinable public var first: ExpectedResponse? { self.isEmpty ? nil : self.entries[self.head] }

    /// Records what the server owes for a message just sent. Returns false, recording nothing, when the
    /// server will discard the message because it is skipping until Sync.
    @discardableResult
    public mutating func append(_ response: ExpectedResponse) -> Bool {
        if response == .sync {
            self.skippingUntilSync = false
        } else if self.skippingUntilSync {
            return false
        }
        self.entries.append(response)
        return true
    }

    /// Statement ids whose Parse is still queued: the server creates them after everything before.
    public var pendingStatements: [Int] {
        self.entries[self.head...].compactMap { if case .parse(_, let id?) = $0 { id } else { nil } }
    }

    /// Takes back the last entry appended.
    public mutating func removeLast() -> ExpectedResponse? {
        guard !self.isEmpty else { return nil }
        return self.entries.popLast()
    }

    /// Appends a response the agent writes itself. Returns true when nothing is pending before it, so the
    /// caller writes it now; otherwise it is handed out by `serverMessage` in its turn.
    public mutating func appendSynthesized(_ type: UInt8) -> Bool {
        // A message the server would have skipped gets no answer from the agent either.
        if self.skippingUntilSync { return false }
        if self.isEmpty { return true }
        self.entries.append(.synthesize(type))
        return false
    }

    /// True when `serverMessage` acts on a message of `type`; for any other (DataRow, NoticeResponse …) it
    /// only answers `.forward`, so a caller may skip it.
    @inlinable
    public static func accountsFor(_ type: UInt8) -> Bool {
        switch type {
        case BackendMessageID.parseComplete, BackendMessageID.bindComplete, BackendMessageID.closeComplete,
            BackendMessageID.rowDescription, BackendMessageID.noData, BackendMessageID.commandComplete,
            BackendMessageID.emptyQueryResponse, BackendMessageID.portalSuspended, BackendMessageID.readyForQuery,
            BackendMessageID.errorResponse:
            true
        default:
            false
        }
    }

    /// True when `serverMessage` would change nothing for a message of `type` and answer `.forward`: a type it
    /// does not account for, nothing owed, or a simple Query owed, which only its ReadyForQuery ends (rows,
    /// CommandComplete and errors of a Query pass through). Checked inline for every server message.
    @inlinable
    public func passesThrough(_ type: UInt8) -> Bool {
        guard Self.accountsFor(type), self.head < self.entries.count else { return true }
        return self.entries[self.head] == .query && type != BackendMessageID.readyForQuery
    }

    /// Accounts for one server message of `type`.
    /// - Parameters:
    ///   - emit: receives each synthesized response type that becomes due after this message, in order.
    ///   - forget: receives statement ids the server did not create (their Parse was skipped or failed).
    ///   - skipped: receives every entry the server skipped after an error, so the caller can undo what it
    ///     counted or assumed for it (a Query's ReadyForQuery, an evicted statement that stays).
    public mutating func serverMessage(
        _ type: UInt8,
        emit: (UInt8) -> Void,
        forget: (Int) -> Void,
        skipped: (ExpectedResponse) -> Void = { _ in }
    ) -> Disposition {
        var disposition = Disposition.forward
        switch type {
        case BackendMessageID.parseComplete:
            if case .parse(let swallow, _)? = self.first {
                disposition = swallow ? .swallow : .forward
                self.pop()
            }
        case BackendMessageID.bindComplete:
            if self.first == .bind { self.pop() }
        case BackendMessageID.closeComplete:
            if case .close(let swallow)? = self.first {
                disposition = swallow ? .swallow : .forward
                self.pop()
            } else if case .evict? = self.first {
                disposition = .swallow
                self.pop()
            }
        case BackendMessageID.rowDescription, BackendMessageID.noData:
            if self.first == .describe { self.pop() }
        case BackendMessageID.commandComplete, BackendMessageID.emptyQueryResponse, BackendMessageID.portalSuspended:
            if self.first == .execute { self.pop() }
        case BackendMessageID.readyForQuery:
            if self.first == .sync || self.first == .query { self.pop() }
        case BackendMessageID.errorResponse:
            // An error in an extended-protocol message makes the server skip everything (a simple Query
            // too) until Sync: nothing comes for those messages. An error in a simple Query does not.
            guard let head = self.first, head.isSkippedAfterError else { return .forward }
            while let entry = self.first, entry != .sync {
                if case .parse(_, let statement?) = entry { forget(statement) }
                skipped(entry)
                self.pop()
            }
            if self.isEmpty { self.skippingUntilSync = true }
            return .forward
        default:
            return .forward
        }
        while case .synthesize(let synthesized)? = self.first {
            emit(synthesized)
            self.pop()
        }
        return disposition
    }

    /// The server entered COPY FROM STDIN for an extended-protocol Execute: it ignores the Syncs already
    /// sent behind that Execute, so they will get no ReadyForQuery. Returns how many were dropped.
    public mutating func copyInStarted() -> Int {
        guard self.first == .execute else { return 0 }
        let before = self.count
        let kept = self.entries[self.head...].filter { $0 != .sync }
        self.entries = Array(kept)
        self.head = 0
        return before - self.entries.count
    }

    /// Forgets everything, for a server whose stream is gone.
    public mutating func removeAll() {
        self.entries.removeAll(keepingCapacity: true)
        self.head = 0
        self.skippingUntilSync = false
    }

    private mutating func pop() {
        self.head += 1
        if self.head == self.entries.count {
            self.entries.removeAllKeepingStorage()
            self.head = 0
        } else if self.head >= 32 && self.head * 2 >= self.entries.count {
            self.entries.removeFirst(self.head)
            self.head = 0
        }
    }
}
