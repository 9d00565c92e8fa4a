// Operations of the control plane on the state machine: resize, drain and resume, retire, recycle, expiry.

import PoolCore
import Testing

@Suite struct PoolOperationsTests {
    /// Three connections: 1 and 2 idle, 3 leased to "a".
    func threeConnections(clock: MockClock, configuration: PoolConfiguration = PoolConfiguration(size: 3)) -> Machine {
        var machine = Machine(configuration: configuration)
        for request in ["a", "b", "c"] { _ = machine.leaseRequested(request, now: clock.now) }
        for id in 1...3 { _ = machine.connectionOpened(id, now: clock.now) }
        _ = machine.connectionReleased(1, reusable: true, now: clock.now)
        _ = machine.connectionReleased(2, reusable: true, now: clock.now)
        return machine
    }

    @Test func resizeDownClosesIdleNowAndLeasedOnReleaseEvenWithWaiters() {
        let clock = MockClock()
        var machine = self.threeConnections(clock: clock)
        let (close, open) = machine.resize(size: 1, minIdle: 0, maxOverflow: 0, now: clock.now)
        #expect(Set(close) == [1, 2])
        #expect(open == 0)
        _ = machine.leaseRequested("d", now: clock.now)
        // "d" waits, but the pool is at its new limit: the released connection serves "d".
        #expect(machine.connectionReleased(3, reusable: true, now: clock.now) == .init(.lease(3, to: "d")))
        #expect(machine.openConnections == 1)
    }

    @Test func resizeDownBelowOpenClosesOnReleaseWhenOverTheLimit() {
        let clock = MockClock()
        var machine = self.threeConnections(clock: clock)
        _ = machine.leaseRequested("x", now: clock.now)
        _ = machine.leaseRequested("y", now: clock.now)
        #expect(machine.leased.count == 3)
        _ = machine.leaseRequested("z", now: clock.now)
        _ = machine.resize(size: 1, minIdle: 0, maxOverflow: 0, now: clock.now)
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.close(1)))
        #expect(machine.connectionReleased(2, reusable: true, now: clock.now) == .init(.close(2)))
        #expect(machine.connectionReleased(3, reusable: true, now: clock.now) == .init(.lease(3, to: "z")))
    }

    @Test func drainHoldsWaitersClosesEverythingAndResumeRestartsTheirClocks() {
        var clock = MockClock()
        var machine = self.threeConnections(clock: clock)
        #expect(Set(machine.drain()) == [1, 2])
        for id in [1, 2] { _ = machine.connectionClosed(id, now: clock.now) }
        #expect(machine.leaseRequested("w", now: clock.now) == .init(.wait("w", deadline: clock.now.advanced(by: .seconds(30)))))
        #expect(!machine.isDrained)
        #expect(machine.connectionReleased(3, reusable: true, now: clock.now) == .init(.close(3)))
        _ = machine.connectionClosed(3, now: clock.now)
        #expect(machine.isDrained)
        clock.advance(by: .seconds(60))
        #expect(machine.expireWaiters(now: clock.now).expired.isEmpty, "no wait timeout while draining")
        let (open, deadline) = machine.resume(now: clock.now)
        #expect(open == 1)
        #expect(deadline == clock.now.advanced(by: .seconds(30)))
        #expect(machine.connectionOpened(4, now: clock.now) == .init(.lease(4, to: "w")))
    }

    @Test func retireAllReplacesIdleNowLeasedOnReleaseAndConnectsInProgress() {
        let clock = MockClock()
        var machine = self.threeConnections(clock: clock)
        _ = machine.leaseRequested("d", now: clock.now)
        _ = machine.leaseRequested("e", now: clock.now)  // opening nothing: all three are leased or idle
        var fresh = Machine(configuration: PoolConfiguration(size: 2))
        _ = fresh.leaseRequested("f", now: clock.now)
        #expect(fresh.opening == 1)
        _ = fresh.retireAll(now: clock.now)
        // Started before the retire (with the old settings): closed as it opens, a new one opened for "f".
        #expect(fresh.connectionOpened(9, now: clock.now) == .init(.close(9), open: 1))
        #expect(fresh.connectionOpened(10, now: clock.now) == .init(.lease(10, to: "f")))
        let (close, _) = machine.retireAll(now: clock.now)
        #expect(close.isEmpty, "all were leased")
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now).primary == .close(1))
    }

    @Test func lifetimeAndIdleTimeoutCloseAtUpkeepAndRelease() {
        var clock = MockClock()
        let configuration = PoolConfiguration(size: 3, minIdle: 1, maxLifetime: .seconds(100), idleTimeout: .seconds(10))
        var machine = self.threeConnections(clock: clock, configuration: configuration)
        clock.advance(by: .seconds(11))
        let idle = machine.maintenance(now: clock.now)
        #expect(idle.close.count == 1, "one idle connection above min_idle times out")
        clock.advance(by: .seconds(90))
        #expect(machine.connectionReleased(3, reusable: true, now: clock.now).primary == .close(3), "past its lifetime")
        #expect(machine.maintenance(now: clock.now).close.count == 1, "the last idle one is past its lifetime")
    }

    @Test func aWaiterWithAnEarlierDeadlineExpiresEvenBehindALaterOne() {
        var clock = MockClock()
        var machine = Machine(configuration: PoolConfiguration(size: 1, waitTimeout: .seconds(30)))
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.leaseRequested("b", now: clock.now)
        machine.setPolicy(waitTimeout: .seconds(1), maxLifetime: nil, idleTimeout: nil)
        _ = machine.leaseRequested("c", now: clock.now)
        clock.advance(by: .seconds(2))
        let (expired, next) = machine.expireWaiters(now: clock.now)
        #expect(expired == ["c"])
        #expect(next == MockInstant(.seconds(30)))
    }
}
