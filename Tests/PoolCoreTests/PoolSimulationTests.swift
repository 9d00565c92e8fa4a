// Many random events against one pool, checking after each that its limits and promises hold.

import PoolCore
import Testing

/// A small seeded generator, so a failing run can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Plays the part of the pool's caller: performs each action and tracks what really exists.
struct PoolSimulation {
    var machine: Machine
    var clock = MockClock()
    var random: SplitMix64
    /// Connections opened and not yet closed by an action or lost.
    var live: Set<Int> = []
    var leasedTo: [Int: String] = [:]
    /// Queued requests in the order the machine must serve them.
    var waiting: [(request: String, deadline: MockInstant)] = []
    var pendingOpens = 0
    /// When refilling the idle floor may resume; nil once a connect succeeds.
    var refillPausedUntil: MockInstant? = nil
    var nextConnection = 1
    var nextRequest = 1
    var served = 0
    var timedOut = 0
    var refusedOnConnect = 0
    /// Connections closed because they came back, or arrived, beyond `size` with nobody waiting.
    var overflowClosed = 0

    init(configuration: PoolConfiguration, seed: UInt64) {
        self.machine = Machine(configuration: configuration)
        self.random = SplitMix64(state: seed)
    }

    var configuration: PoolConfiguration { self.machine.configuration }

    mutating func chance(_ percent: Int) -> Bool {
        Int.random(in: 0..<100, using: &self.random) < percent
    }

    mutating func step() {
        switch Int.random(in: 0..<100, using: &self.random) {
        case 0..<30:
            let request = "r\(self.nextRequest)"
            self.nextRequest += 1
            self.perform(self.machine.leaseRequested(request, now: self.clock.now), newRequest: request)
        case 30..<55 where self.pendingOpens > 0:
            if self.chance(15) {
                self.pendingOpens -= 1
                self.refillPausedUntil = self.clock.after(self.configuration.retryDelay)
                let oldest = self.waiting.first?.request
                let action = self.machine.connectionFailed("refused", now: self.clock.now)
                if case .fail(let request, _) = action.primary {
                    #expect(request == oldest, "a failed connect refuses the oldest waiter")
                    self.refusedOnConnect += 1
                }
                self.perform(action)
            } else {
                let connection = self.nextConnection
                self.nextConnection += 1
                self.pendingOpens -= 1
                self.refillPausedUntil = nil
                self.live.insert(connection)
                let action = self.machine.connectionOpened(connection, now: self.clock.now)
                if case .close = action.primary { self.overflowClosed += 1 }
                self.perform(action)
            }
        case 55..<80 where !self.leasedTo.isEmpty:
            let connection = self.leasedTo.keys.sorted().randomElement(using: &self.random)!
            let reusable = self.chance(85)
            self.leasedTo[connection] = nil
            let action = self.machine.connectionReleased(connection, reusable: reusable, now: self.clock.now)
            if !reusable {
                #expect(action.primary == .close(connection))
            } else if case .close = action.primary {
                self.overflowClosed += 1
            }
            self.perform(action)
        case 80..<84 where !self.live.isEmpty:
            let connection = self.live.sorted().randomElement(using: &self.random)!
            self.live.remove(connection)
            self.leasedTo[connection] = nil
            let action = self.machine.connectionClosed(connection, now: self.clock.now)
            #expect(action.primary == .none)
            self.perform(action)
        case 84..<88 where !self.waiting.isEmpty:
            let index = Int.random(in: 0..<self.waiting.count, using: &self.random)
            let request = self.waiting.remove(at: index).request
            #expect(self.machine.requestCancelled(request) == .init(.none))
        default:
            self.clock.advance(by: .milliseconds(Int.random(in: 0...400, using: &self.random)))
            self.fireTimers()
            let upkeep = self.machine.maintenance(now: self.clock.now)
            #expect(upkeep.close.isEmpty, "no lifetime or idle timeout is configured")
            self.perform(.init(.none, open: upkeep.open))
            self.checkIdleFloor()
        }
        self.checkInvariants()
    }

    mutating func fireTimers() {
        let due = Set(self.waiting.filter { $0.deadline <= self.clock.now }.map(\.request))
        let expired = self.machine.expireWaiters(now: self.clock.now).expired
        #expect(Set(expired) == due, "exactly the waiters past their deadline expire")
        #expect(expired.count == due.count)
        self.waiting.removeAll { due.contains($0.request) }
        self.timedOut += expired.count
    }

    /// Carries out an action as the pool's caller would, checking it is one the caller can carry out.
    mutating func perform(_ action: Action, newRequest: String? = nil) {
        #expect(action.open >= 0)
        self.pendingOpens += action.open
        switch action.primary {
        case .none:
            break
        case .lease(let connection, let request):
            #expect(self.live.contains(connection), "leased connection \(connection) is open")
            #expect(self.leasedTo[connection] == nil, "connection \(connection) is not leased twice")
            if request == newRequest {
                #expect(self.waiting.isEmpty, "a new request is served at once only when nobody waits")
            } else {
                #expect(request == self.waiting.first?.request, "waiters are served first come first served")
                self.waiting.removeFirst()
            }
            self.leasedTo[connection] = request
            self.served += 1
        case .wait(let request, let deadline):
            #expect(request == newRequest)
            #expect(deadline == self.clock.after(self.configuration.waitTimeout))
            self.waiting.append((request, deadline))
        case .fail(let request, _):
            let index = self.waiting.firstIndex { $0.request == request }
            #expect(index != nil, "only a waiting request is refused")
            if let index { self.waiting.remove(at: index) }
        case .close(let connection):
            #expect(self.live.contains(connection))
            #expect(self.leasedTo[connection] == nil, "a leased connection is never closed under its client")
            self.live.remove(connection)
        }
    }

    func checkInvariants() {
        let limit = self.configuration.maximumConnections
        #expect(self.live.count + self.pendingOpens <= limit, "hard limit")
        #expect(self.machine.openConnections == self.live.count)
        #expect(self.machine.opening == self.pendingOpens)
        #expect(self.machine.leased == Set(self.leasedTo.keys))
        #expect(Set(self.machine.idle) == self.live.subtracting(self.leasedTo.keys))
        #expect(self.machine.idle.count <= self.configuration.size)
        #expect(self.machine.waitingRequests == self.waiting.map(\.request))
        if !self.waiting.isEmpty {
            #expect(self.machine.idle.isEmpty, "nobody waits while a connection is idle")
            #expect(
                self.waiting.count <= self.pendingOpens || self.live.count + self.pendingOpens == limit,
                "every waiter has a connect in progress unless the hard limit is reached"
            )
        }
    }

    /// After maintenance outside a pause, idle connections plus connects nobody waits for reach the floor,
    /// unless `size` is reached.
    func checkIdleFloor() {
        if let pausedUntil = self.refillPausedUntil, self.clock.now < pausedUntil { return }
        let floor = min(self.configuration.minIdle, self.configuration.size)
        let spareOpens = max(0, self.pendingOpens - self.waiting.count)
        #expect(
            self.machine.idle.count + spareOpens >= floor
                || self.live.count + self.pendingOpens >= self.configuration.size,
            "idle floor refilled at maintenance"
        )
    }

    /// Lets every connect succeed and every client finish, until the pool is quiet.
    mutating func drain() {
        while self.pendingOpens > 0 || !self.leasedTo.isEmpty {
            if self.pendingOpens > 0 {
                let connection = self.nextConnection
                self.nextConnection += 1
                self.pendingOpens -= 1
                self.refillPausedUntil = nil
                self.live.insert(connection)
                self.perform(self.machine.connectionOpened(connection, now: self.clock.now))
            } else {
                let connection = self.leasedTo.keys.min()!
                self.leasedTo[connection] = nil
                self.perform(self.machine.connectionReleased(connection, reusable: true, now: self.clock.now))
            }
            self.checkInvariants()
        }
    }
}

@Suite struct PoolSimulationTests {
    @Test(arguments: [UInt64(1), 2, 3, 42, 2024])
    func limitsAndOrderHoldUnderManyRandomEvents(seed: UInt64) {
        let configuration = PoolConfiguration(
            size: 4, minIdle: 2, maxOverflow: 2, waitTimeout: .seconds(2), retryDelay: .milliseconds(300)
        )
        var simulation = PoolSimulation(configuration: configuration, seed: seed)
        for _ in 0..<4000 { simulation.step() }
        simulation.drain()

        #expect(simulation.waiting.isEmpty)
        #expect(simulation.machine.idle.count == simulation.live.count)
        #expect(simulation.live.count <= configuration.size, "overflow connections are closed once idle")
        // The run must have exercised queueing, timeouts, failed connects and overflow closes.
        #expect(simulation.served > 500)
        #expect(simulation.timedOut > 0)
        #expect(simulation.refusedOnConnect > 0)
        #expect(simulation.overflowClosed > 0)
    }

    @Test func aPoolWithoutOverflowOrFloorKeepsItsLimitsToo() {
        var simulation = PoolSimulation(configuration: PoolConfiguration(size: 1, waitTimeout: .seconds(1)), seed: 7)
        for _ in 0..<2000 { simulation.step() }
        simulation.drain()
        #expect(simulation.live.count <= 1)
        #expect(simulation.served > 100)
    }
}
