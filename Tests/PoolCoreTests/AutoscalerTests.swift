// The autoscaler: quick growth under queueing, slow shrinking after sustained idleness, bounds, lifetimes.

import PoolCore
import Testing

@Suite struct AutoscalerTests {
    static let queued = LoadWindow(peakConcurrency: 10, peakQueue: 6, waitP95Milliseconds: 40)
    static let idle = LoadWindow(peakConcurrency: 1, peakQueue: 0, waitP95Milliseconds: 0)
    static let busy = LoadWindow(peakConcurrency: 9, peakQueue: 0, waitP95Milliseconds: 0.2)

    @Test func queueingGrowsWithinOneWindow() {
        var scaler = Autoscaler(minimum: 2, maximum: 50)
        let decision = scaler.decide(size: 10, window: Self.queued)
        #expect(decision.size == 16, "grows by the queue seen")
        #expect(decision.changed)
        #expect(decision.reason.contains("queued"))
        let slowWaits = scaler.decide(size: 10, window: LoadWindow(peakConcurrency: 10, peakQueue: 0, waitP95Milliseconds: 50))
        #expect(slowWaits.size == 15, "long waits without a queue at the end still grow, by half")
    }

    @Test func idlenessShrinksOnlyAfterSustainedIdleWindows() {
        var scaler = Autoscaler(minimum: 2, maximum: 50, idleWindowsToShrink: 3)
        #expect(scaler.decide(size: 20, window: Self.idle).size == 20)
        #expect(scaler.decide(size: 20, window: Self.idle).size == 20)
        let third = scaler.decide(size: 20, window: Self.idle)
        #expect(third.size == 16, "a quarter of the unused part")
        #expect(third.reason.contains("shrink"))
        #expect(scaler.decide(size: 16, window: Self.idle).size == 16, "the idle count starts over")
    }

    @Test func idleAtTheMinimumSaysSoInsteadOfCountingPastTheThreshold() {
        var scaler = Autoscaler(minimum: 3, maximum: 50, idleWindowsToShrink: 3)
        var reasons: [String] = []
        for _ in 0..<9 { reasons.append(scaler.decide(size: 3, window: LoadWindow(peakConcurrency: 0, peakQueue: 0, waitP95Milliseconds: 0)).reason) }
        #expect(reasons[0] == "low use (1 of 3 windows before shrinking)")
        #expect(reasons[1] == "low use (2 of 3 windows before shrinking)")
        #expect(reasons[2...].allSatisfy { $0 == "low use, not shrinking: the pool is at its minimum 3" }, "\(reasons)")
        // Once the minimum is lowered, the very next idle window shrinks.
        scaler.minimum = 1
        #expect(scaler.decide(size: 3, window: LoadWindow(peakConcurrency: 0, peakQueue: 0, waitP95Milliseconds: 0)).size == 2)
    }

    @Test func aBusyWindowResetsTheIdleCount() {
        var scaler = Autoscaler(minimum: 2, maximum: 50, idleWindowsToShrink: 2)
        _ = scaler.decide(size: 10, window: Self.idle)
        #expect(scaler.decide(size: 10, window: Self.busy).size == 10)
        #expect(scaler.decide(size: 10, window: Self.idle).size == 10, "one idle window after a busy one is not enough")
    }

    @Test func boundsHold() {
        var scaler = Autoscaler(minimum: 4, maximum: 12, idleWindowsToShrink: 1)
        #expect(scaler.decide(size: 10, window: Self.queued).size == 12)
        #expect(scaler.decide(size: 12, window: Self.queued).reason.contains("maximum"))
        var size = 12
        for _ in 0..<20 { size = scaler.decide(size: size, window: LoadWindow(peakConcurrency: 0, peakQueue: 0, waitP95Milliseconds: 0)).size }
        #expect(size == 4)
        #expect(scaler.decide(size: 1, window: Self.busy).size >= 4, "a size below the minimum is brought back")
    }

    @Test func neverShrinksBelowThePeakJustSeen() {
        var scaler = Autoscaler(minimum: 1, maximum: 50, idleWindowsToShrink: 1, idleUseRatio: 0.9)
        let decision = scaler.decide(size: 10, window: LoadWindow(peakConcurrency: 8, peakQueue: 0, waitP95Milliseconds: 0))
        #expect(decision.size >= 9)
    }

    @Test(arguments: [(0.0, 7200.0), (1.0, 1800.0), (0.5, 4500.0), (2.0, 1800.0)])
    func adaptiveLifetimeFollowsLoad(use: Double, seconds: Double) {
        #expect(AdaptiveLifetime.lifetime(use: use) == .milliseconds(Int64(seconds * 1000)))
    }
}
