// The end of COPY FROM STDIN: which of the messages sent after the COPY the server read as its input.

extension ServerProtocolMachine {
    /// COPY FROM STDIN ended with CommandComplete: the server read every message after the COPY's Query or
    /// Execute up to the first CopyDone, ignoring Syncs (and Flushes) on the way, as `CopyGetData` does.
    /// Anything else on the way would have failed the COPY instead. Returns a reaction only in doubt.
    mutating func copyInCompleted() -> Reaction? {
        var index = self.head + 1
        while index < self.entries.count {
            switch self.entries[index] {
            case .sync, .copyData:
                index += 1
            case .copyDone:
                self.entries.removeSubrange((self.head + 1)...index)
                self.mode = .normal
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
    /// uncertain Syncs, and an empty Query after them (the fence) tells when the last has come. Another
    /// request on the way cannot be placed: the machine is in doubt.
    mutating func copyInFailed() -> Reaction {
        var index = self.head + 1
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
        self.entries.replaceSubrange((self.head + 1)..<end, with: repeatElement(.sync(certain: false), count: uncertain))
        self.mode = .normal
        // A failed Execute makes the server skip until a Sync it reads in its main loop; a failed Query
        // still owes its ReadyForQuery.
        let extended = self.first == .execute
        if extended { self.pop() }
        guard uncertain > 0 else {
            if extended { return self.skipUntilSync() ?? .forward }
            return .forward
        }
        var certainSync = false
        for entry in self.entries[(self.head + (extended ? uncertain : uncertain + 1))...] {
            switch entry {
            case .sync: certainSync = true
            case .copyData, .copyDone, .copyFail: break
            default: return self.doubtful("a \(entry) sent behind a failed COPY whose Syncs may have been consumed")
            }
        }
        if extended && !certainSync {
            // The server may still be skipping: the fence would be skipped too. It goes after the next Sync.
            self.fenceOwed = true
        } else {
            self.entries.append(.fence(answered: false))
            self.events.append(.sendFence)
        }
        return .forward
    }

}

extension ServerProtocolMachine.Pending {
    /// A Sync or COPY message between a failed COPY and its fence: the fence's answer shows none of them
    /// is still owed.
    var isUnansweredAfterFailedCopy: Bool {
        switch self {
        case .sync, .copyData, .copyDone, .copyFail: true
        default: false
        }
    }
}
