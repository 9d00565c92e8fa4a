// A client's statement names as PostgreSQL would hold them, with changes resolved in the server's order.

import PGWire
import Testing

@Suite struct ClientStatementsTests {
    @Test func aParseExistsForItsOwnSyncAndOnceDone() {
        var names = ClientStatements()
        let intent = names.add(.parse(name: "s1", statement: 4), syncs: 0)
        #expect(names.lookup("s1", syncs: 0) == .exists(4), "a Bind behind it in the same pipeline runs only if it succeeded")
        #expect(names.lookup("s1", syncs: 1) == .unresolved, "behind a Sync the Parse could have failed")
        #expect(names.resolve(intent, done: true) == [])
        #expect(names.lookup("s1", syncs: 1) == .exists(4))
        #expect(names.count == 1)
    }

    @Test func aRefusedParseLeavesNoNameAndReleasesItsStatement() {
        var names = ClientStatements()
        let intent = names.add(.parse(name: "s1", statement: 4), syncs: 0)
        #expect(names.resolve(intent, done: false) == [4])
        #expect(names.lookup("s1", syncs: 1) == .absent)
        #expect(names.count == 0)
    }

    @Test func closeThenParseInOnePipeline() {
        var names = ClientStatements()
        _ = names.resolve(names.add(.parse(name: "s", statement: 1), syncs: 0), done: true)
        let close = names.add(.close(name: "s"), syncs: 2)
        #expect(names.lookup("s", syncs: 2) == .absent)
        let parse = names.add(.parse(name: "s", statement: 2), syncs: 2)
        #expect(names.lookup("s", syncs: 2) == .exists(2))
        #expect(names.resolve(close, done: true) == [1])
        #expect(names.resolve(parse, done: true) == [])
        #expect(names.lookup("s", syncs: 3) == .exists(2))
        #expect(names.count == 1)
    }

    @Test func aSkippedCloseKeepsTheName() {
        var names = ClientStatements()
        _ = names.resolve(names.add(.parse(name: "s", statement: 1), syncs: 0), done: true)
        let close = names.add(.close(name: "s"), syncs: 1)
        #expect(names.resolve(close, done: false) == [])
        #expect(names.lookup("s", syncs: 1) == .exists(1))
    }

    @Test func aDuplicateChangesNothing() {
        var names = ClientStatements()
        _ = names.resolve(names.add(.parse(name: "s", statement: 1), syncs: 0), done: true)
        let duplicate = names.add(.duplicate(name: "s", statement: 1), syncs: 0)
        #expect(names.change(of: duplicate) == .duplicate(name: "s", statement: 1))
        #expect(names.lookup("s", syncs: 0) == .exists(1))
        #expect(names.resolve(duplicate, done: false) == [])
        #expect(names.lookup("s", syncs: 0) == .exists(1))
    }

    @Test func intentsResolveOnlyInOrder() {
        var names = ClientStatements()
        let first = names.add(.parse(name: "a", statement: 1), syncs: 0)
        let second = names.add(.parse(name: "b", statement: 2), syncs: 0)
        #expect(names.resolve(second, done: true) == nil)
        #expect(names.resolve(first, done: true) == [])
        #expect(names.resolve(second, done: true) == [])
        #expect(names.isSettled)
    }

    @Test func discardAllDropsWhatWasHeldButNotWhatComesAfterIt() {
        var names = ClientStatements()
        _ = names.resolve(names.add(.parse(name: "old", statement: 1), syncs: 0), done: true)
        let later = names.add(.parse(name: "new", statement: 2), syncs: 1)
        #expect(names.dropCommitted() == [1])
        #expect(names.resolve(later, done: true) == [])
        #expect(names.lookup("old", syncs: 1) == .absent)
        #expect(names.lookup("new", syncs: 1) == .exists(2))
        #expect(names.count == 1)
    }

    @Test func leavingReleasesEveryStatementHeldOrInFlight() {
        var names = ClientStatements()
        _ = names.resolve(names.add(.parse(name: "a", statement: 1), syncs: 0), done: true)
        _ = names.add(.parse(name: "b", statement: 2), syncs: 1)
        #expect(names.removeAll().sorted() == [1, 2])
        #expect(names.count == 0)
        #expect(names.lookup("a", syncs: 1) == .absent)
    }

    @Test func namesWaitForAQueryThatMayDropThemAll() {
        var names = ClientStatements()
        _ = names.resolve(names.add(.parse(name: "s", statement: 1), syncs: 0), done: true)
        let barrier = names.add(.barrier, syncs: 0)
        #expect(names.lookup("s", syncs: 0) == .unresolved, "the Query may be DEALLOCATE ALL")
        #expect(names.dropCommitted() == [1])
        #expect(names.resolve(barrier, done: true) == [])
        #expect(names.lookup("s", syncs: 0) == .absent)
        #expect(names.isEmpty)
    }
}
