// Load windows and what they decide: the autoscaler's size and the adaptive lifetime of servers.

import PoolCore

extension Pool {
    func setAutoscaling(_ on: Bool) {
        self.autoscalePinned = !on
        if on, self.autoscaler == nil {
            let configuration = self.configuration
            self.autoscaler = Autoscaler(minimum: max(1, configuration.minIdle), maximum: max(configuration.size * 2, 5))
        }
        if on { self.startWindows() }
    }

    func setFixedRecycle() {
        self.settings.adaptiveRecycle = false
    }

    func setAdaptiveRecycle() {
        self.settings.adaptiveRecycle = true
        self.startWindows()
        self.windowEnded()
    }

    /// Load windows (autoscaling, adaptive lifetime) last `autoscale.interval`, 5 min by default.
    var windowLength: Duration { self.settings.autoscale?.interval ?? .seconds(300) }

    /// Starts the load windows; the janitor ends each one when it is due.
    func startWindows() {
        guard self.windowEnds == nil else { return }
        self.windowEnds = Moment.now.advanced(by: self.windowLength)
    }

    func noteLoad() {
        self.windowPeakConcurrency = max(self.windowPeakConcurrency, self.leasedCount)
        self.windowPeakQueue = max(self.windowPeakQueue, self.waitingCount)
    }

    /// One window of load is over: adapt the lifetime, then let the autoscaler decide the size.
    func windowEnded() {
        let window = LoadWindow(
            peakConcurrency: max(self.windowPeakConcurrency, self.leasedCount),
            peakQueue: max(self.windowPeakQueue, self.waitingCount),
            waitP95Milliseconds: Double(self.windowWait.percentile(0.95)) / 1000
        )
        self.windowPeakConcurrency = self.leasedCount
        self.windowPeakQueue = self.waitingCount
        self.windowWait = LatencyHistogram()
        if self.settings.adaptiveRecycle {
            let use = Double(window.peakConcurrency) / Double(max(1, self.configuration.size))
            self.machine.setPolicy(maxLifetime: .some(AdaptiveLifetime.lifetime(use: use)), idleTimeout: nil)
        }
        guard var autoscaler = self.autoscaler else { return }
        let decision = autoscaler.decide(size: self.configuration.size, window: window)
        self.autoscaler = autoscaler
        self.lastDecision = decision
        let applied = decision.changed && !self.autoscalePinned && !self.isDraining
        if applied {
            _ = self.resize(size: decision.size, minIdle: min(self.configuration.minIdle, decision.size), maxOverflow: self.configuration.maxOverflow)
        }
        self.onAutoscale?(decision, applied)
    }
}
