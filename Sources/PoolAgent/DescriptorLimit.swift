// The process's descriptor limit: raised to the hard limit at start, and compared with what the configuration needs.

import NIOConcurrencyHelpers
import PoolCore

#if canImport(Glibc)
import Glibc
#endif

public enum DescriptorLimit {
    /// The soft and hard RLIMIT_NOFILE of this process.
    public static var current: (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Descriptors this process has open (entries of /proc/self/fd, less the one reading it), counted at
    /// most once a second: a scrape every few seconds must not walk tens of thousands of entries each time.
    public static var open: Int {
        let now = Moment.now
        if let cached = self.cache.withLockedValue({ $0 }), cached.at.duration(to: now) < .seconds(1) { return cached.count }
        let count = self.count()
        self.cache.withLockedValue { $0 = (now, count) }
        return count
    }

    private static let cache = NIOLockedValueBox<(at: Moment, count: Int)?>(nil)

    private static func count() -> Int {
        guard let directory = opendir("/proc/self/fd") else { return 0 }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            if entry.pointee.d_name.0 != UInt8(ascii: ".") { count += 1 }
        }
        return max(0, count - 1)
    }

    /// Raises the soft limit to the hard one (systemd's default soft limit is 1024, far below what an agent
    /// with thousands of clients needs). Returns the soft limit before and after.
    @discardableResult
    public static func raiseToHard() -> (before: UInt64, after: UInt64) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        let before = UInt64(limit.rlim_cur)
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return (before, Self.current.soft)
    }

    /// Descriptors kept free of clients for the pools' server connections (two each), probes and cancels,
    /// the control socket and the log: at most half the limit.
    public static func serverReserve(for configuration: AgentConfiguration, limit: UInt64) -> Int {
        let reserve = 2 * Self.servers(configuration) + 32
        return min(reserve, Int(clamping: limit / 2))
    }

    private static func servers(_ configuration: AgentConfiguration) -> Int {
        var servers = 0
        for pool in configuration.pools.values { servers += Self.servers(of: pool) }
        // The template's pools, as many as it may make.
        if let template = configuration.template { servers += template.maxPools * Self.servers(of: template.settings) }
        return servers
    }

    /// The most servers one pool can hold (its size or autoscale maximum, its overflow) and one probe or cancel.
    private static func servers(of pool: PoolSettings) -> Int {
        max(pool.size, pool.autoscale?.maximum ?? 0) + pool.maxOverflow + 1
    }

    /// Descriptors the configuration can use at once: every client socket, two per server (the agent's
    /// socket and libpq's), one per pool for a probe or cancel at a time, plus listeners, the loop's own and
    /// room for the log and the control socket's connections.
    public static func needed(by configuration: AgentConfiguration) -> Int {
        configuration.maxClientConnections + 2 * Self.servers(configuration) + configuration.listen.count + 64
    }

    /// A warning when `needed(by:)` does not fit in `limit`; nil when it does.
    public static func warning(for configuration: AgentConfiguration, limit: UInt64) -> String? {
        let needed = Self.needed(by: configuration)
        guard UInt64(needed) > limit else { return nil }
        return "the configured limits need up to \(needed) file descriptors (max_client_conn \(configuration.maxClientConnections) "
            + "plus two per server) but the descriptor limit is \(limit); lower max_client_conn or raise LimitNOFILE / ulimit -n"
    }
}
