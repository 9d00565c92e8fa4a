// Shutdown: waiters refused, idle connections closed, and everything that comes back afterwards closed too.

import PoolCore
import Testing

@Suite struct PoolShutdownTests {
    @Test func shutdownRefusesWaitersAndClosesLaterReleases() {
        var machine = Machine(configuration: PoolConfiguration(size: 1))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.leaseRequested("b", now: clock.now)
        _ = machine.leaseRequested("c", now: clock.now)

        let (refused, close) = machine.shutdown()
        #expect(refused == ["b", "c"])
        #expect(close.isEmpty)
        #expect(machine.isShuttingDown)
        #expect(machine.waiting == 0)

        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.close(1)))
        #expect(machine.openConnections == 0)
        #expect(machine.expireWaiters(now: clock.now).expired == [], "refused waiters do not time out again")
        #expect(machine.leaseRequested("d", now: clock.now) == .init(.fail("d", .shuttingDown)))
    }

    @Test func shutdownReturnsIdleConnectionsAndClosesConnectsThatFinishLater() {
        var machine = Machine(configuration: PoolConfiguration(size: 3, minIdle: 3))
        let clock = MockClock()
        #expect(machine.maintenance(now: clock.now) == ([], 3))
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.connectionOpened(2, now: clock.now)
        _ = machine.leaseRequested("a", now: clock.now)

        let (refused, close) = machine.shutdown()
        #expect(refused.isEmpty)
        #expect(close == [1])
        #expect(machine.idle.isEmpty)
        #expect(machine.leased == [2])

        #expect(machine.connectionOpened(3, now: clock.now) == .init(.close(3)))
        #expect(machine.connectionReleased(2, reusable: true, now: clock.now) == .init(.close(2)))
        #expect(machine.maintenance(now: clock.now) == ([], 0))
        #expect(machine.openConnections == 0)
        #expect(machine.opening == 0)
    }

    @Test func nothingIsOpenedAfterShutdown() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, minIdle: 2))
        let clock = MockClock()
        _ = machine.maintenance(now: clock.now)
        _ = machine.connectionOpened(1, now: clock.now)
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.shutdown()
        #expect(machine.connectionFailed("refused", now: clock.now) == .init(.none))
        #expect(machine.connectionClosed(1, now: clock.now) == .init(.none))
        #expect(machine.maintenance(now: clock.now) == ([], 0))
    }
}
