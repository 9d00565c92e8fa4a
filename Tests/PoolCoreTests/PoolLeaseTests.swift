// Leasing: idle connections first, then first come first served, with a wait deadline of now + waitTimeout.

import PoolCore
import Testing

@Suite struct PoolLeaseTests {
    @Test func aRequestWaitsForTheConnectItStartsAndGetsIt() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, waitTimeout: .seconds(30)))
        let clock = MockClock()
        #expect(
            machine.leaseRequested("a", now: clock.now)
                == .init(.wait("a", deadline: clock.after(.seconds(30))), open: 1))
        #expect(machine.opening == 1)
        #expect(machine.connectionOpened(1, now: clock.now) == .init(.lease(1, to: "a")))
        #expect(machine.opening == 0)
        #expect(machine.leased == [1])
        #expect(machine.waiting == 0)
    }

    @Test func anIdleConnectionIsLeasedAtOnce() {
        var machine = Machine(configuration: PoolConfiguration(size: 1))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.idle == [1])
        #expect(machine.leaseRequested("b", now: clock.now) == .init(.lease(1, to: "b")))
        #expect(machine.idle.isEmpty)
    }

    @Test func waitersAreServedInArrivalOrder() {
        var machine = Machine(configuration: PoolConfiguration(size: 1, waitTimeout: .seconds(30)))
        var clock = MockClock()
        #expect(
            machine.leaseRequested("a", now: clock.now)
                == .init(.wait("a", deadline: clock.after(.seconds(30))), open: 1))
        for request in ["b", "c", "d"] {
            clock.advance(by: .milliseconds(10))
            #expect(
                machine.leaseRequested(request, now: clock.now)
                    == .init(.wait(request, deadline: clock.after(.seconds(30)))))
        }
        #expect(machine.waitingRequests == ["a", "b", "c", "d"])

        #expect(machine.connectionOpened(1, now: clock.now) == .init(.lease(1, to: "a")))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.lease(1, to: "b")))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.lease(1, to: "c")))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.lease(1, to: "d")))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.waitingRequests.isEmpty)
        #expect(machine.idle == [1])
    }

    @Test func aNewRequestDoesNotOvertakeWaitersWhenAConnectionComesBack() {
        var machine = Machine(configuration: PoolConfiguration(size: 1))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.leaseRequested("b", now: clock.now)
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.lease(1, to: "b")))
        #expect(machine.leaseRequested("c", now: clock.now) == .init(.wait("c", deadline: clock.after(.seconds(30)))))
    }

    @Test func leasesTakeTheMostRecentlyReleasedConnection() {
        var machine = Machine(configuration: PoolConfiguration(size: 2))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.leaseRequested("b", now: clock.now)
        #expect(machine.connectionOpened(1, now: clock.now) == .init(.lease(1, to: "a")))
        #expect(machine.connectionOpened(2, now: clock.now) == .init(.lease(2, to: "b")))
        #expect(machine.connectionReleased(2, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.leaseRequested("c", now: clock.now) == .init(.lease(1, to: "c")))
        #expect(machine.leaseRequested("d", now: clock.now) == .init(.lease(2, to: "d")))
    }

    @Test func eachWaiterBeyondTheConnectsInProgressStartsOneMore() {
        var machine = Machine(configuration: PoolConfiguration(size: 3))
        let clock = MockClock()
        #expect(machine.leaseRequested("a", now: clock.now).open == 1)
        #expect(machine.leaseRequested("b", now: clock.now).open == 1)
        #expect(machine.leaseRequested("c", now: clock.now).open == 1)
        #expect(machine.leaseRequested("d", now: clock.now).open == 0)
        #expect(machine.opening == 3)
        #expect(machine.waiting == 4)
    }

    @Test func releasingAConnectionThePoolDoesNotLeaseIsIgnored() {
        var machine = Machine(configuration: PoolConfiguration(size: 1))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        #expect(machine.connectionReleased(7, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.idle == [1])
        #expect(machine.leased.isEmpty)
    }
}
