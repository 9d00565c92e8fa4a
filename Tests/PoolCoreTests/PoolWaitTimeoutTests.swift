// Wait timeouts and cancelled requests: only the request concerned leaves the queue.

import PoolCore
import Testing

@Suite struct PoolWaitTimeoutTests {
    /// A size-1 pool whose only connection is leased to "a", with "b" and "c" queued behind it.
    func poolWithTwoWaiters(clock: inout MockClock) -> Machine {
        var machine = Machine(configuration: PoolConfiguration(size: 1, waitTimeout: .seconds(5)))
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        clock.advance(by: .seconds(1))
        _ = machine.leaseRequested("b", now: clock.now)
        clock.advance(by: .seconds(1))
        _ = machine.leaseRequested("c", now: clock.now)
        return machine
    }

    @Test func theWaitDeadlineIsNowPlusTheWaitTimeout() {
        var machine = Machine(configuration: PoolConfiguration(size: 1, waitTimeout: .milliseconds(2500)))
        var clock = MockClock()
        clock.advance(by: .seconds(7))
        #expect(
            machine.leaseRequested("a", now: clock.now)
                == .init(.wait("a", deadline: MockInstant(.milliseconds(9500))), open: 1)
        )
    }

    @Test func timeoutFailsExactlyTheTimedOutWaiter() {
        var clock = MockClock()
        var machine = self.poolWithTwoWaiters(clock: &clock)
        clock.advance(by: .seconds(4))
        let expired = machine.expireWaiters(now: clock.now)
        #expect(expired.expired == ["b"])
        #expect(expired.nextDeadline == clock.after(.seconds(1)), "c waits until its own deadline")
        #expect(machine.waitingRequests == ["c"])
        #expect(machine.leased == [1])
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.lease(1, to: "c")))
    }

    @Test func nothingExpiresBeforeItsDeadline() {
        var clock = MockClock()
        var machine = self.poolWithTwoWaiters(clock: &clock)
        clock.advance(by: .seconds(3))
        let expired = machine.expireWaiters(now: clock.now)
        #expect(expired.expired == [])
        #expect(expired.nextDeadline == clock.after(.seconds(1)))
        #expect(machine.waitingRequests == ["b", "c"])
    }

    @Test func anAlreadyServedRequestDoesNotExpire() {
        var clock = MockClock()
        var machine = self.poolWithTwoWaiters(clock: &clock)
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.lease(1, to: "b")))
        clock.advance(by: .seconds(5))
        #expect(machine.expireWaiters(now: clock.now).expired == ["c"])
        #expect(machine.leased == [1])
        #expect(machine.waitingRequests == [])
        #expect(machine.expireWaiters(now: clock.now).expired == [], "expired once")
    }

    @Test func aCancelledRequestLeavesTheQueueWithoutAnAction() {
        var clock = MockClock()
        var machine = self.poolWithTwoWaiters(clock: &clock)
        #expect(machine.requestCancelled("b") == .init(.none))
        #expect(machine.waitingRequests == ["c"])
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.lease(1, to: "c")))
        #expect(machine.requestCancelled("c") == .init(.none))
        #expect(machine.leased == [1])
    }

    @Test func aTimedOutWaitersConnectGoesIdleWhenItArrives() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, waitTimeout: .seconds(1)))
        var clock = MockClock()
        #expect(
            machine.leaseRequested("a", now: clock.now)
                == .init(.wait("a", deadline: clock.after(.seconds(1))), open: 1))
        clock.advance(by: .seconds(1))
        #expect(machine.expireWaiters(now: clock.now).expired == ["a"])
        #expect(machine.connectionOpened(1, now: clock.now) == .init(.none))
        #expect(machine.idle == [1])
        #expect(machine.leaseRequested("b", now: clock.now) == .init(.lease(1, to: "b")))
    }
}
