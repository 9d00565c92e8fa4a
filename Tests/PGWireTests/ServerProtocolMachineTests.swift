// The server protocol machine fed the sequences a real PostgreSQL backend produces, without sockets.

import PGWire
import Testing

private typealias Server = BackendMessageID
private typealias Machine = ServerProtocolMachine

/// One step of a conversation: what the agent sent, or what the server said and what the machine should do.
private enum Step {
    case sent(Machine.Pending, Machine.SendOutcome = .recorded)
    case ready(TransactionStatus = .idle, Machine.Reaction = .forward)
    case error(sqlState: String = "42601", Machine.Reaction = .forward)
    case fatal
    case complete(Machine.Reaction = .forward)
    case server(UInt8, Machine.Reaction = .forward)
    case events([Machine.Event])
}

extension ServerProtocolMachine {
    /// Plays `steps`, checking each outcome; the events of each server message are checked only where a
    /// `.events` step follows it, and must be empty otherwise.
    fileprivate mutating func play(_ steps: [Step], sourceLocation: SourceLocation = #_sourceLocation) {
        for (index, step) in steps.enumerated() {
            let nextIsEvents: Bool
            if index + 1 < steps.count, case .events = steps[index + 1] { nextIsEvents = true } else { nextIsEvents = false }
            switch step {
            case .sent(let pending, let outcome):
                #expect(self.send(pending) == outcome, "step \(index): send \(pending)", sourceLocation: sourceLocation)
            case .ready(let status, let reaction):
                #expect(self.readyForQuery(status) == reaction, "step \(index): ReadyForQuery", sourceLocation: sourceLocation)
            case .error(let sqlState, let reaction):
                #expect(self.errorResponse(fatal: false, sqlState: sqlState) == reaction, "step \(index): ErrorResponse", sourceLocation: sourceLocation)
            case .fatal:
                #expect(self.errorResponse(fatal: true, sqlState: "57P01") == .forward, "step \(index): FATAL", sourceLocation: sourceLocation)
            case .complete(let reaction):
                let expected = self.passesThrough(Server.commandComplete) ? Machine.Reaction.forward : self.commandComplete()
                #expect(expected == reaction, "step \(index): CommandComplete", sourceLocation: sourceLocation)
            case .server(let type, let reaction):
                let got = self.passesThrough(type) ? Machine.Reaction.forward : self.message(type)
                #expect(got == reaction, "step \(index): message \(Character(Unicode.Scalar(type)))", sourceLocation: sourceLocation)
            case .events(let expected):
                #expect(self.takeEvents() == expected, "step \(index): events", sourceLocation: sourceLocation)
                continue
            }
            if case .sent = step { continue }
            if !nextIsEvents {
                #expect(self.takeEvents() == [], "step \(index): no events expected", sourceLocation: sourceLocation)
            }
        }
    }
}

private let parseComplete = Step.server(Server.parseComplete)
private let bindComplete = Step.server(Server.bindComplete)
private let rowDescription = Step.server(Server.rowDescription)
private let dataRow = Step.server(Server.dataRow)
private let noData = Step.server(Server.noData)
private let copyIn = Step.server(Server.copyInResponse)
private let unnamedParse = Machine.Pending.parse(.client(statement: nil, intent: nil))

@Suite struct ServerProtocolMachineTests {
    // MARK: Simple and extended queries

    @Test func aSimpleQueryIsOwedUntilItsReadyForQuery() {
        var machine = Machine()
        #expect(machine.mayRelease)
        machine.play([.sent(.query), rowDescription, dataRow, dataRow, .complete()])
        #expect(!machine.isIdle)
        machine.play([.ready()])
        #expect(machine.mayRelease)
    }

    @Test func aTransactionHoldsTheServerUntilReadyForQuerySaysIdle() {
        var machine = Machine()
        machine.play([.sent(.query), .complete(), .ready(.inTransaction)])
        #expect(machine.isIdle)
        #expect(!machine.mayRelease)
        machine.play([.sent(.query), .error(), .ready(.failedTransaction)])
        #expect(!machine.mayRelease)
        machine.play([.sent(.query), .complete(), .ready(.idle)])
        #expect(machine.mayRelease)
    }

    @Test func anErrorInASimpleQueryEndsOnlyThatQuery() {
        var machine = Machine()
        machine.play([.sent(.query), .sent(.query), .error(), .ready(), rowDescription, dataRow, .complete(), .ready()])
        #expect(machine.mayRelease)
    }

    @Test func anExtendedPipelineIsOwedUntilItsSync() {
        var machine = Machine()
        machine.play([
            .sent(unnamedParse), .sent(.bind), .sent(.describe), .sent(.execute), .sent(.sync(certain: true)),
            parseComplete, bindComplete, rowDescription, dataRow, .complete(),
        ])
        #expect(!machine.isIdle)
        machine.play([.ready()])
        #expect(machine.mayRelease)
    }

    @Test func flushWithoutSyncLeavesTheImplicitTransactionOpen() {
        var machine = Machine()
        machine.play([.sent(unnamedParse), .sent(.bind), .sent(.execute), parseComplete, bindComplete, .complete()])
        #expect(machine.owed.isEmpty)
        #expect(!machine.mayRelease, "no Sync yet: the server is inside the pipeline's transaction")
        machine.play([.sent(.sync(certain: true)), .ready()])
        #expect(machine.mayRelease)
    }

    @Test func anErrorInEachPositionOfAPipelineSkipsToTheSync() {
        let pipeline: [Machine.Pending] = [unnamedParse, .bind, .describe, .execute]
        let answers: [Step] = [parseComplete, bindComplete, rowDescription, .complete()]
        for failing in 0..<pipeline.count {
            var machine = Machine()
            machine.play(pipeline.map { .sent($0) } + [.sent(.sync(certain: true))])
            machine.play(Array(answers[..<failing]) + [.error()])
            #expect(machine.owed == [.sync(certain: true)], "error at \(pipeline[failing])")
            #expect(!machine.skippingUntilSync)
            machine.play([.ready()])
            #expect(machine.mayRelease, "error at \(pipeline[failing])")
        }
    }

    @Test func anErrorAtSyncIsAFailedCommitThatStillGetsReadyForQuery() {
        var machine = Machine()
        machine.play([.sent(unnamedParse), .sent(.sync(certain: true)), parseComplete, .error(), .ready()])
        #expect(machine.mayRelease)
    }

    @Test func anErrorBeforeTheSyncIsSentDiscardsEverythingButSync() {
        var machine = Machine()
        machine.play([.sent(unnamedParse), .error()])
        #expect(machine.skippingUntilSync)
        #expect(!machine.isIdle)
        machine.play([
            .sent(.bind, .discarded), .sent(.query, .discarded), .sent(.copyFail, .discarded),
            .sent(.sync(certain: true)), .ready(),
        ])
        #expect(machine.mayRelease)
    }

    @Test func aQueryInsideAFailedPipelineIsSkippedWithIt() {
        var machine = Machine()
        machine.play([.sent(unnamedParse), .sent(.query), .sent(.sync(certain: true)), .error(), .ready()])
        #expect(machine.mayRelease)
    }

    // MARK: What the server cannot have said

    @Test func aResponseNobodyAskedForPutsTheMachineInDoubt() {
        for type in [Server.parseComplete, Server.bindComplete, Server.dataRow, Server.rowDescription, Server.copyInResponse] {
            var machine = Machine()
            guard case .close = machine.message(type) else {
                Issue.record("message \(type) with nothing owed was not refused")
                continue
            }
            #expect(machine.doubt != nil)
            #expect(!machine.mayRelease)
            let outcome = machine.send(.query)
            #expect(outcome == .close)
        }
        var machine = Machine()
        guard case .close = machine.readyForQuery(.idle) else {
            Issue.record("ReadyForQuery with nothing owed was not refused")
            return
        }
        #expect(!machine.mayRelease)
    }

    @Test func aFatalErrorMeansTheServerIsGoing() {
        var machine = Machine()
        machine.play([.sent(.query), .fatal])
        #expect(machine.closing)
        #expect(!machine.mayRelease)
    }

    @Test func noticesAndNotificationsComeAnyTime() {
        var machine = Machine()
        machine.play([.server(Server.noticeResponse), .server(Server.notificationResponse)])
        #expect(machine.mayRelease)
    }

    // MARK: COPY

    /// The attack of the issue: a CopyDone pipelined behind a COPY's Query, an error, then a CopyFail.
    @Test func copyDoneSentBeforeCopyInResponseIsReadByTheCopy() {
        var machine = Machine()
        machine.play([.sent(.query), .sent(.copyDone), .complete(), copyIn, .complete(), .ready()])
        #expect(machine.mayRelease)
        machine.play([.sent(unnamedParse), .sent(.sync(certain: true)), .error(), .ready()])
        #expect(machine.mayRelease)
        // A CopyFail with no COPY running: the server ignores it.
        machine.play([.sent(.copyFail, .discarded)])
        #expect(machine.mayRelease)
        #expect(!machine.skippingUntilSync)
        machine.play([.sent(.query), rowDescription, dataRow, .complete()])
        #expect(!machine.isIdle, "the next Query is owed in full")
        machine.play([.ready()])
        #expect(machine.mayRelease)
    }

    @Test func everyOrderOfCopyDoneAgainstCopyInResponse() {
        // CopyDone after the CopyInResponse.
        var machine = Machine()
        machine.play([.sent(.query), copyIn, .sent(.copyData), .sent(.copyData), .sent(.copyDone), .complete(), .ready()])
        #expect(machine.mayRelease)
        // CopyDone and data in the same write as the Query.
        machine = Machine()
        machine.play([.sent(.query), .sent(.copyData), .sent(.copyDone), copyIn, .complete(), .ready()])
        #expect(machine.mayRelease)
        // CopyFail, before and after the CopyInResponse.
        machine = Machine()
        machine.play([.sent(.query), .sent(.copyFail), copyIn, .error(sqlState: "57014"), .ready()])
        #expect(machine.mayRelease)
        machine = Machine()
        machine.play([.sent(.query), copyIn, .sent(.copyData), .sent(.copyFail), .error(sqlState: "57014"), .ready()])
        #expect(machine.mayRelease)
    }

    @Test func aQueryPipelinedBehindCopyDoneRunsAfterTheCopy() {
        var machine = Machine()
        machine.play([
            .sent(.query), .sent(.copyDone), .sent(.query), copyIn, .complete(), .ready(),
            rowDescription, dataRow, .complete(), .ready(),
        ])
        #expect(machine.mayRelease)
    }

    @Test func aCopyThatFailsOnItsDataLeavesLaterCopyMessagesToBeIgnored() {
        var machine = Machine()
        machine.play([.sent(.query), copyIn, .sent(.copyData), .error(sqlState: "22P02"), .ready()])
        #expect(machine.mayRelease)
        machine.play([.sent(.copyData, .discarded), .sent(.copyDone, .discarded)])
        #expect(machine.mayRelease)
    }

    @Test func anExtendedCopyConsumesTheSyncSentBehindItsExecute() {
        var machine = Machine()
        machine.play([
            .sent(unnamedParse), .sent(.bind), .sent(.execute), .sent(.sync(certain: true)),
            parseComplete, bindComplete, copyIn,
            .sent(.copyData), .sent(.copyDone), .sent(.sync(certain: true)), .complete(), .ready(),
        ])
        #expect(machine.mayRelease)
    }

    @Test func anExtendedCopyThatFailsIsSettledByAFence() {
        // The Sync behind the Execute may or may not have been read by the COPY before it failed: the agent
        // cannot tell how many ReadyForQuery will come, so it asks with an empty Query after the next Sync.
        for unconsumed in [false, true] {
            var machine = Machine()
            machine.play([
                .sent(unnamedParse), .sent(.bind), .sent(.execute), .sent(.sync(certain: true)),
                parseComplete, bindComplete, copyIn, .sent(.copyData), .error(sqlState: "22P02"),
            ])
            #expect(machine.fenceOwed)
            #expect(!machine.isIdle)
            machine.play([.sent(.copyFail, .discarded), .sent(.sync(certain: true), .recordedThenFence)])
            if unconsumed { machine.play([.ready()]) }
            machine.play([.ready(), .server(Server.emptyQueryResponse, .swallow), .ready(.idle, .swallow)])
            #expect(machine.mayRelease, "Sync behind the Execute \(unconsumed ? "not " : "")consumed")
        }
    }

    @Test func aRequestBeforeTheSyncThatEndsAFailedCopyCannotBePlaced() {
        var machine = Machine()
        machine.play([.sent(.execute), .sent(.sync(certain: true)), copyIn, .error()])
        guard case .close = machine.send(unnamedParse) else {
            Issue.record("a Parse while the fence is owed was accepted")
            return
        }
        #expect(!machine.mayRelease)
    }

    @Test func aSimpleCopyWithASyncInsideItsDataIsFencedAtOnce() {
        var machine = Machine()
        machine.play([.sent(.query), copyIn, .sent(.copyData), .sent(.sync(certain: true)), .sent(.copyData)])
        machine.play([.error(sqlState: "22P02"), .events([.sendFence])])
        machine.play([.ready(), .server(Server.emptyQueryResponse, .swallow), .ready(.idle, .swallow)])
        #expect(machine.mayRelease)
    }

    @Test func aRequestSentDuringAFailedCopyPutsTheMachineInDoubt() {
        var machine = Machine()
        machine.play([.sent(.query), copyIn, .sent(.copyData), .sent(unnamedParse)])
        guard case .close = machine.errorResponse(fatal: false, sqlState: "08P01") else {
            Issue.record("a Parse inside a failed COPY was placed")
            return
        }
        #expect(!machine.mayRelease)
    }

    @Test func copyOutPassesItsDataThrough() {
        var machine = Machine()
        machine.play([
            .sent(.query), .server(Server.copyOutResponse), .server(Server.copyData), .server(Server.copyData),
            .server(Server.copyDone), .complete(), .ready(),
        ])
        #expect(machine.mayRelease)
        machine = Machine()
        machine.play([.sent(.query), .server(Server.copyOutResponse), .server(Server.copyData), .error(), .ready()])
        #expect(machine.mayRelease)
    }

    @Test func readyForQueryDuringCopyIsImpossible() {
        var machine = Machine()
        machine.play([.sent(.query), copyIn])
        guard case .close = machine.readyForQuery(.idle) else {
            Issue.record("ReadyForQuery during COPY was accepted")
            return
        }
    }

    // MARK: The agent's statements and answers

    @Test func answersWaitForEverythingBeforeThem() {
        var machine = Machine()
        machine.play([
            .sent(unnamedParse), .sent(.answer(type: Server.parseComplete, intent: 1)),
            .sent(.answer(type: Server.closeComplete, intent: 2)), .sent(.sync(certain: true)),
            parseComplete, .events([.answer(Server.parseComplete), .intent(1, done: true), .answer(Server.closeComplete), .intent(2, done: true)]),
            .ready(),
        ])
        #expect(machine.mayRelease)
        let outcome = machine.send(.answer(type: Server.parseComplete, intent: 3))
        #expect(outcome == .answerNow)
    }

    @Test func aBarrierBehindAQueryIsDoneWithItsReadyForQuery() {
        var machine = Machine()
        machine.play([
            .sent(.query), .sent(.barrier(intent: 4)), .complete(), .ready(), .events([.intent(4, done: true)]),
        ])
        #expect(machine.mayRelease)
    }

    @Test func aCopyReadsItsInputAfterTheBarrierOfItsQuery() {
        var machine = Machine()
        machine.play([
            .sent(.query), .sent(.barrier(intent: 1)), copyIn, .sent(.copyData), .sent(.copyDone), .complete(),
            .ready(), .events([.intent(1, done: true)]),
        ])
        #expect(machine.mayRelease)
        machine.play([
            .sent(.query), .sent(.barrier(intent: 2)), copyIn, .sent(.copyData), .error(sqlState: "22P02"),
            .ready(), .events([.intent(2, done: true)]),
        ])
        #expect(machine.mayRelease)
    }

    @Test func aParsesIntentResolvesBeforeTheAnswerBehindIt() {
        var machine = Machine()
        machine.play([
            .sent(.parse(.client(statement: 3, intent: 5))), .sent(.answer(type: Server.closeComplete, intent: 6)),
            .sent(.sync(certain: true)), parseComplete,
            .events([.intent(5, done: true), .answer(Server.closeComplete), .intent(6, done: true)]), .ready(),
        ])
    }

    @Test func answersSkippedAfterAnErrorAreUndone() {
        var machine = Machine()
        machine.play([
            .sent(unnamedParse), .sent(.answer(type: Server.parseComplete, intent: 7)), .sent(.sync(certain: true)),
            .error(), .events([.intent(7, done: false)]), .ready(),
        ])
        #expect(machine.mayRelease)
    }

    @Test func theAgentsParseIsSwallowedAndItsStatementKept() {
        var machine = Machine(statementLimit: 2)
        let evicted = machine.prepare(1)
        #expect(evicted.isEmpty)
        machine.play([
            .sent(.parse(.agent(statement: 1))), .sent(.bind), .sent(.sync(certain: true)),
            .server(Server.parseComplete, .swallow), bindComplete, .ready(),
        ])
        #expect(machine.holds(1))
    }

    @Test func aStatementWhoseParseIsInFlightBehindASyncIsUnresolved() {
        var machine = Machine(statementLimit: 4)
        _ = machine.prepare(4)
        machine.play([.sent(.parse(.client(statement: 4, intent: 1)))])
        #expect(machine.presence(of: 4) == .present, "behind the same Sync: skipped with it if the Parse fails")
        machine.play([.sent(.sync(certain: true))])
        #expect(machine.presence(of: 4) == .unresolved, "behind a Sync the Parse could have failed")
        machine.play([parseComplete, .events([.intent(1, done: true)]), .ready()])
        #expect(machine.presence(of: 4) == .present)
    }

    @Test func aSkippedCloseOfAStatementStillBeingPreparedLeavesTheStatementsInDoubt() {
        var machine = Machine(statementLimit: 1)
        _ = machine.prepare(1)
        let evicted = machine.prepare(2)
        #expect(evicted.count == 1 && evicted.first?.id == 1 && evicted.first?.confirmed == false)
        machine.play([
            .sent(.parse(.agent(statement: 1))), .sent(.evict(1, confirmed: false)), .sent(.parse(.agent(statement: 2))),
            .sent(.sync(certain: true)), .error(), .ready(),
        ])
        #expect(!machine.holds(1) && !machine.holds(2))
        #expect(machine.statementsInDoubt)
    }

    @Test func aStatementParsedAnewIsGoneIfTheServerRefusesTheParseAndKeptIfBothAreSkipped() {
        // Refused (say inside a failed transaction): the Close went through, the statement is gone.
        var machine = Machine(statementLimit: 4)
        _ = machine.prepare(3)
        machine.play([.sent(.parse(.agent(statement: 3))), .sent(.sync(certain: true)), .server(Server.parseComplete, .swallow), .ready()])
        let wasConfirmed = machine.reprepare(3)
        #expect(wasConfirmed)
        machine.play([
            .sent(.replace(3, confirmed: true)), .sent(.parse(.client(statement: 3, intent: 1))), .sent(.sync(certain: true)),
            .server(Server.closeComplete, .swallow), .error(sqlState: "25P02"), .events([.intent(1, done: false)]), .ready(.failedTransaction),
        ])
        #expect(!machine.holds(3))
        // Skipped with the Close after an earlier error: the statement is as it was.
        _ = machine.prepare(3)
        machine.play([.sent(.parse(.agent(statement: 3))), .sent(.sync(certain: true)), .server(Server.parseComplete, .swallow), .ready()])
        let stillConfirmed = machine.reprepare(3)
        #expect(stillConfirmed)
        machine.play([
            .sent(.bind), .sent(.replace(3, confirmed: true)), .sent(.parse(.client(statement: 3, intent: 2))), .sent(.sync(certain: true)),
            .error(), .events([.intent(2, done: false)]), .ready(),
        ])
        #expect(machine.presence(of: 3) == .present)
    }

    @Test func aStatementParsedTwiceBehindOneSyncIsNotKeptWhenBothAreSkipped() {
        // The first Parse is still in flight when the second closes and parses it again; an error before
        // both skips both, and the server never had it.
        var machine = Machine(statementLimit: 4)
        _ = machine.prepare(5)
        machine.play([.sent(.execute), .sent(.parse(.client(statement: 5, intent: 1)))])
        let wasConfirmed = machine.reprepare(5)
        #expect(!wasConfirmed)
        machine.play([
            .sent(.replace(5, confirmed: false)), .sent(.parse(.client(statement: 5, intent: 2))), .sent(.sync(certain: true)),
            .error(), .events([.intent(1, done: false), .intent(2, done: false)]), .ready(),
        ])
        #expect(!machine.holds(5))
    }

    @Test func aStatementParsedAnewBehindADiscardAllAndSkippedIsNeitherWaitedForNorTrusted() {
        // A pipeline: DISCARD ALL, a Bind that fails, then a Parse of the shared statement (Close and Parse
        // anew). The DISCARD's tag makes the Close unconfirmed; the error skips both. Nothing is owed after,
        // so nothing may wait for the statement; it may or may not exist, so its next Parse closes it first.
        var machine = Machine(statementLimit: 4)
        _ = machine.prepare(3)
        machine.play([.sent(.parse(.agent(statement: 3))), .sent(.sync(certain: true)), .server(Server.parseComplete, .swallow), .ready()])
        machine.play([.sent(.query), .sent(.bind), .sent(.execute), .sent(.describe)])
        let confirmed = machine.reprepare(3)
        #expect(confirmed)
        machine.play([.sent(.replace(3, confirmed: true)), .sent(.parse(.client(statement: 3, intent: 1))), .sent(.sync(certain: true))])
        machine.commandTag(.statementsDropped)
        machine.play([
            .events([.clientStatementsDropped]), .complete(), .ready(),
            .error(sqlState: "26000"), .events([.intent(1, done: false)]), .ready(),
        ])
        #expect(machine.owed.isEmpty)
        #expect(machine.presence(of: 3) == .absent, "nothing owed can settle it: a message waiting for it would wait forever")
        #expect(machine.statementsInDoubt)
        let closes = machine.prepare(3)
        #expect(closes.count == 1 && closes.first?.id == 3 && closes.first?.confirmed == false, "closed before it is parsed again")
        machine.play([
            .sent(.evict(3, confirmed: false)), .sent(.parse(.agent(statement: 3))), .sent(.sync(certain: true)),
            .server(Server.closeComplete, .swallow), .server(Server.parseComplete, .swallow), .ready(),
        ])
        #expect(machine.presence(of: 3) == .present)
        #expect(machine.prepare(4).isEmpty)
    }

    @Test func anExecutesCopyThatReadItsSyncLeavesTheTransactionOpenUntilTheNext() {
        var machine = Machine()
        machine.play([
            .sent(unnamedParse), .sent(.bind), .sent(.execute), .sent(.sync(certain: true)),
            parseComplete, bindComplete, copyIn, .sent(.copyData), .sent(.copyDone), .complete(),
        ])
        #expect(machine.owed.isEmpty)
        #expect(!machine.mayRelease, "the COPY read the Sync: its implicit transaction is open")
        machine.play([.sent(.sync(certain: true)), .ready()])
        #expect(machine.mayRelease)
    }

    @Test func aCloseCountedBeforeADeallocateAllDoesNotBringTheStatementBack() {
        var machine = Machine(statementLimit: 1)
        _ = machine.prepare(1)
        machine.play([.sent(.parse(.agent(statement: 1))), .sent(.sync(certain: true)), .server(Server.parseComplete, .swallow), .ready()])
        let evicted = machine.prepare(2)
        #expect(evicted.count == 1 && evicted.first?.id == 1 && evicted.first?.confirmed == true)
        machine.play([.sent(.execute), .sent(unnamedParse), .sent(.evict(1, confirmed: true)), .sent(.sync(certain: true))])
        machine.commandTag(.statementsDropped)
        machine.play([.events([.clientStatementsDropped]), .complete(), .error(), .ready()])
        #expect(!machine.holds(1))
        #expect(machine.statementsInDoubt)
    }

    @Test func aRejectedParseLeavesNoStatementBehind() {
        var machine = Machine(statementLimit: 2)
        _ = machine.prepare(4)
        machine.play([
            .sent(.parse(.client(statement: 4, intent: 9))), .sent(.sync(certain: true)),
            .error(), .events([.intent(9, done: false)]), .ready(),
        ])
        #expect(!machine.holds(4))
    }

    @Test func theLeastRecentlyUsedStatementIsEvictedAndRestoredWhenItsCloseIsSkipped() {
        var machine = Machine(statementLimit: 2)
        machine.play([
            .sent(.parse(.agent(statement: 1))), .sent(.parse(.agent(statement: 2))), .sent(.sync(certain: true)),
        ])
        _ = machine.prepare(1)
        _ = machine.prepare(2)
        machine.play([.server(Server.parseComplete, .swallow), .server(Server.parseComplete, .swallow), .ready()])
        #expect(machine.presence(of: 1) == .present)
        let evicted = machine.prepare(3)
        #expect(evicted.count == 1 && evicted.first?.id == 2 && evicted.first?.confirmed == true)
        machine.play([
            .sent(unnamedParse), .sent(.evict(2, confirmed: true)), .sent(.parse(.agent(statement: 3))), .sent(.sync(certain: true)),
            .error(), .ready(),
        ])
        #expect(machine.holds(2), "its Close was skipped")
        #expect(!machine.holds(3), "its Parse was skipped")
    }

    @Test func aDuplicateParseIsRefusedByTheServerAndRenamed() {
        var machine = Machine()
        machine.play([
            .sent(.parse(.duplicate(intent: 5))), .sent(.sync(certain: true)),
            .error(sqlState: "42P05", .rewriteDuplicate(intent: 5)), .events([.intent(5, done: false)]), .ready(),
        ])
        #expect(machine.mayRelease)
        // A duplicate whose text does not parse fails on the text, as in PostgreSQL: nothing to rename.
        machine.play([
            .sent(.parse(.duplicate(intent: 6))), .sent(.sync(certain: true)),
            .error(sqlState: "42601"), .events([.intent(6, done: false)]), .ready(),
        ])
        // Accepted would mean the server did not have the statement the agent thought it had.
        machine.play([.sent(.parse(.duplicate(intent: 7))), .sent(.sync(certain: true))])
        guard case .close = machine.message(Server.parseComplete) else {
            Issue.record("an accepted duplicate Parse was not refused")
            return
        }
    }

    @Test func tagsThatChangeStatementsOrListeningAreRemembered() {
        var machine = Machine(statementLimit: 5)
        _ = machine.prepare(1)
        _ = machine.prepare(2)
        machine.play([.sent(.query), .sent(.parse(.agent(statement: 2)))])
        machine.commandTag(.statementsDropped)
        let events = machine.takeEvents()
        #expect(events == [.clientStatementsDropped])
        #expect(!machine.holds(1))
        #expect(machine.holds(2), "its Parse comes after the DISCARD ALL")
        machine.commandTag(.statementsChanged)
        machine.commandTag(.listen)
        #expect(machine.statementsInDoubt && machine.listening)
        machine.sessionStateReset()
        #expect(!machine.statementsInDoubt && !machine.listening && machine.preparedCount == 0)
    }

    @Test func aMissingStatementMakesTheServersStatementsDoubtful() {
        var machine = Machine()
        machine.play([.sent(.bind), .sent(.sync(certain: true)), .error(sqlState: "26000"), .ready()])
        #expect(machine.statementsInDoubt)
    }

    // MARK: The agent's own queries

    @Test func theAgentsQueryIsSwallowedAndReported() {
        var machine = Machine()
        machine.play([
            .sent(.agentQuery), .server(Server.rowDescription, .swallow), .server(Server.dataRow, .swallow),
            .complete(.swallow), .ready(.idle, .swallow), .events([.agentQueryDone]),
        ])
        #expect(machine.mayRelease)
    }

    // MARK: A client that leaves

    @Test func aServerLeftInAnyUnfinishedStateIsNotIdle() {
        let states: [[Step]] = [
            [.sent(.query)],
            [.sent(.query), rowDescription],
            [.sent(unnamedParse)],
            [.sent(unnamedParse), .error()],
            [.sent(.query), copyIn],
            [.sent(.query), copyIn, .sent(.copyDone)],
            [.sent(.query), .server(Server.copyOutResponse)],
            [.sent(.execute), .sent(.sync(certain: true)), copyIn, .error()],
            [.sent(.sync(certain: true))],
        ]
        for steps in states {
            var machine = Machine()
            machine.play(steps)
            #expect(!machine.isIdle, "\(steps)")
            #expect(!machine.mayRelease)
        }
    }
}
