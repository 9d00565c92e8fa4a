// The end of COPY FROM STDIN: which of the messages sent after the COPY the server read as its input.

extension ServerProtocolMachine {
    /// COPY FROM STDIN ended with CommandComplete: the server read every message after the COPY's Query or
    /// Execute up to the first CopyDone, ignoring Syncs (and Flushes) on the way, as `CopyGetData` does.
    /// Anything else on the way would have failed the COPY instead. Returns a reaction only in doubt.
    mutating func copyInCompleted() -> Reaction? {
        let regionStart = self.copyInputStart
        var index = regionStart
        while index < self.entries.count {
            switch self.entries[index] {
            case .sync, .copyData:
                index += 1
            case .copyDone:
                let consumedSync = self.entries[regionStart...index].contains { if case .sync = $0 { true } else { false } }
                self.entries.removeSubrange(regionStart...index)
                self.mode = .normal
                // An Execute's COPY that read the Sync sent behind it leaves its implicit transaction open
                // until the next Sync.
                if consumedSync, case .execute? = self.first,
                    !self.entries[(self.head + 1)...].contains(where: { if case .sync = $0 { true } else { false } })
                {
                    self.unsynced = true
                }
                return nil
            default:
                return self.doubtful("COPY FROM STDIN completed past a \(self.entries[index]) sent during it")
            }
        }
        return self.doubtful("COPY FROM STDIN completed before the client's CopyDone")
    }

    /// COPY FROM STDIN ended with an error. The server read the messages after the COPY up to some point:
    /// through a CopyFail, through any other message (which it refused), or up to wherever its data, a
    /// trigger or a check before the first read failed. Its main loop ignores the COPY messages past that
    /// point, so only the Syncs on the way are open: each may or may not get a ReadyForQuery. They stay as
    /// uncertain Syncs, matched after the certain ones; the first server message that is not a
    /// ReadyForQuery shows the rest were consumed, and where nothing else would come, an empty Query after
    /// them (the fence) does. Another request inside the COPY's input cannot be placed: the machine is in doubt.
    mutating func copyInFailed() -> Reaction {
        let regionStart = self.copyInputStart
        var index = regionStart
        var uncertain = 0
        var end = self.entries.count
        scan: while index < self.entries.count {
            switch self.entries[index] {
            case .sync:
                uncertain += 1
            case .copyData:
                break
            case .copyDone, .copyFail:
                end = index + 1
                break scan
            default:
                return self.doubtful("a \(self.entries[index]) sent during COPY FROM STDIN, which failed")
            }
            index += 1
        }
        self.entries.removeSubrange(regionStart..<end)
        self.mode = .normal
        // A failed Execute makes the server skip until a Sync it reads in its main loop; a failed Query
        // still owes its ReadyForQuery.
        let extended: Bool
        if case .execute? = self.first { extended = true } else { extended = false }
        if extended { self.pop() }
        guard uncertain > 0 else {
            if extended { return self.skipUntilSync() ?? .forward }
            return .forward
        }
        // The Syncs and COPY messages sent behind the COPY's input: the zone the uncertain Syncs join.
        let zoneStart = extended ? self.head : regionStart
        var zoneEnd = zoneStart
        var certain = 0
        zone: while zoneEnd < self.entries.count {
            switch self.entries[zoneEnd] {
            case .sync: certain += 1
            case .copyData, .copyDone, .copyFail: break
            default: break zone
            }
            zoneEnd += 1
        }
        if extended && certain == 0 && zoneEnd < self.entries.count {
            // The server may still be skipping, or not, when it reads this request.
            return self.doubtful("a \(self.entries[zoneEnd]) sent behind a failed COPY before any Sync")
        }
        // After the zone: answers of the agent's own are placed by the next server message that is not a
        // ReadyForQuery; a Sync behind them would make the ReadyForQuery of the zone and its own alike.
        var requestsFollow = false
        var passedAnswers = false
        after: for entry in self.entries[zoneEnd...] {
            switch entry {
            case .answer, .barrier: passedAnswers = true
            case .copyData, .copyDone, .copyFail: break
            case .sync where passedAnswers:
                return self.doubtful("an answer between Syncs whose ReadyForQuery cannot be told apart after a failed COPY")
            default:
                requestsFollow = true
                break after
            }
        }
        self.entries.replaceSubrange(
            zoneStart..<zoneEnd,
            with: Array(repeating: .sync(certain: true), count: certain) + Array(repeating: .sync(certain: false), count: uncertain)
        )
        if !requestsFollow {
            if extended && certain == 0 {
                // The server may still be skipping: the fence would be skipped too. It goes after the next Sync.
                self.fenceOwed = true
            } else {
                self.entries.append(.fence(answered: false))
                self.events.append(.sendFence)
            }
        }
        return .forward
    }

    /// Where the messages the COPY reads as input begin: after its Query or Execute, and after the barrier
    /// that belongs to a Query.
    private var copyInputStart: Int {
        if case .barrier? = self.entries.dropFirst(self.head + 1).first { return self.head + 2 }
        return self.head + 1
    }

    /// A server message other than ReadyForQuery while uncertain Syncs are at the head: the failed COPY
    /// consumed them.
    mutating func dropConsumedSyncs() {
        guard self.head < self.entries.count, case .sync(certain: false) = self.entries[self.head] else { return }
        while self.head < self.entries.count, case .sync(certain: false) = self.entries[self.head] { self.pop() }
        self.settle(first: true)
    }

    /// Records a certain Sync while uncertain ones are still owed: it goes before them, so they stay the
    /// ones left over when a server message shows the rest were consumed.
    mutating func insertCertainSync() {
        var index = self.entries.count
        while index > self.head, case .sync(certain: false) = self.entries[index - 1] { index -= 1 }
        self.entries.insert(.sync(certain: true), at: index)
    }
}
