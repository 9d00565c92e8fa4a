// Connections that cannot be reused or that went away: forgotten, and replaced for waiters and the idle floor.

import PoolCore
import Testing

@Suite struct PoolConnectionLossTests {
    @Test func aNonReusableReleaseClosesAndOpensForTheNextWaiter() {
        var machine = Machine(configuration: PoolConfiguration(size: 1))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.leaseRequested("b", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        #expect(machine.connectionReleased(1, reusable: false, now: clock.now) == .init(.close(1), open: 1))
        #expect(machine.openConnections == 0)
        #expect(machine.connectionOpened(2, now: clock.now) == .init(.lease(2, to: "b")))
        #expect(machine.connectionReleased(2, reusable: false, now: clock.now) == .init(.close(2)))
        #expect(machine.openConnections == 0)
        #expect(machine.idle.isEmpty)
    }

    @Test func aNonReusableReleaseRefillsTheFloor() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, minIdle: 2))
        let clock = MockClock()
        _ = machine.maintenance(now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.connectionOpened(2, now: clock.now)
        #expect(machine.leaseRequested("a", now: clock.now) == .init(.lease(2, to: "a")))
        #expect(machine.connectionReleased(2, reusable: false, now: clock.now) == .init(.close(2), open: 1))
        #expect(machine.idle == [1])
        #expect(machine.opening == 1)
    }

    @Test func losingAnIdleConnectionRefillsTheFloor() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, minIdle: 2))
        let clock = MockClock()
        _ = machine.maintenance(now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.connectionOpened(2, now: clock.now)
        #expect(machine.connectionClosed(1, now: clock.now) == .init(.none, open: 1))
        #expect(machine.idle == [2])
        #expect(machine.openConnections == 1)
    }

    @Test func losingALeasedConnectionOpensForAWaiter() {
        var machine = Machine(configuration: PoolConfiguration(size: 1))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.leaseRequested("b", now: clock.now)
        #expect(machine.connectionClosed(1, now: clock.now) == .init(.none, open: 1))
        #expect(machine.leased.isEmpty)
        #expect(machine.connectionOpened(2, now: clock.now) == .init(.lease(2, to: "b")))
        // The client of the lost connection hands it back late; the pool has forgotten it.
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.idle.isEmpty)
        #expect(machine.leased == [2])
    }

    @Test func losingAnUnknownConnectionChangesNothing() {
        var machine = Machine(configuration: PoolConfiguration(size: 2))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.connectionReleased(1, reusable: true, now: clock.now)
        #expect(machine.connectionClosed(9, now: clock.now) == .init(.none))
        #expect(machine.idle == [1])
        #expect(machine.openConnections == 1)
    }
}
