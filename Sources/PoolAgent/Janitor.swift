// Periodic maintenance in one place: once a second, each pool's upkeep and the clients' timeouts.

import PoolCore

extension AgentRuntime {
    /// One tick of the agent's only repeating task.
    func janitor() {
        let now = Moment.now
        for pool in self.pools.values { pool.upkeep(now: now) }
        self.sweepClients(now: now)
        self.removeUnusedTemplatePools(now: now)
    }

    /// Clients idle too long (outright or inside a transaction) are disconnected, and requests running past
    /// `query_timeout` are cancelled.
    private func sweepClients(now: Moment) {
        for client in self.clients.values {
            guard let pool = client.pool, client.state == .active else { continue }
            let idle = client.lastActivity.duration(to: now)
            if let server = client.server {
                if let limit = pool.settings.queryTimeout, let since = server.busySince, since.duration(to: now) >= limit {
                    self.logger.info("query_timeout: cancelling", metadata: [LogKey.client: "\(client.id)", LogKey.backendPID: "\(server.backendPID)"])
                    server.cancel(threadPool: self.threadPool, logger: self.logger)
                    continue
                }
                if let limit = pool.settings.idleInTransactionTimeout, !server.isBusy,
                    server.transactionStatus != .idle, idle >= limit
                {
                    client.fatal(.fatal("25P03", "terminating connection due to idle-in-transaction timeout (\(limit.configText) in pool \"\(pool.name)\")"))
                    continue
                }
                guard !server.isBusy, server.transactionStatus == .idle else { continue }
                if let limit = pool.settings.pinTimeout, !client.pins.isEmpty, idle >= limit {
                    client.fatal(.fatal("57P05", "terminating connection: pinned to its server (\(client.pins.names.joined(separator: ", "))) and idle longer than pin_timeout \(limit.configText) in pool \"\(pool.name)\""))
                    continue
                }
            }
            if let limit = pool.settings.clientIdleTimeout, idle >= limit {
                client.fatal(.fatal("57P05", "terminating connection due to idle-session timeout (\(limit.configText) in pool \"\(pool.name)\")"))
            }
        }
    }

}

extension Pool {
    /// Closes idle servers past their lifetime, idle timeout or generation, and refills `min_idle`; while
    /// the upstream is down and nothing else tries it, probes it so health turns back to ok by itself; ends
    /// the load window when it is due.
    func upkeep(now: Moment) {
        let (close, open) = self.machine.maintenance(now: now)
        self.closeServers(close, reason: "recycled: lifetime, idle timeout or reconnect")
        self.stats.recycles += close.count
        self.openServers(open)
        if self.lastError != nil, self.openCount == 0, self.openingCount == 0, !self.probing,
            self.lastErrorAt.map({ $0.duration(to: now) >= .seconds(2) }) ?? true
        {
            self.probe()
        }
        if let ends = self.windowEnds, !(now < ends) {
            // The next window is counted from this one's end, so ticks that come late do not add up.
            self.windowEnds = ends.advanced(by: self.windowLength)
            self.windowEnded()
        }
    }
}
