// Prometheus text exposition of every pool's counters, gauges and latency summaries, served over HTTP.

import NIOCore
import NIOHTTP1
import PGWire
import PoolCore

extension AgentRuntime {
    /// The text format of Prometheus (version 0.0.4), one series per pool (label `pool`).
    func prometheusText() -> String {
        let pools = self.pools.values.sorted { $0.name < $1.name }
        var text = ""
        func family(_ name: String, _ type: String, _ help: String, _ value: (Pool) -> Int) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for pool in pools { text += "\(name){pool=\"\(Self.label(pool.name))\"} \(value(pool))\n" }
        }
        family("poolagent_checkouts_total", "counter", "Requests for a server connection.") { $0.stats.checkouts }
        family("poolagent_waits_total", "counter", "Requests that had to queue.") { $0.stats.waits }
        family("poolagent_wait_timeouts_total", "counter", "Requests refused after wait_timeout.") { $0.stats.waitTimeouts }
        family("poolagent_transactions_total", "counter", "Transactions completed on pooled servers.") { $0.stats.transactions }
        family("poolagent_queries_total", "counter", "Requests (queries or pipelines) answered.") { $0.stats.queries }
        family("poolagent_client_bytes_total", "counter", "Bytes received from clients.") { $0.stats.bytesIn }
        family("poolagent_server_bytes_total", "counter", "Bytes received from servers.") { $0.stats.bytesOut }
        family("poolagent_server_connects_total", "counter", "Server connections opened.") { $0.stats.connects }
        family("poolagent_server_connect_failures_total", "counter", "Server connections that failed to open.") { $0.stats.connectFailures }
        family("poolagent_server_recycles_total", "counter", "Servers closed for lifetime, idle timeout or reconnect.") { $0.stats.recycles }
        family("poolagent_pre_ping_failures_total", "counter", "Idle servers found dead before use.") { $0.stats.prePingFailures }
        family("poolagent_pool_size", "gauge", "Target size of the pool.") { $0.configuration.size }
        family("poolagent_servers_open", "gauge", "Open server connections.") { $0.openCount }
        family("poolagent_servers_idle", "gauge", "Idle server connections.") { $0.idleCount }
        family("poolagent_servers_active", "gauge", "Server connections in use.") { $0.leasedCount }
        family("poolagent_overflow_in_use", "gauge", "Server connections above the pool size.") { max(0, $0.openCount - $0.configuration.size) }
        family("poolagent_overflow_peak", "gauge", "Most server connections above the pool size at once.") { max(0, $0.stats.overflowPeak) }
        family("poolagent_clients_waiting", "gauge", "Clients queued for a server.") { $0.waitingCount }
        family("poolagent_up", "gauge", "1 when the pool's last upstream contact succeeded.") { $0.health == "ok" ? 1 : 0 }
        func summary(_ name: String, _ help: String, _ histogram: (Pool) -> LatencyHistogram) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) summary\n"
            for pool in pools {
                let h = histogram(pool)
                let label = "pool=\"\(Self.label(pool.name))\""
                for quantile in [0.5, 0.95, 0.99] {
                    text += "\(name){\(label),quantile=\"\(quantile)\"} \(Double(h.percentile(quantile)) / 1e6)\n"
                }
                text += "\(name)_sum{\(label)} \(Double(h.sumMicroseconds) / 1e6)\n\(name)_count{\(label)} \(h.count)\n"
            }
        }
        summary("poolagent_wait_seconds", "Time a request waited for a server.") { $0.stats.waitTime }
        summary("poolagent_transaction_seconds", "Time from a transaction's first request until the server was idle.") { $0.stats.transactionTime }
        summary("poolagent_query_seconds", "Time from a request until its last ReadyForQuery.") { $0.stats.queryTime }
        family("poolagent_pool_clients", "gauge", "Logged-in clients of the pool.") { self.limits.clients(of: $0.name) }
        family("poolagent_pool_max_clients", "gauge", "The pool's max_clients (0: no limit).") { $0.settings.maxClients }
        family("poolagent_statement_bytes", "gauge", "Statement text the pool keeps for its clients' named statements.") { $0.statements.bytes }
        family("poolagent_statement_budget_bytes", "gauge", "The pool's statement_budget.") { $0.statements.budget }
        family("poolagent_pinned_clients", "gauge", "Transaction-mode clients pinned to their server.") { $0.pinnedClients }
        family("poolagent_max_pinned", "gauge", "The pool's max_pinned.") { $0.pinnedLimit }
        family("poolagent_pin_refusals_total", "counter", "Statements refused or clients closed because a pin was not allowed.") { $0.stats.pinRefusals }
        func byReason(_ name: String, _ help: String, _ counts: (Pool) -> [String: Int]) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) counter\n"
            for pool in pools {
                for (_, reason) in SessionEffects.Pins.named {
                    text += "\(name){pool=\"\(Self.label(pool.name))\",reason=\"\(reason)\"} \(counts(pool)[reason, default: 0])\n"
                }
            }
        }
        byReason("poolagent_pins_total", "Clients pinned to their server, by reason.") { $0.stats.pins }
        byReason("poolagent_unpins_total", "Pin reasons that went away, by reason.") { $0.stats.unpins }
        family("poolagent_notifications_total", "counter", "Notifications the pool's listener delivered to clients.") { $0.stats.notifications }
        family("poolagent_notification_overflows_total", "counter", "Clients closed for leaving notification_queue notifications unread.") { $0.stats.notificationOverflows }
        family("poolagent_listener_reconnects_total", "counter", "Times the pool's listener connection came back after a loss.") { $0.stats.listenerReconnects }
        family("poolagent_listen_channels", "gauge", "Channels the pool's listener listens on for its clients.") { $0.existingListener?.channelCount ?? 0 }
        func gauge(_ name: String, _ type: String, _ help: String, _ value: Int) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        gauge("poolagent_clients", "gauge", "Client connections, logged in or not.", self.clients.count)
        gauge("poolagent_max_client_conn", "gauge", "The agent's max_client_conn.", self.configuration.maxClientConnections)
        gauge("poolagent_login_clients", "gauge", "Clients still logging in.", self.limits.loggingIn)
        gauge("poolagent_max_login_clients", "gauge", "The agent's max_login_clients.", self.configuration.maxLoginClients)
        gauge("poolagent_max_user_connections", "gauge", "The agent's max_user_connections (0: no limit).", self.configuration.maxUserConnections)
        gauge("poolagent_user_clients_max", "gauge", "Logged-in clients of the user with the most.", self.limits.busiestUser?.clients ?? 0)
        gauge("poolagent_open_fds", "gauge", "File descriptors the agent has open.", DescriptorLimit.open)
        gauge("poolagent_max_fds", "gauge", "The agent's soft descriptor limit.", Int(clamping: DescriptorLimit.current.soft))
        text += "# HELP poolagent_clients_refused_total Clients refused or shed, by limit.\n# TYPE poolagent_clients_refused_total counter\n"
        for key in ClientLimits.Refusal.keys {
            text += "poolagent_clients_refused_total{limit=\"\(key)\"} \(self.limits.refused[key, default: 0])\n"
        }
        return text
    }

    private static func label(_ value: String) -> String {
        value.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"").replacingAll("\n", with: "\\n")
    }
}

/// Answers `GET /metrics` with the Prometheus text; anything else is a 404.
final class MetricsHandler: ChannelInboundHandler, @unchecked Sendable {  // Confined to its channel's event loop.
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private unowned let runtime: AgentRuntime
    private var path = ""
    private var keepAlive = false

    init(runtime: AgentRuntime) {
        self.runtime = runtime
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.path = String(head.uri.split(separator: "?").first ?? "")
            self.keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            let found = self.path == "/metrics"
            let keepAlive = self.keepAlive
            let runtime = self.runtime
            // The figures live on the data loop; the response is written from this channel's loop.
            let text = found ? runtime.eventLoop.submit { runtime.prometheusText() } : context.eventLoop.makeSucceededFuture("not found; try /metrics\n")
            text.hop(to: context.eventLoop).assumeIsolated().whenSuccess { body in
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
                headers.add(name: "Content-Length", value: String(body.utf8.count))
                if !keepAlive { headers.add(name: "Connection", value: "close") }
                context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: found ? .ok : .notFound, headers: headers))), promise: nil)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
                let channel = context.channel
                context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in
                    if !keepAlive { channel.close(promise: nil) }
                }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
