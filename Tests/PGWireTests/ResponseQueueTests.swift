// The response queue fed the message sequences a real PostgreSQL server sends, one server message at a time.

import PGWire
import Testing

private typealias Server = BackendMessageID

extension BackendMessageID {
    /// Messages the agent never needs to name in its sources, but a server sends all the time.
    fileprivate static let dataRow = UInt8(ascii: "D")
    fileprivate static let copyData = UInt8(ascii: "d")
}

/// What the queue answered for one server message, and what it emitted and forgot while doing so.
private struct Outcome: Equatable {
    var disposition: ResponseQueue.Disposition
    var emitted: [UInt8] = []
    var forgotten: [Int] = []

    static let forward = Outcome(disposition: .forward)
    static let swallow = Outcome(disposition: .swallow)

    static func forward(emitting emitted: [UInt8]) -> Outcome {
        Outcome(disposition: .forward, emitted: emitted)
    }

    static func forward(forgetting forgotten: [Int]) -> Outcome {
        Outcome(disposition: .forward, forgotten: forgotten)
    }
}

extension ResponseQueue {
    fileprivate mutating func receive(_ type: UInt8) -> Outcome {
        var emitted: [UInt8] = []
        var forgotten: [Int] = []
        let disposition = self.serverMessage(type, emit: { emitted.append($0) }, forget: { forgotten.append($0) })
        return Outcome(disposition: disposition, emitted: emitted, forgotten: forgotten)
    }

    fileprivate mutating func append(_ responses: [ExpectedResponse]) {
        for response in responses { self.append(response) }
    }

    /// Every entry still owed, oldest first; read from a copy, so the queue itself is untouched.
    fileprivate var pending: [ExpectedResponse] {
        var copy = self
        var entries: [ExpectedResponse] = []
        while let last = copy.removeLast() { entries.insert(last, at: 0) }
        return entries
    }
}

@Suite struct ResponseQueueTests {
    static let unnamedParse = ExpectedResponse.parse(swallow: false, statement: nil)

    // MARK: Simple query

    @Test func aSimpleQueryIsOwedUntilReadyForQuery() {
        var queue = ResponseQueue()
        queue.append(.query)
        for type in [Server.rowDescription, Server.dataRow, Server.dataRow, Server.commandComplete] {
            #expect(queue.receive(type) == .forward)
            #expect(queue.pending == [.query])
        }
        // A second statement in the same Query string.
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.emptyQueryResponse) == .forward)
        #expect(queue.pending == [.query])
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func eachReadyForQueryEndsOneQuery() {
        var queue = ResponseQueue()
        queue.append([.query, .query])
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.pending == [.query])
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    // MARK: Extended query

    @Test func parseDescribeStatementBindExecuteSync() {
        var queue = ResponseQueue()
        queue.append([Self.unnamedParse, .describe, .bind, .execute, .sync])
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.pending == [.describe, .bind, .execute, .sync])
        // Describe of a statement: ParameterDescription first, then RowDescription completes it.
        #expect(queue.receive(Server.parameterDescription) == .forward)
        #expect(queue.pending == [.describe, .bind, .execute, .sync])
        #expect(queue.receive(Server.rowDescription) == .forward)
        #expect(queue.pending == [.bind, .execute, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.pending == [.execute, .sync])
        for _ in 0..<3 {
            #expect(queue.receive(Server.dataRow) == .forward)
            #expect(queue.pending == [.execute, .sync])
        }
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.pending == [.sync])
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func parseBindDescribePortalWithNoDataExecuteSync() {
        var queue = ResponseQueue()
        queue.append([Self.unnamedParse, .bind, .describe, .execute, .sync])
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.pending == [.describe, .execute, .sync])
        #expect(queue.receive(Server.noData) == .forward)
        #expect(queue.pending == [.execute, .sync])
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func rowsAndCommandCompleteBeforeTheExecuteDoNotCompleteOtherEntries() {
        var queue = ResponseQueue()
        queue.append([Self.unnamedParse, .bind, .describe])
        for type in [Server.dataRow, Server.commandComplete, Server.readyForQuery, Server.bindComplete] {
            #expect(queue.receive(type) == .forward)
            #expect(queue.pending == [Self.unnamedParse, .bind, .describe])
        }
    }

    @Test(arguments: [Server.commandComplete, Server.emptyQueryResponse, Server.portalSuspended])
    func anExecuteEndsWith(end: UInt8) {
        var queue = ResponseQueue()
        queue.append([.bind, .execute, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.dataRow) == .forward)
        #expect(queue.pending == [.execute, .sync])
        #expect(queue.receive(end) == .forward)
        #expect(queue.pending == [.sync])
    }

    @Test func aPortalSuspendedEndsOnlyTheFirstOfTwoExecutes() {
        var queue = ResponseQueue()
        queue.append([.bind, .execute, .execute, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.dataRow) == .forward)
        #expect(queue.receive(Server.portalSuspended) == .forward)
        #expect(queue.pending == [.execute, .sync])
        #expect(queue.receive(Server.dataRow) == .forward)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.pending == [.sync])
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func responsesNobodyWaitsForAreForwardedAndChangeNothing() {
        var queue = ResponseQueue()
        for type in [Server.parseComplete, Server.bindComplete, Server.closeComplete, Server.readyForQuery] {
            #expect(queue.receive(type) == .forward)
            #expect(queue.isEmpty)
        }
    }

    @Test func whatPassesThroughChangesNothing() {
        // Every type against an empty queue, a simple Query owed, and each other entry at the head; a
        // synthesized response behind the head must not come out either.
        let heads: [ExpectedResponse?] = [
            nil, .query, .parse(swallow: true, statement: 1), .bind, .describe, .close(swallow: true), .evict(2), .execute,
            .sync,
        ]
        var passed = 0
        for head in heads {
            for type in UInt8.min...UInt8.max {
                var queue = ResponseQueue()
                if let head { queue.append([head, .synthesize(Server.closeComplete), .sync]) }
                let before = queue.pending
                guard queue.passesThrough(type) else { continue }
                passed += 1
                #expect(queue.receive(type) == .forward)
                #expect(queue.pending == before)
            }
        }
        // Empty: all 256. A Query owed: all but ReadyForQuery. Any other head: the 246 types not accounted for.
        #expect(passed == 256 + 255 + 7 * 246)
        var query = ResponseQueue()
        query.append(.query)
        #expect(!query.passesThrough(Server.readyForQuery))
        #expect(query.passesThrough(Server.rowDescription))
        #expect(query.passesThrough(Server.commandComplete))
        #expect(query.passesThrough(Server.errorResponse))
        #expect(!ResponseQueue.accountsFor(Server.dataRow))
        #expect(!ResponseQueue.accountsFor(Server.copyData))
    }

    // MARK: The agent's own Parse and Close

    @Test func theAgentsOwnCloseAndParseAreSwallowedTheClientsForwarded() {
        var queue = ResponseQueue()
        // Bind of a statement the server lacks: the agent closes the LRU statement and parses it first.
        queue.append([.close(swallow: true), .parse(swallow: true, statement: 7), .bind, .execute])
        // The client's own Parse of a new named statement, and its Close of a portal.
        queue.append([.parse(swallow: false, statement: 8), .close(swallow: false), .sync])
        #expect(queue.receive(Server.closeComplete) == .swallow)
        #expect(queue.receive(Server.parseComplete) == .swallow)
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.receive(Server.closeComplete) == .forward)
        #expect(queue.pending == [.sync])
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func aParseCompleteIsNotTakenForACloseCompleteOrTheOtherWayRound() {
        var queue = ResponseQueue()
        queue.append(.close(swallow: true))
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.pending == [.close(swallow: true)])
        queue.removeAll()
        queue.append(.parse(swallow: true, statement: 1))
        #expect(queue.receive(Server.closeComplete) == .forward)
        #expect(queue.pending == [.parse(swallow: true, statement: 1)])
    }

    // MARK: Synthesized responses

    @Test func aSynthesizedResponseWithNothingOwedIsWrittenAtOnce() {
        var queue = ResponseQueue()
        #expect(queue.appendSynthesized(Server.parseComplete) == true)
        #expect(queue.isEmpty)
        #expect(queue.count == 0)
    }

    @Test func aSynthesizedResponseComesRightAfterTheResponseBeforeIt() {
        var queue = ResponseQueue()
        queue.append([Self.unnamedParse, .bind])
        #expect(queue.appendSynthesized(Server.parseComplete) == false)
        queue.append([.bind, .sync])
        #expect(queue.count == 5)
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.receive(Server.bindComplete) == .forward(emitting: [Server.parseComplete]))
        #expect(queue.pending == [.bind, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func synthesizedResponsesInARowComeOutTogetherInOrder() {
        var queue = ResponseQueue()
        queue.append([.bind, .execute])
        #expect(queue.appendSynthesized(Server.closeComplete) == false)
        #expect(queue.appendSynthesized(Server.parseComplete) == false)
        #expect(queue.appendSynthesized(Server.closeComplete) == false)
        queue.append([.bind, .execute, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.dataRow) == .forward)
        #expect(
            queue.receive(Server.commandComplete)
                == .forward(emitting: [Server.closeComplete, Server.parseComplete, Server.closeComplete]))
        #expect(queue.pending == [.bind, .execute, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func aSynthesizedResponseAfterASwallowedOneComesInItsPlace() {
        var queue = ResponseQueue()
        queue.append(.parse(swallow: true, statement: 3))
        #expect(queue.appendSynthesized(Server.closeComplete) == false)
        #expect(
            queue.receive(Server.parseComplete)
                == Outcome(disposition: .swallow, emitted: [Server.closeComplete]))
        #expect(queue.isEmpty)
    }

    @Test func aSynthesizedResponseBehindASimpleQueryWaitsForReadyForQuery() {
        var queue = ResponseQueue()
        queue.append(.query)
        #expect(queue.appendSynthesized(Server.parseComplete) == false)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward(emitting: [Server.parseComplete]))
        #expect(queue.isEmpty)
    }

    @Test func aSynthesizedResponseBehindASyncWaitsForReadyForQuery() {
        var queue = ResponseQueue()
        queue.append([.execute, .sync])
        #expect(queue.appendSynthesized(Server.parseComplete) == false)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward(emitting: [Server.parseComplete]))
        #expect(queue.isEmpty)
    }

    // MARK: Errors

    @Test func anErrorSkipsEveryExtendedEntryUpToTheNextSync() {
        var queue = ResponseQueue()
        queue.append([.parse(swallow: false, statement: 1), .bind, .describe, .execute])
        #expect(queue.appendSynthesized(Server.closeComplete) == false)
        queue.append([.parse(swallow: true, statement: 2), .parse(swallow: false, statement: nil), .bind, .execute])
        queue.append([.sync, .parse(swallow: false, statement: 3), .bind, .execute, .sync])
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.rowDescription) == .forward)
        #expect(queue.receive(Server.dataRow) == .forward)
        // The Execute fails: the server skips everything up to the Sync and creates neither statement 2 nor the
        // unnamed one; the agent's CloseComplete for a message the server never got is dropped.
        #expect(queue.receive(Server.errorResponse) == .forward(forgetting: [2]))
        #expect(queue.pending == [.sync, .parse(swallow: false, statement: 3), .bind, .execute, .sync])
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.pending == [.parse(swallow: false, statement: 3), .bind, .execute, .sync])

        // The next segment after the Sync runs normally.
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func aFailedParseForgetsItsOwnStatement() {
        var queue = ResponseQueue()
        queue.append([.close(swallow: true), .parse(swallow: false, statement: 5), .bind, .execute, .sync])
        #expect(queue.receive(Server.closeComplete) == .swallow)
        #expect(queue.receive(Server.errorResponse) == .forward(forgetting: [5]))
        #expect(queue.pending == [.sync])
    }

    @Test func anErrorDropsSynthesizedResponsesBeforeTheSyncButNotAfterIt() {
        var queue = ResponseQueue()
        queue.append([.bind, .execute])
        #expect(queue.appendSynthesized(Server.parseComplete) == false)
        queue.append(.sync)
        #expect(queue.appendSynthesized(Server.closeComplete) == false)
        #expect(queue.receive(Server.errorResponse) == .forward)
        #expect(queue.pending == [.sync, .synthesize(Server.closeComplete)])
        #expect(queue.receive(Server.readyForQuery) == .forward(emitting: [Server.closeComplete]))
        #expect(queue.isEmpty)
    }

    @Test func anErrorWithNoSyncQueuedEmptiesTheQueue() {
        var queue = ResponseQueue()
        queue.append([.parse(swallow: false, statement: 4), .bind, .describe, .execute])
        #expect(queue.appendSynthesized(Server.parseComplete) == false)
        queue.append(.parse(swallow: true, statement: 6))
        #expect(queue.receive(Server.errorResponse) == .forward(forgetting: [4, 6]))
        #expect(queue.isEmpty)
        #expect(queue.count == 0)
        #expect(queue.first == nil)
    }

    @Test func anErrorDuringASimpleQueryKeepsItOwedUntilReadyForQuery() {
        var queue = ResponseQueue()
        queue.append([.query, .query])
        #expect(queue.receive(Server.rowDescription) == .forward)
        #expect(queue.receive(Server.errorResponse) == .forward)
        #expect(queue.pending == [.query, .query])
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.pending == [.query])
    }

    @Test func anErrorDuringASimpleQueryDoesNotSkipTheExtendedMessagesBehindIt() {
        var queue = ResponseQueue()
        queue.append([.query, .parse(swallow: false, statement: 9), .bind, .execute, .sync])
        #expect(queue.receive(Server.errorResponse) == .forward)
        #expect(queue.pending == [.query, .parse(swallow: false, statement: 9), .bind, .execute, .sync])
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.pending == [.bind, .execute, .sync])
    }

    @Test func anErrorRaisedAtSyncLeavesTheSyncForItsReadyForQuery() {
        // A deferred constraint fails when Sync commits the implicit transaction.
        var queue = ResponseQueue()
        queue.append([.bind, .execute, .sync, .bind, .execute, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.errorResponse) == .forward)
        #expect(queue.pending == [.sync, .bind, .execute, .sync])
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.pending == [.bind, .execute, .sync])
    }

    /// PostgreSQL discards every message after a failed extended-protocol message until a Sync: messages the
    /// client sends after the ErrorResponse has already arrived, but before its Sync, get no response at all.
    @Test func extendedMessagesSentAfterTheErrorButBeforeTheSyncGetNoResponse() {
        var queue = ResponseQueue()
        queue.append([Self.unnamedParse, .bind, .execute])
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.errorResponse) == .forward)
        #expect(queue.isEmpty)
        // The client pipelines its next query and then the Sync; the server skips all but the Sync, so
        // the queue records nothing for them (the caller forgets statement 4 at once).
        #expect(queue.skippingUntilSync)
        let recorded = [ExpectedResponse.parse(swallow: false, statement: 4), .bind, .execute].map { queue.append($0) }
        #expect(recorded == [false, false, false])
        let syncRecorded = queue.append(.sync)
        #expect(syncRecorded)
        #expect(!queue.skippingUntilSync)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func aParseAnsweredByTheAgentAfterTheErrorButBeforeTheSyncIsNotAnswered() {
        var queue = ResponseQueue()
        queue.append([.bind, .execute])
        #expect(queue.receive(Server.errorResponse) == .forward)
        // The server would skip this Parse, so the client must not get a ParseComplete for it.
        let writeNow = queue.appendSynthesized(Server.parseComplete)
        #expect(!writeNow)
        queue.append(.sync)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func aQueryInTheSameSegmentAsAFailedExecuteIsSkippedToo() {
        var queue = ResponseQueue()
        queue.append([.bind, .execute, .query, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.errorResponse) == .forward)
        // The server discards the Query and answers only the Sync.
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    // MARK: Messages outside the request and response flow

    @Test(arguments: [Server.noticeResponse, Server.parameterStatus, Server.notificationResponse])
    func asynchronousMessagesChangeNothing(type: UInt8) {
        var queue = ResponseQueue()
        queue.append([.query, .parse(swallow: true, statement: 1), .bind, .describe, .execute, .sync])
        #expect(queue.appendSynthesized(Server.closeComplete) == false)
        var expected = queue.pending
        let responses = [
            Server.rowDescription, Server.readyForQuery, Server.parseComplete, Server.bindComplete,
            Server.rowDescription, Server.commandComplete, Server.readyForQuery,
        ]
        for response in responses {
            #expect(queue.receive(type) == .forward)
            #expect(queue.pending == expected)
            _ = queue.receive(response)
            expected = queue.pending
        }
        #expect(queue.receive(type) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func asynchronousMessagesDoNotReleaseASynthesizedResponse() {
        var queue = ResponseQueue()
        queue.append(.query)
        #expect(queue.appendSynthesized(Server.parseComplete) == false)
        for type in [Server.noticeResponse, Server.parameterStatus, Server.notificationResponse, Server.dataRow] {
            #expect(queue.receive(type) == .forward)
        }
        #expect(queue.pending == [.query, .synthesize(Server.parseComplete)])
    }

    // MARK: COPY FROM STDIN

    @Test func copyInFromAnExecuteDropsTheSyncsAlreadyQueued() {
        var queue = ResponseQueue()
        queue.append([.bind, .execute, .sync, .bind, .execute, .sync])
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.copyInResponse) == .forward)
        #expect(queue.copyInStarted() == 2)
        #expect(queue.pending == [.execute, .bind, .execute])
        // CopyDone, then the client's own Sync.
        queue.append(.sync)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.isEmpty)
    }

    @Test func copyInFromAnExecuteWithNoSyncQueuedDropsNothing() {
        var queue = ResponseQueue()
        queue.append([.execute])
        #expect(queue.copyInStarted() == 0)
        #expect(queue.pending == [.execute])
    }

    @Test func copyInFromASimpleQueryKeepsEverything() {
        var queue = ResponseQueue()
        queue.append([.query, .sync])
        #expect(queue.copyInStarted() == 0)
        #expect(queue.pending == [.query, .sync])
        #expect(queue.receive(Server.copyData) == .forward)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.receive(Server.readyForQuery) == .forward)
        #expect(queue.pending == [.sync])
    }

    @Test func copyInStartedWhenTheHeadIsNotAnExecuteKeepsEverything() {
        var queue = ResponseQueue()
        #expect(queue.copyInStarted() == 0)
        queue.append([.bind, .execute, .sync])
        #expect(queue.copyInStarted() == 0)
        #expect(queue.pending == [.bind, .execute, .sync])
    }

    // MARK: Bookkeeping

    @Test func countAndIsEmptyFollowAppendsAndResponses() {
        var queue = ResponseQueue()
        #expect(queue.isEmpty)
        #expect(queue.count == 0)
        #expect(queue.first == nil)
        queue.append([.bind, .execute, .sync])
        #expect(!queue.isEmpty)
        #expect(queue.count == 3)
        #expect(queue.first == .bind)
        _ = queue.receive(Server.bindComplete)
        #expect(queue.count == 2)
        #expect(queue.first == .execute)
        _ = queue.receive(Server.commandComplete)
        _ = queue.receive(Server.readyForQuery)
        #expect(queue.isEmpty)
        #expect(queue.count == 0)
    }

    @Test func removeLastTakesBackTheNewestEntryOnly() {
        var queue = ResponseQueue()
        #expect(queue.removeLast() == nil)
        queue.append([Self.unnamedParse, .bind, .describe])
        #expect(queue.removeLast() == .describe)
        #expect(queue.pending == [Self.unnamedParse, .bind])
        queue.append(.describe)
        #expect(queue.pending == [Self.unnamedParse, .bind, .describe])
    }

    @Test func removeLastNeverTakesBackAnAnsweredEntry() {
        var queue = ResponseQueue()
        queue.append([Self.unnamedParse, .bind])
        _ = queue.receive(Server.parseComplete)
        #expect(queue.removeLast() == .bind)
        #expect(queue.isEmpty)
        #expect(queue.removeLast() == nil)
        #expect(queue.count == 0)
        queue.append(.execute)
        #expect(queue.pending == [.execute])
        #expect(queue.receive(Server.parseComplete) == .forward)
        #expect(queue.pending == [.execute])
    }

    @Test func removeAllForgetsEverythingOwed() {
        var queue = ResponseQueue()
        queue.append([.parse(swallow: true, statement: 1), .bind, .execute, .sync])
        #expect(queue.appendSynthesized(Server.closeComplete) == false)
        _ = queue.receive(Server.parseComplete)
        queue.removeAll()
        #expect(queue.isEmpty)
        #expect(queue.count == 0)
        #expect(queue.first == nil)
        #expect(queue.receive(Server.bindComplete) == .forward)
        #expect(queue.receive(Server.commandComplete) == .forward)
        #expect(queue.appendSynthesized(Server.closeComplete) == true)
        queue.append(.query)
        #expect(queue.pending == [.query])
    }

    @Test func tenThousandEntriesComeOutInOrderWhileMoreAreAppended() {
        var queue = ResponseQueue()
        for id in 0..<10_000 { queue.append(.parse(swallow: id.isMultiple(of: 2), statement: id)) }
        var next = 10_000
        for id in 0..<15_000 {
            #expect(queue.first == .parse(swallow: id.isMultiple(of: 2), statement: id))
            let expected: Outcome = id.isMultiple(of: 2) ? .swallow : .forward
            #expect(queue.receive(Server.parseComplete) == expected)
            if id.isMultiple(of: 2) {
                queue.append(.parse(swallow: next.isMultiple(of: 2), statement: next))
                next += 1
            }
        }
        #expect(queue.count == 2_500)
        let outcome = queue.receive(Server.errorResponse)
        #expect(outcome.forgotten == Array(15_000..<next))
        #expect(queue.isEmpty)
    }

    @Test func synthesizedResponsesBehindThousandsOfEntriesComeOutInOrder() {
        var queue = ResponseQueue()
        for _ in 0..<5_000 {
            queue.append(.bind)
            #expect(queue.appendSynthesized(Server.closeComplete) == false)
            #expect(queue.appendSynthesized(Server.parseComplete) == false)
        }
        var emitted: [UInt8] = []
        for _ in 0..<5_000 {
            let outcome = queue.receive(Server.bindComplete)
            #expect(outcome.disposition == .forward)
            emitted += outcome.emitted
        }
        #expect(emitted.count == 10_000)
        #expect(emitted == Array(repeating: [Server.closeComplete, Server.parseComplete], count: 5_000).flatMap { $0 })
        #expect(queue.isEmpty)
    }
}

@Suite struct ResponseQueueEvictionTests {
    @Test func anEvictionSkippedAfterAnErrorIsReported() {
        var queue = ResponseQueue()
        queue.append(.execute)
        queue.append(.evict(7))
        queue.append(.parse(swallow: true, statement: 8))
        queue.append(.sync)
        var skipped: [ExpectedResponse] = []
        var forgotten: [Int] = []
        _ = queue.serverMessage(BackendMessageID.errorResponse, emit: { _ in }, forget: { forgotten.append($0) }, skipped: { skipped.append($0) })
        #expect(skipped == [.execute, .evict(7), .parse(swallow: true, statement: 8)])
        #expect(forgotten == [8])
        #expect(queue.first == .sync)
    }

    @Test func anEvictionsCloseCompleteIsSwallowed() {
        var queue = ResponseQueue()
        queue.append(.evict(3))
        #expect(queue.serverMessage(BackendMessageID.closeComplete, emit: { _ in }, forget: { _ in }) == .swallow)
        #expect(queue.isEmpty)
    }

    @Test func pendingStatementsAreTheQueuedParses() {
        var queue = ResponseQueue()
        queue.append(.query)
        queue.append(.parse(swallow: false, statement: 4))
        queue.append(.parse(swallow: false, statement: nil))
        queue.append(.parse(swallow: true, statement: 5))
        #expect(queue.pendingStatements == [4, 5])
    }
}
