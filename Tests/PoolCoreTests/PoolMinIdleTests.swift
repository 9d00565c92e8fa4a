// The idle floor: minIdle connections opened ahead of demand at maintenance, refilled after leases, never above size.

import PoolCore
import Testing

@Suite struct PoolMinIdleTests {
    @Test func maintenanceOpensMinIdleAheadOfDemand() {
        var machine = Machine(configuration: PoolConfiguration(size: 3, minIdle: 2))
        let clock = MockClock()
        #expect(machine.maintenance(now: clock.now) == ([], 2))
        #expect(machine.maintenance(now: clock.now) == ([], 0), "connects in progress count toward the floor")
        #expect(machine.connectionOpened(1, now: clock.now) == .init(.none))
        #expect(machine.connectionOpened(2, now: clock.now) == .init(.none))
        #expect(machine.idle == [1, 2])
        #expect(machine.maintenance(now: clock.now) == ([], 0))
    }

    @Test func leasesRefillTheFloorUntilSizeIsReached() {
        var machine = Machine(configuration: PoolConfiguration(size: 3, minIdle: 2))
        let clock = MockClock()
        _ = machine.maintenance(now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.connectionOpened(2, now: clock.now)

        #expect(machine.leaseRequested("a", now: clock.now) == .init(.lease(2, to: "a"), open: 1))
        #expect(machine.connectionOpened(3, now: clock.now) == .init(.none))
        #expect(machine.idle == [1, 3])

        // Size is reached: the floor is not refilled even with one idle connection left.
        #expect(machine.leaseRequested("b", now: clock.now) == .init(.lease(3, to: "b")))
        #expect(machine.maintenance(now: clock.now) == ([], 0))
        #expect(machine.openConnections == 3)
    }

    @Test func theFloorIsCappedAtSize() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, minIdle: 5, maxOverflow: 3))
        let clock = MockClock()
        #expect(machine.maintenance(now: clock.now) == ([], 2))
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.connectionOpened(2, now: clock.now)
        #expect(machine.maintenance(now: clock.now) == ([], 0))
        // Overflow room is only for waiters, not for the idle floor.
        #expect(machine.leaseRequested("a", now: clock.now) == .init(.lease(2, to: "a")))
        #expect(machine.maintenance(now: clock.now) == ([], 0))
        #expect(machine.openConnections == 2)
    }

    @Test func aWaiterClaimingAnIdleConnectStartsAnotherForTheFloor() {
        var machine = Machine(configuration: PoolConfiguration(size: 4, minIdle: 2, waitTimeout: .seconds(3)))
        let clock = MockClock()
        #expect(machine.maintenance(now: clock.now) == ([], 2))
        #expect(
            machine.leaseRequested("a", now: clock.now)
                == .init(.wait("a", deadline: clock.after(.seconds(3))), open: 1))
        #expect(machine.connectionOpened(1, now: clock.now) == .init(.lease(1, to: "a")))
        #expect(machine.connectionOpened(2, now: clock.now) == .init(.none))
        #expect(machine.connectionOpened(3, now: clock.now) == .init(.none))
        #expect(machine.idle == [2, 3])
        #expect(machine.maintenance(now: clock.now) == ([], 0))
    }

    @Test func withoutAFloorNothingOpensAhead() {
        var machine = Machine(configuration: PoolConfiguration(size: 3))
        #expect(machine.maintenance(now: MockClock().now) == ([], 0))
    }
}
