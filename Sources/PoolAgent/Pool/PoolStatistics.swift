// The counters and latency histograms of one pool, read by `stats` and the Prometheus endpoint.

import PoolCore

/// Counters of one pool since start.
final class PoolStatistics: @unchecked Sendable {  // Confined to the agent's event loop.
    var checkouts = 0
    var releases = 0
    var waits = 0
    var waitTimeouts = 0
    var connectAttempts = 0
    var connects = 0
    var connectFailures = 0
    var recycles = 0
    /// Idle servers found dead before use: by a failed pre-ping or by their socket closing while idle.
    var prePingFailures = 0
    var transactions = 0
    var queries = 0
    var bytesIn = 0
    var bytesOut = 0
    var overflowPeak = 0
    /// Transaction mode: clients pinned to their server, by reason (one count per reason that appeared).
    var pins: [String: Int] = [:]
    /// Transaction mode: reasons that went away (the state was dropped or its client left).
    var unpins: [String: Int] = [:]
    /// Statements refused (or clients closed) because pinning was not allowed or max_pinned was reached.
    var pinRefusals = 0
    /// Notifications delivered to clients by the pool's listener (one per client).
    var notifications = 0
    /// Clients closed for leaving notification_queue notifications unread.
    var notificationOverflows = 0
    /// Times the listener connection came back after it was lost.
    var listenerReconnects = 0
    var waitTime = LatencyHistogram()
    var transactionTime = LatencyHistogram()
    var queryTime = LatencyHistogram()
}
