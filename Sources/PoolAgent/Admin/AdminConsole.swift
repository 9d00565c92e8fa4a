// PgBouncer's admin console: the virtual database `pgbouncer`, answering SHOW in PgBouncer 1.18's column layout
// and PAUSE, RESUME, RELOAD, RECONNECT and KILL_CLIENT through the control plane, for the tools that read it.

import ControlRPC
import NIOCore
import PGWire
import PoolCore

#if canImport(Glibc)
import Glibc
#endif

/// One client's admin console session: reads simple Query messages one at a time, answers each.
///
/// Like PgBouncer's: simple protocol only (anything else is refused and the connection closed), errors are
/// 08P01 and leave the session usable, every SHOW completes with the tag `SHOW`. The control commands go
/// through `ControlService`, so subscribers hear of a PAUSE as of a `drain`.
final class AdminConsole {
    static let database = "pgbouncer"
    /// What PgBouncer 1.18 reports; libpq and psycopg read a version from it.
    static let serverVersion = "1.18.0/bouncer"
    static let parameters = [
        "server_version": AdminConsole.serverVersion, "client_encoding": "UTF8", "server_encoding": "UTF8",
        "DateStyle": "ISO", "TimeZone": "GMT", "standard_conforming_strings": "on", "is_superuser": "on",
    ]
    /// One query at most this long; a longer message closes the session.
    static let maximumMessage = 1 << 16

    enum Access: Equatable { case admin, stats }

    /// Valid until `close()`; a command finishing later checks `closed` first and never touches it after.
    private unowned(unsafe) let session: ClientSession
    private let access: Access
    private var input: ByteBuffer
    /// A control command is running; input waits (and the socket is not read).
    private var busy = false
    /// The session has ended.
    private var closed = false

    init(session: ClientSession, access: Access) {
        self.session = session
        self.access = access
        self.input = session.transport.allocator.buffer(capacity: 256)
    }

    private var runtime: AgentRuntime { self.session.runtime }

    func received(_ buffer: ByteBuffer) {
        var buffer = buffer
        self.input.writeBuffer(&buffer)
        self.process()
    }

    /// The session ended: nothing more is read, written or run.
    func close() {
        self.closed = true
    }

    /// The client reads its answers again.
    func writable() {
        self.process()
    }

    /// Answers whole queries while the client reads its answers. The socket is read only while nothing waits:
    /// a client that sends faster than it reads, or during a PAUSE, is held by TCP, not by the agent's memory.
    private func process() {
        guard !self.closed else { return }
        defer {
            if !self.closed && self.session.state == .admin {
                self.input.discardReadBytes()
                let idle = !self.busy && self.session.transport.isWritable && self.input.readableBytes <= Self.maximumMessage
                self.session.setAdminReading(idle)
            }
        }
        while !self.busy, !self.closed, self.session.state == .admin, self.session.transport.isWritable {
            guard self.input.readableBytes >= 5,
                let type: UInt8 = self.input.getInteger(at: self.input.readerIndex),
                let length: Int32 = self.input.getInteger(at: self.input.readerIndex + 1)
            else { break }
            guard length >= 4, Int(length) <= Self.maximumMessage else {
                self.session.fatal(.fatal("08P01", "invalid message length \(length) on the admin console"))
                return
            }
            guard self.input.readableBytes >= 1 + Int(length) else { break }
            self.input.moveReaderIndex(forwardBy: 5)
            var body = self.input.readSlice(length: Int(length) - 4)!
            switch type {
            case FrontendMessageID.query:
                let text = body.readNullTerminatedString() ?? ""
                self.run(text)
            case FrontendMessageID.terminate:
                self.session.close(reason: "client terminated")
                return
            default:
                var out = self.session.transport.allocator.buffer(capacity: 128)
                ErrorResponse(.error, sqlState: "08P01", message: "extended query protocol not supported by admin console").encode(into: &out)
                self.session.transport.writeAndFlush(out)
                self.session.close(reason: "extended query protocol on the admin console")
                return
            }
        }
    }

    private func run(_ text: String) {
        guard let command = AdminCommand(parsing: text) else {
            return self.finish(.failure(.init("invalid command '\(text)', use SHOW HELP;")))
        }
        guard command.readOnly || self.access == .admin else {
            return self.finish(.failure(.init("admin access needed")))
        }
        switch command {
        case .show(let subject):
            self.finish(.success(self.show(subject)))
        case .pause(let database), .resume(let database), .reconnect(let database):
            let method = if case .pause = command { "drain" } else if case .resume = command { "resume" } else { "reconnect" }
            if let database, self.runtime.pools[database] == nil {
                return self.finish(.failure(.init("no such database: \(database)")))
            }
            self.control(method, database.map { ["pool": .string($0)] }, tag: command.tag)
        case .reload:
            self.control("reload", nil, tag: command.tag)
        case .killClient(let id):
            self.control("kill-client", ["id": JSONValue(id)], tag: command.tag)
        }
    }

    struct Failure: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    /// Runs a control method as poolctl would; its error becomes the console's.
    private func control(_ method: String, _ params: JSONValue?, tag: String) {
        guard let service = self.runtime.control else {
            return self.finish(.failure(.init("the control plane is not running")))
        }
        self.busy = true
        let loop = self.runtime.eventLoop
        service.perform(method, params: params).whenComplete { [self] result in
            self.busy = false
            guard !self.closed, self.session.state == .admin else { return }
            switch result {
            case .success: self.finish(.success(Result(tag: tag)))
            case .failure(let error as RPCError):
                self.finish(.failure(.init(([error.message] + [error.details.joined(separator: "; ")].filter { !$0.isEmpty }).joined(separator: ": "))))
            case .failure(let error): self.finish(.failure(.init("\(error)")))
            }
            // Later, not from inside this completion: commands that complete at once must not nest.
            loop.executeSoon { self.process() }
        }
    }

    /// A result set (or none) with its tag.
    struct Result {
        var columns: [(name: String, type: Int32)] = []
        var rows: [[String?]] = []
        var notice: (message: String, detail: String)? = nil
        var tag: String
    }

    private func finish(_ outcome: Swift.Result<Result, Failure>) {
        var out = self.session.transport.allocator.buffer(capacity: 1024)
        switch outcome {
        case .success(let result):
            if let notice = result.notice {
                out.writeMessage(BackendMessageID.noticeResponse) {
                    $0.writeInteger(UInt8(ascii: "S")); $0.writeNullTerminatedString("NOTICE")
                    $0.writeInteger(UInt8(ascii: "C")); $0.writeNullTerminatedString("00000")
                    $0.writeInteger(UInt8(ascii: "M")); $0.writeNullTerminatedString(notice.message)
                    $0.writeInteger(UInt8(ascii: "D")); $0.writeNullTerminatedString(notice.detail)
                    $0.writeInteger(UInt8(0))
                }
            }
            if !result.columns.isEmpty {
                out.writeRowDescription(result.columns)
                for row in result.rows { out.writeDataRow(row) }
            }
            out.writeCommandComplete(result.tag)
        case .failure(let failure):
            ErrorResponse(.error, sqlState: "08P01", message: failure.message).encode(into: &out)
        }
        out.writeReadyForQuery(.idle)
        self.session.transport.writeAndFlush(out)
    }

    // MARK: SHOW

    static let text: Int32 = 25, int4: Int32 = 23, numeric: Int32 = 1700

    private func show(_ subject: String) -> Result {
        switch subject {
        case "pools": return self.pools()
        case "stats": return self.stats()
        case "stats_totals": return self.statsTotals()
        case "clients": return self.clients()
        case "servers": return self.servers()
        case "databases": return self.databases()
        case "lists": return self.lists()
        case "config": return self.config()
        case "version":
            return Result(columns: [("version", Self.text)], rows: [["poolagent \(PoolAgentVersion.current)"]], tag: "SHOW")
        default:
            return Result(notice: ("Console usage", Self.help), tag: "SHOW")
        }
    }

    static let help = """
        SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|LISTS|STATS|STATS_TOTALS|VERSION
        PAUSE [<db>]
        RESUME [<db>]
        RECONNECT [<db>]
        RELOAD
        KILL_CLIENT <id>
        """

    private var sortedPools: [Pool] { self.runtime.pools.values.sorted { $0.name < $1.name } }

    /// Logged-in clients per pool: (active, waiting); admin sessions under the console's own name.
    private func clientCounts() -> [String: (active: Int, waiting: Int)] {
        var counts: [String: (active: Int, waiting: Int)] = [:]
        for client in self.runtime.clients.values {
            let name: String
            if client.state == .admin {
                name = Self.database
            } else if let pool = client.pool, client.state != .closed {
                name = pool.name
            } else {
                continue
            }
            if client.state == .waiting { counts[name, default: (0, 0)].waiting += 1 } else { counts[name, default: (0, 0)].active += 1 }
        }
        return counts
    }

    private func pools() -> Result {
        let counts = self.clientCounts()
        var rows: [[String?]] = []
        let admin = counts[Self.database] ?? (0, 0)
        rows.append([Self.database, Self.database, "\(admin.active)", "0"] + Array(repeating: "0", count: 11) + ["statement"])
        for pool in self.sortedPools {
            let count = counts[pool.name] ?? (0, 0)
            let wait = pool.longestWait.map { Int(($0.seconds * 1e6).rounded()) } ?? 0
            rows.append([
                pool.name, pool.upstreamUser, "\(count.active)", "\(count.waiting)", "0", "0",
                "\(pool.leasedCount)", "0", "0", "\(pool.idleCount)", "0", "0", "\(pool.openingCount)",
                "\(wait / 1_000_000)", "\(wait % 1_000_000)", pool.settings.mode.rawValue,
            ])
        }
        let columns = ["database", "user"].map { ($0, Self.text) }
            + ["cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active", "sv_active_cancel",
               "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us"].map { ($0, Self.int4) }
            + [("pool_mode", Self.text)]
        return Result(columns: columns, rows: rows, tag: "SHOW")
    }

    /// The totals of one pool in PgBouncer's units (bytes, microseconds).
    private func totals(_ pool: Pool) -> [UInt64] {
        let stats = pool.stats
        return [
            UInt64(stats.transactions), UInt64(stats.queries), UInt64(stats.bytesIn), UInt64(stats.bytesOut),
            stats.transactionTime.sumMicroseconds, stats.queryTime.sumMicroseconds, stats.waitTime.sumMicroseconds,
        ]
    }

    /// SHOW STATS, with `total_requests` (PgBouncer before 1.8; Debian's exporter reads it) as the query count.
    /// The averages are over the agent's life: counts and bytes per second, times per transaction or query.
    private func stats() -> Result {
        let uptime = max(1, self.runtime.startedAt.duration(to: .now).seconds)
        var rows: [[String?]] = []
        for pool in self.sortedPools {
            let totals = self.totals(pool)
            let stats = pool.stats
            func perSecond(_ value: UInt64) -> String { "\(UInt64((Double(value) / uptime).rounded()))" }
            func mean(_ histogram: LatencyHistogram) -> String { histogram.count == 0 ? "0" : "\(histogram.sumMicroseconds / histogram.count)" }
            rows.append([pool.name] + totals.map { "\($0)" } + [
                perSecond(totals[0]), perSecond(totals[1]), perSecond(totals[2]), perSecond(totals[3]),
                mean(stats.transactionTime), mean(stats.queryTime), mean(stats.waitTime), "\(totals[1])",
            ])
        }
        let columns = [("database", Self.text)] + [
            "total_xact_count", "total_query_count", "total_received", "total_sent", "total_xact_time", "total_query_time",
            "total_wait_time", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time",
            "avg_wait_time", "total_requests",
        ].map { ($0, Self.numeric) }
        return Result(columns: columns, rows: rows, tag: "SHOW")
    }

    private func statsTotals() -> Result {
        let columns = [("database", Self.text)]
            + ["xact_count", "query_count", "bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time"].map { ($0, Self.numeric) }
        return Result(columns: columns, rows: self.sortedPools.map { [$0.name] + self.totals($0).map { "\($0)" } }, tag: "SHOW")
    }

    static let connectionColumns: [(name: String, type: Int32)] = [
        ("type", text), ("user", text), ("database", text), ("state", text), ("addr", text), ("port", int4),
        ("local_addr", text), ("local_port", int4), ("connect_time", text), ("request_time", text), ("wait", int4),
        ("wait_us", int4), ("close_needed", int4), ("ptr", text), ("link", text), ("remote_pid", int4), ("tls", text),
        ("application_name", text),
    ]

    /// A monotonic moment as PgBouncer prints times: `2026-12-07 14:06:10 UTC`.
    private static func wallClock(_ moment: Moment, now: Moment) -> String {
        var seconds = time(nil) - time_t(moment.duration(to: now).seconds.rounded())
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var text = [CChar](repeating: 0, count: 32)
        let count = strftime(&text, text.count, "%Y-%m-%d %H:%M:%S UTC", &parts)
        return String(decoding: text.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func clients() -> Result {
        let now = Moment.now
        var rows: [[String?]] = []
        for client in self.runtime.clients.values.sorted(by: { $0.id < $1.id }) where client.state != .startup && client.state != .closed {
            let database = client.state == .admin ? Self.database : client.pool?.name ?? ""
            let state = client.state == .waiting ? "waiting" : client.server != nil || client.state == .admin ? "active" : "idle"
            let address = client.peerAddressText
            let waited = client.state == .waiting ? Int((client.lastActivity.duration(to: now).seconds * 1e6).rounded()) : 0
            rows.append([
                "C", client.user ?? "", database, state, address.host, "\(address.port)", nil, "0",
                Self.wallClock(client.connectedAt, now: now), Self.wallClock(client.lastActivity, now: now),
                "\(waited / 1_000_000)", "\(waited % 1_000_000)", "0", "client \(client.id)",
                client.server.map { "server \($0.id)" } ?? "", "0", client.tlsActive ? "TLS" : "",
                client.startupSettings.first { $0.0 == "application_name" }?.1 ?? "",
            ])
        }
        return Result(columns: Self.connectionColumns, rows: rows, tag: "SHOW")
    }

    private func servers() -> Result {
        let now = Moment.now
        var rows: [[String?]] = []
        for pool in self.sortedPools {
            let host = pool.upstreamHost
            for server in pool.servers.values.sorted(by: { $0.id < $1.id }) {
                let state = switch server.state {
                case .opening: "login"
                case .linked: "active"
                case .resetting: "used"
                case .idle, .closed: "idle"
                }
                rows.append([
                    "S", pool.upstreamUser, pool.name, state, host.host, host.port, nil, "0",
                    Self.wallClock(server.createdAt, now: now), Self.wallClock(server.lastUsedAt, now: now), "0", "0",
                    "0", "server \(server.id)", server.client.map { "client \($0.id)" } ?? "", "\(server.backendPID)",
                    server.link.cancelTLS != nil ? "TLS" : "", server.parameters["application_name"] ?? "",
                ])
            }
        }
        return Result(columns: Self.connectionColumns, rows: rows, tag: "SHOW")
    }

    private func databases() -> Result {
        let config = self.runtime.configuration
        var rows: [[String?]] = [[
            Self.database, nil, "\(config.listen.first?.port ?? config.unixSocketPort)", Self.database, Self.database,
            "2", "0", "0", "statement", "0", "0", "0", "0",
        ]]
        for pool in self.sortedPools {
            let host = pool.upstreamHost
            let configuration = pool.configuration
            rows.append([
                pool.name, host.host, host.port, pool.upstreamDatabase, pool.upstreamUser,
                "\(configuration.size)", "\(configuration.minIdle)", "\(configuration.maxOverflow)", pool.settings.mode.rawValue,
                "\(configuration.size + configuration.maxOverflow)", "\(pool.openCount)", pool.isDraining ? "1" : "0", "0",
            ])
        }
        let columns: [(name: String, type: Int32)] = [
            ("name", Self.text), ("host", Self.text), ("port", Self.int4), ("database", Self.text), ("force_user", Self.text),
            ("pool_size", Self.int4), ("min_pool_size", Self.int4), ("reserve_pool", Self.int4), ("pool_mode", Self.text),
            ("max_connections", Self.int4), ("current_connections", Self.int4), ("paused", Self.int4), ("disabled", Self.int4),
        ]
        return Result(columns: columns, rows: rows, tag: "SHOW")
    }

    private func lists() -> Result {
        var users = Set<String>()
        var loggedIn = 0
        var loggingIn = 0
        for client in self.runtime.clients.values {
            if client.state == .startup { loggingIn += 1 } else if client.state != .closed { loggedIn += 1 }
            if let user = client.user, client.state != .startup { users.insert(user) }
        }
        let pools = self.runtime.pools.values
        let counts: [(String, Int)] = [
            ("databases", pools.count + 1), ("users", users.count), ("pools", pools.count + 1), ("free_clients", 0),
            ("used_clients", loggedIn), ("login_clients", loggingIn), ("free_servers", 0),
            ("used_servers", pools.reduce(0) { $0 + $1.openCount }), ("dns_names", 0), ("dns_zones", 0), ("dns_queries", 0),
            ("dns_pending", 0),
        ]
        return Result(columns: [("list", Self.text), ("items", Self.int4)], rows: counts.map { [$0.0, "\($0.1)"] }, tag: "SHOW")
    }

    /// The agent's own keys with their values (`changeable`: applied by RELOAD); PgBouncer's names where the
    /// meaning is the same (max_client_conn, max_user_connections, listen_port, unix_socket_dir).
    private func config() -> Result {
        let config = self.runtime.configuration
        let rows: [(String, String, String, Bool)] = [
            ("admin_users", config.adminUsers.joined(separator: ","), "", true),
            ("control_socket", config.controlSocket, "/run/poolagent/poolagent.sock", false),
            ("listen_addr", config.listen.map(\.host).joined(separator: ","), "127.0.0.1", false),
            ("listen_port", "\(config.listen.first?.port ?? 0)", "6432", false),
            ("log_level", config.logLevel, "info", false),
            ("login_timeout", "\(Int(config.loginTimeout.seconds))", "60", false),
            ("max_client_conn", "\(config.maxClientConnections)", "10000", true),
            ("max_login_clients", "\(config.maxLoginClients)", "2000", true),
            ("max_user_connections", "\(config.maxUserConnections)", "0", true),
            ("shutdown_timeout", "\(Int(config.shutdownTimeout.seconds))", "30", false),
            ("stats_users", config.statsUsers.joined(separator: ","), "", true),
            ("unix_socket_dir", config.unixSocketDirectory ?? "", "", false),
        ]
        return Result(
            columns: ["key", "value", "default", "changeable"].map { ($0, Self.text) },
            rows: rows.map { [$0.0, $0.1, $0.2, $0.3 ? "yes" : "no"] },
            tag: "SHOW"
        )
    }
}

extension ByteBuffer {
    mutating func writeRowDescription(_ columns: [(name: String, type: Int32)]) {
        self.writeMessage(BackendMessageID.rowDescription) {
            $0.writeInteger(Int16(columns.count))
            for column in columns {
                $0.writeNullTerminatedString(column.name)
                $0.writeInteger(Int32(0))  // table
                $0.writeInteger(Int16(0))  // attribute
                $0.writeInteger(column.type)
                $0.writeInteger(Int16(column.type == AdminConsole.int4 ? 4 : -1))
                $0.writeInteger(Int32(-1))  // typmod
                $0.writeInteger(Int16(0))  // text
            }
        }
    }

    mutating func writeDataRow(_ values: [String?]) {
        self.writeMessage(BackendMessageID.dataRow) {
            $0.writeInteger(Int16(values.count))
            for value in values {
                guard let value else {
                    $0.writeInteger(Int32(-1))
                    continue
                }
                $0.writeInteger(Int32(value.utf8.count))
                $0.writeString(value)
            }
        }
    }

    mutating func writeCommandComplete(_ tag: String) {
        self.writeMessage(BackendMessageID.commandComplete) { $0.writeNullTerminatedString(tag) }
    }
}
