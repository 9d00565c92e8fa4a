// The server's messages matched against what it owes, with the rules of its main loop and of COPY FROM STDIN.

extension ServerProtocolMachine {
    private typealias Server = BackendMessageID

    /// True when `message` would change nothing and answer `.forward` for a message of `type`: notices,
    /// notifications, and the rows and descriptions of a Query or Execute under way. Checked inline for
    /// every server message; the rest go through `message` and the other handlers.
    @inlinable
    public func passesThrough(_ type: UInt8) -> Bool {
        if type == BackendMessageID.noticeResponse || type == BackendMessageID.notificationResponse { return true }
        guard self.head < self.entries.count, self.mode == .normal else { return false }
        switch self.entries[self.head] {
        case .query:
            return type == BackendMessageID.dataRow || type == BackendMessageID.rowDescription
                || type == BackendMessageID.commandComplete
        case .execute:
            return type == BackendMessageID.dataRow
        default:
            return false
        }
    }

    /// ReadyForQuery with the server's transaction status.
    public mutating func readyForQuery(_ status: TransactionStatus) -> Reaction {
        if self.inDoubt { return .close }
        guard self.mode == .normal else { return self.doubtful("ReadyForQuery during COPY") }
        self.transactionStatus = status
        var reaction = Reaction.forward
        switch self.first {
        case .sync?, .query?:
            break
        case .agentQuery?:
            reaction = .swallow
            self.events.append(.agentQueryDone)
        case .fence(answered: true)?:
            reaction = .swallow
        default:
            return self.doubtful("ReadyForQuery with no Sync or Query owed")
        }
        self.popAndSettle()
        return reaction
    }

    /// ErrorResponse; `fatal` for FATAL and PANIC, `sqlState` its code.
    public mutating func errorResponse(fatal: Bool, sqlState: String) -> Reaction {
        if self.inDoubt { return .close }
        if fatal {
            // The server ends the connection after it: nothing more is owed, and it is never reused.
            self.closing = true
            return self.owesAgentQuery ? .swallow : .forward
        }
        switch self.mode {
        case .copyIn:
            return self.copyInFailed()
        case .copyOut, .copyOutDone:
            self.mode = .normal
        case .normal:
            if self.owesUncertainSync { self.dropConsumedSyncs() }
        }
        guard let entry = self.first else { return self.doubtful("an error with nothing owed") }
        switch entry {
        case .query, .sync:
            // A Query's error ends it (its ReadyForQuery follows); an error at Sync is a failed commit.
            return .forward
        case .agentQuery:
            return .swallow
        case .parse(let kind):
            self.pop()
            let reaction: Reaction
            switch kind {
            case .client(let statement, let intent):
                if let statement { self.prepared.removeValue(forKey: statement) }
                if let intent { self.events.append(.intent(intent, done: false)) }
                reaction = .forward
            case .agent(let statement):
                self.prepared.removeValue(forKey: statement)
                // The server has a statement of that name the agent did not know of.
                if sqlState == "42P05" { self.statementsInDoubt = true }
                reaction = .forward
            case .duplicate(let intent):
                self.events.append(.intent(intent, done: false))
                reaction = sqlState == "42P05" ? .rewriteDuplicate(intent: intent) : .forward
            }
            return self.skipUntilSync() ?? reaction
        case .bind, .describe:
            // A statement the agent believed prepared here is missing: someone deallocated it.
            if sqlState == "26000" { self.statementsInDoubt = true }
            self.pop()
            return self.skipUntilSync() ?? .forward
        case .execute, .close:
            self.pop()
            return self.skipUntilSync() ?? .forward
        case .evict(let id, let confirmed):
            // The Close failed: the statement stays.
            self.pop()
            self.restore(id, confirmed: confirmed)
            return self.skipUntilSync() ?? .forward
        case .replace(let id, let confirmed):
            self.pop()
            return self.skipUntilSync(keeping: [id: confirmed]) ?? .forward
        case .copyData, .copyDone, .copyFail, .answer, .barrier, .fence:
            return self.doubtful("an error where the server owed nothing that can fail")
        }
    }

    /// CommandComplete; tags that matter beyond the transaction go to `commandTag` first.
    public mutating func commandComplete() -> Reaction {
        if self.inDoubt { return .close }
        switch self.mode {
        case .copyIn:
            if let reaction = self.copyInCompleted() { return reaction }
        case .copyOut:
            return self.doubtful("CommandComplete before the end of COPY TO STDOUT")
        case .copyOutDone:
            self.mode = .normal
        case .normal:
            if self.owesUncertainSync { self.dropConsumedSyncs() }
        }
        switch self.first {
        case .query?:
            return .forward
        case .agentQuery?:
            return .swallow
        case .execute?:
            self.popAndSettle()
            return .forward
        default:
            return self.doubtful("CommandComplete with no Query or Execute owed")
        }
    }

    /// Any other server message: ParseComplete, BindComplete, CloseComplete, descriptions, rows, COPY,
    /// EmptyQueryResponse, PortalSuspended, FunctionCallResponse, notices and notifications.
    public mutating func message(_ type: UInt8) -> Reaction {
        if self.inDoubt { return .close }
        if type == Server.noticeResponse || type == Server.notificationResponse || type == Server.parameterStatus {
            return self.owesAgentQuery ? .swallow : .forward
        }
        switch self.mode {
        case .copyIn:
            return self.doubtful("message type \(Self.name(type)) during COPY FROM STDIN")
        case .copyOut:
            switch type {
            case Server.copyData: return .forward
            case Server.copyDone:
                self.mode = .copyOutDone
                return .forward
            default: return self.doubtful("message type \(Self.name(type)) during COPY TO STDOUT")
            }
        case .copyOutDone:
            return self.doubtful("message type \(Self.name(type)) after COPY TO STDOUT ended")
        case .normal:
            break
        }
        if self.owesUncertainSync { self.dropConsumedSyncs() }
        guard self.head < self.entries.count else {
            return self.doubtful("message type \(Self.name(type)) with nothing owed")
        }
        // What is owed first decides; each kind of entry takes only a few message types.
        let entry = self.entries[self.head]
        switch entry {
        case .parse(let kind):
            guard type == Server.parseComplete else { break }
            switch kind {
            case .client(let statement, let intent):
                // Its intent resolves before the answers behind it do.
                if let statement { self.confirm(statement) }
                if let intent { self.events.append(.intent(intent, done: true)) }
                self.popAndSettle()
                return .forward
            case .agent(let statement):
                self.confirm(statement)
                self.popAndSettle()
                return .swallow
            case .duplicate:
                return self.doubtful("the server accepted a Parse of a name it already had")
            }
        case .bind:
            guard type == Server.bindComplete else { break }
            self.popAndSettle()
            return .forward
        case .describe:
            if type == Server.parameterDescription { return .forward }
            guard type == Server.rowDescription || type == Server.noData else { break }
            self.popAndSettle()
            return .forward
        case .query, .execute:
            let isQuery: Bool
            if case .query = entry { isQuery = true } else { isQuery = false }
            switch type {
            case Server.dataRow:
                return .forward
            case Server.copyInResponse:
                self.mode = .copyIn
                return .forward
            case Server.copyOutResponse:
                self.mode = .copyOut
                return .forward
            case Server.rowDescription, Server.functionCallResponse where isQuery:
                return .forward
            case Server.emptyQueryResponse:
                // A Query's empty statement; an Execute of an empty query ends here.
                if !isQuery { self.popAndSettle() }
                return .forward
            case Server.portalSuspended where !isQuery:
                // An Execute with a row limit is done for now.
                self.popAndSettle()
                return .forward
            default:
                break
            }
        case .agentQuery:
            if type == Server.dataRow || type == Server.rowDescription || type == Server.emptyQueryResponse { return .swallow }
        case .close:
            guard type == Server.closeComplete else { break }
            self.popAndSettle()
            return .forward
        case .evict, .replace:
            guard type == Server.closeComplete else { break }
            self.popAndSettle()
            return .swallow
        case .fence(answered: false):
            guard type == Server.emptyQueryResponse else { break }
            self.entries[self.head] = .fence(answered: true)
            return .swallow
        case .fence(answered: true), .sync, .copyData, .copyDone, .copyFail, .answer, .barrier:
            break
        }
        return self.doubtful("message type \(Self.name(type)) where \(entry) was owed")
    }

    /// After an extended-protocol error: the server discards everything up to the next Sync. What the
    /// discarded entries stood for is undone; a statement whose Close before a new Parse is discarded too
    /// (or failed: `keeping`, with whether it had been confirmed) stays as it was. Returns a reaction only
    /// when the machine falls into doubt.
    mutating func skipUntilSync(keeping: [Int: Bool] = [:]) -> Reaction? {
        var kept = keeping
        while let entry = self.first {
            switch entry {
            case .sync:
                return nil
            case .replace(let id, let confirmed):
                kept[id] = confirmed
            case .parse(.client(let statement, let intent)):
                if let statement {
                    if let confirmed = kept[statement] {
                        // Its own pending entry goes; with an unconfirmed Close skipped too, the statement is uncertain.
                        if !confirmed { self.prepared.removeValue(forKey: statement) }
                        self.restore(statement, confirmed: confirmed)
                    } else {
                        self.prepared.removeValue(forKey: statement)
                    }
                }
                if let intent { self.events.append(.intent(intent, done: false)) }
            case .parse(.agent(let statement)):
                self.prepared.removeValue(forKey: statement)
            case .parse(.duplicate(let intent)), .answer(_, let intent), .barrier(let intent):
                self.events.append(.intent(intent, done: false))
            case .evict(let id, let confirmed):
                self.restore(id, confirmed: confirmed)
            case .agentQuery, .fence:
                return self.doubtful("the agent's own query was skipped after a client's error")
            case .query, .bind, .describe, .execute, .close, .copyData, .copyDone, .copyFail:
                break
            }
            self.pop()
        }
        self.skippingUntilSync = true
        return nil
    }

    /// A statement whose Close the server skipped or refused is still there, if its Parse had been answered;
    /// if not, whether it exists depends on that Parse: it is `uncertain` (a later Parse of it closes it first,
    /// nothing waits for it), and the server's statements are in doubt.
    mutating func restore(_ id: Int, confirmed: Bool) {
        guard confirmed else {
            // A Parse of it still to come (behind a later Sync) settles it instead.
            if self.prepared[id] == nil { self.uncertain.insert(id) }
            self.statementsInDoubt = true
            return
        }
        self.statementClock += 1
        self.prepared[id] = Prepared(lastUse: self.statementClock, pendingSince: nil)
    }

    static func name(_ type: UInt8) -> String {
        (0x21...0x7E).contains(type) ? "'\(Character(Unicode.Scalar(type)))'" : "0x\(String(type, radix: 16))"
    }
}
