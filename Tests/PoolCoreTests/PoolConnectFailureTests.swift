// Failed connects: the oldest uncovered waiter is refused, and refilling the idle floor pauses for retryDelay.

import PoolCore
import Testing

@Suite struct PoolConnectFailureTests {
    @Test func aFailedConnectRefusesTheOldestWaiterAndRetriesForTheNext() {
        var machine = Machine(configuration: PoolConfiguration(size: 1))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.leaseRequested("b", now: clock.now)
        #expect(
            machine.connectionFailed("connection refused", now: clock.now)
                == .init(.fail("a", .connectFailed("connection refused")), open: 1)
        )
        #expect(machine.waitingRequests == ["b"])
        #expect(machine.connectionOpened(1, now: clock.now) == .init(.lease(1, to: "b")))
    }

    @Test func eachFailureRefusesOneWaiterInArrivalOrder() {
        var machine = Machine(configuration: PoolConfiguration(size: 2))
        let clock = MockClock()
        for request in ["a", "b", "c"] { _ = machine.leaseRequested(request, now: clock.now) }
        #expect(machine.opening == 2)
        #expect(
            machine.connectionFailed("timeout", now: clock.now) == .init(.fail("a", .connectFailed("timeout")), open: 1)
        )
        #expect(
            machine.connectionFailed("timeout", now: clock.now) == .init(.fail("b", .connectFailed("timeout")), open: 0)
        )
        #expect(machine.waitingRequests == ["c"])
        #expect(machine.opening == 1)
    }

    @Test func aFailureCoveredByAnotherConnectInProgressRefusesNobody() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, minIdle: 1))
        let clock = MockClock()
        #expect(machine.maintenance(now: clock.now) == ([], 1))
        #expect(
            machine.leaseRequested("a", now: clock.now)
                == .init(.wait("a", deadline: clock.after(.seconds(30))), open: 1))
        #expect(machine.connectionFailed("refused", now: clock.now) == .init(.none))
        #expect(machine.waitingRequests == ["a"])
        // A successful connect ends the pause, so the floor is refilled at once.
        #expect(machine.connectionOpened(1, now: clock.now) == .init(.lease(1, to: "a"), open: 1))
    }

    @Test func refillPausesForRetryDelayAfterAFailure() {
        var machine = Machine(configuration: PoolConfiguration(size: 3, minIdle: 2, retryDelay: .seconds(1)))
        var clock = MockClock()
        #expect(machine.maintenance(now: clock.now) == ([], 2))
        #expect(machine.connectionFailed("refused", now: clock.now) == .init(.none))
        clock.advance(by: .milliseconds(500))
        #expect(machine.connectionFailed("refused", now: clock.now) == .init(.none))
        #expect(machine.opening == 0)

        // The pause runs from the latest failure.
        clock.advance(by: .milliseconds(600))
        #expect(machine.maintenance(now: clock.now) == ([], 0))
        clock.advance(by: .milliseconds(399))
        #expect(machine.maintenance(now: clock.now) == ([], 0))
        clock.advance(by: .milliseconds(2))
        #expect(machine.maintenance(now: clock.now) == ([], 2))
    }

    @Test func waitersStillGetConnectsWhileRefillIsPaused() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, minIdle: 2, retryDelay: .seconds(10)))
        let clock = MockClock()
        #expect(machine.maintenance(now: clock.now) == ([], 2))
        #expect(machine.connectionFailed("refused", now: clock.now) == .init(.none))
        #expect(machine.connectionFailed("refused", now: clock.now) == .init(.none))
        #expect(
            machine.leaseRequested("a", now: clock.now)
                == .init(.wait("a", deadline: clock.after(.seconds(30))), open: 1))
    }

    @Test func aFailureWithNobodyWaitingAndNoFloorDoesNothing() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, waitTimeout: .seconds(1)))
        var clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        clock.advance(by: .seconds(1))
        _ = machine.expireWaiters(now: clock.now)
        #expect(machine.connectionFailed("refused", now: clock.now) == .init(.none))
        #expect(machine.opening == 0)
        #expect(machine.openConnections == 0)
    }
}
