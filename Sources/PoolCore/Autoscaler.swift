// Pool sizing from observed load: grow quickly while clients queue, shrink slowly after sustained idleness.

/// What one autoscaling window saw.
public struct LoadWindow: Sendable, Equatable {
    /// Most connections leased at once.
    public var peakConcurrency: Int
    /// Most clients waiting at once.
    public var peakQueue: Int
    /// 95th percentile of wait time, in milliseconds.
    public var waitP95Milliseconds: Double

    public init(peakConcurrency: Int, peakQueue: Int, waitP95Milliseconds: Double) {
        self.peakConcurrency = peakConcurrency
        self.peakQueue = peakQueue
        self.waitP95Milliseconds = waitP95Milliseconds
    }
}

/// Decides a pool's size after each window; a value, so tests drive it with made-up windows.
public struct Autoscaler: Sendable, Equatable {
    public struct Decision: Sendable, Equatable {
        public var size: Int
        public var previous: Int
        public var reason: String
        public var window: LoadWindow
        public var changed: Bool { self.size != self.previous }
    }

    public var minimum: Int
    public var maximum: Int
    /// Waits above this (p95) count as queueing even when no client is waiting at the window's end.
    public var waitThresholdMilliseconds: Double
    /// Windows in a row with low use before the pool shrinks.
    public var idleWindowsToShrink: Int
    /// Below this share of the size a window counts as idle.
    public var idleUseRatio: Double
    private(set) var idleWindows = 0

    public init(minimum: Int, maximum: Int, waitThresholdMilliseconds: Double = 10, idleWindowsToShrink: Int = 3, idleUseRatio: Double = 0.5) {
        self.minimum = max(1, minimum)
        self.maximum = max(self.minimum, maximum)
        self.waitThresholdMilliseconds = waitThresholdMilliseconds
        self.idleWindowsToShrink = idleWindowsToShrink
        self.idleUseRatio = idleUseRatio
    }

    /// The size for the next window. Growth adds the queue seen (at least half the size again when waits
    /// are long); shrinking removes a quarter of the unused part, only after `idleWindowsToShrink` idle
    /// windows, and never below the peak just seen.
    public mutating func decide(size current: Int, window: LoadWindow) -> Decision {
        let size = min(max(current, self.minimum), self.maximum)
        let queued = window.peakQueue > 0 || window.waitP95Milliseconds > self.waitThresholdMilliseconds
        if queued {
            self.idleWindows = 0
            let step = max(window.peakQueue, (size + 1) / 2, 1)
            let target = min(self.maximum, size + step)
            let reason = target > size
                ? "clients queued (peak \(window.peakQueue), wait p95 \(Self.format(window.waitP95Milliseconds)) ms): grow by \(target - size)"
                : "clients queued but the pool is at its maximum \(self.maximum)"
            return Decision(size: target, previous: current, reason: reason, window: window)
        }
        if Double(window.peakConcurrency) < Double(size) * self.idleUseRatio {
            self.idleWindows += 1
            if self.idleWindows >= self.idleWindowsToShrink {
                let floor = max(self.minimum, window.peakConcurrency + 1)
                let target = max(floor, size - max(1, (size - window.peakConcurrency) / 4))
                if target < size {
                    self.idleWindows = 0
                    return Decision(
                        size: target, previous: current,
                        reason: "peak use \(window.peakConcurrency) of \(size) for \(self.idleWindowsToShrink) windows: shrink by \(size - target)",
                        window: window
                    )
                }
                // Idle long enough, but nothing to take away: the count stays full, so the first window the
                // floor allows it, the pool shrinks.
                self.idleWindows = self.idleWindowsToShrink
                let floorReason = size <= self.minimum
                    ? "the pool is at its minimum \(self.minimum)"
                    : "the pool keeps one above the peak use \(window.peakConcurrency)"
                return Decision(size: size, previous: current, reason: "low use, not shrinking: \(floorReason)", window: window)
            }
            return Decision(size: size, previous: current, reason: "low use (\(self.idleWindows) of \(self.idleWindowsToShrink) windows before shrinking)", window: window)
        }
        self.idleWindows = 0
        return Decision(size: size, previous: current, reason: "steady: peak use \(window.peakConcurrency) of \(size), no queue", window: window)
    }

    private static func format(_ value: Double) -> String {
        String((value * 10).rounded() / 10)
    }
}

/// `recycle = "adaptive"`: server lifetime from load, 2 h when idle down to 30 min when fully used.
public enum AdaptiveLifetime {
    public static let shortest: Duration = .seconds(30 * 60)
    public static let longest: Duration = .seconds(2 * 3600)

    /// `use` is peak concurrency over size in the last window (clamped to 0…1).
    public static func lifetime(use: Double) -> Duration {
        let clamped = min(max(use, 0), 1)
        let seconds = Self.longest.seconds - clamped * (Self.longest.seconds - Self.shortest.seconds)
        return .milliseconds(Int64(seconds * 1000))
    }
}

extension Duration {
    var seconds: Double {
        let (whole, attoseconds) = self.components
        return Double(whole) + Double(attoseconds) / 1e18
    }
}
