// Overflow: connections above `size` only while clients queue, never above size + maxOverflow.

import PoolCore
import Testing

@Suite struct PoolOverflowTests {
    @Test func overflowOpensUpToTheHardLimitAndClosesWhenNobodyWaits() {
        var machine = Machine(configuration: PoolConfiguration(size: 2, maxOverflow: 1, waitTimeout: .seconds(10)))
        let clock = MockClock()
        let deadline = clock.after(.seconds(10))
        #expect(machine.leaseRequested("a", now: clock.now) == .init(.wait("a", deadline: deadline), open: 1))
        #expect(machine.leaseRequested("b", now: clock.now) == .init(.wait("b", deadline: deadline), open: 1))
        #expect(machine.leaseRequested("c", now: clock.now) == .init(.wait("c", deadline: deadline), open: 1))
        #expect(machine.leaseRequested("d", now: clock.now) == .init(.wait("d", deadline: deadline)))
        #expect(machine.leaseRequested("e", now: clock.now) == .init(.wait("e", deadline: deadline)))
        #expect(machine.opening == 3)

        #expect(machine.connectionOpened(1, now: clock.now) == .init(.lease(1, to: "a")))
        #expect(machine.connectionOpened(2, now: clock.now) == .init(.lease(2, to: "b")))
        #expect(machine.connectionOpened(3, now: clock.now) == .init(.lease(3, to: "c")))
        #expect(machine.openConnections == 3)
        #expect(machine.overflowInUse == 1)

        // While clients queue, returned connections serve them, overflow or not.
        #expect(machine.connectionReleased(3, reusable: true, now: clock.now) == .init(.lease(3, to: "d")))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.lease(1, to: "e")))

        // With nobody waiting, the first connection back above `size` is closed.
        #expect(machine.connectionReleased(2, reusable: true, now: clock.now) == .init(.close(2)))
        #expect(machine.openConnections == 2)
        #expect(machine.overflowInUse == 0)
        #expect(machine.connectionReleased(3, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.connectionReleased(1, reusable: true, now: clock.now) == .init(.none))
        #expect(machine.idle == [3, 1])
        #expect(machine.leaseRequested("f", now: clock.now) == .init(.lease(1, to: "f")))
    }

    @Test func withoutOverflowNoConnectStartsBeyondSize() {
        var machine = Machine(configuration: PoolConfiguration(size: 2))
        let clock = MockClock()
        let opens = (0..<10).map { machine.leaseRequested("r\($0)", now: clock.now).open }
        #expect(opens == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(machine.configuration.maximumConnections == 2)
    }

    @Test func anOverflowConnectThatArrivesAfterItsWaiterLeftIsClosed() {
        var machine = Machine(configuration: PoolConfiguration(size: 1, maxOverflow: 1))
        let clock = MockClock()
        _ = machine.leaseRequested("a", now: clock.now)
        _ = machine.leaseRequested("b", now: clock.now)
        #expect(machine.connectionOpened(1, now: clock.now) == .init(.lease(1, to: "a")))
        #expect(machine.requestCancelled("b") == .init(.none))
        #expect(machine.connectionOpened(2, now: clock.now) == .init(.close(2)))
        #expect(machine.openConnections == 1)
        #expect(machine.opening == 0)
    }

    @Test func hardLimitHoldsUnderABurstOfRequests() {
        var machine = Machine(configuration: PoolConfiguration(size: 3, maxOverflow: 2))
        let clock = MockClock()
        var opened = 0
        for index in 0..<500 {
            opened += machine.leaseRequested("r\(index)", now: clock.now).open
            #expect(machine.openConnections + machine.opening <= 5)
        }
        #expect(opened == 5)
        #expect(machine.waiting == 500)
        for connection in 1...5 {
            #expect(
                machine.connectionOpened(connection, now: clock.now)
                    == .init(.lease(connection, to: "r\(connection - 1)")))
        }
        // Each release serves the next in line and never asks for a sixth connection.
        for index in 5..<500 {
            let connection = index % 5 + 1
            #expect(
                machine.connectionReleased(connection, reusable: true, now: clock.now)
                    == .init(.lease(connection, to: "r\(index)"))
            )
        }
        #expect(machine.waiting == 0)
        #expect(machine.openConnections == 5)
    }
}
