// auth_query: a pool's dedicated libpq connection that looks up passwords of users not in the auth file.

import CLibPQ
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// What auth_query said about one user.
enum AuthQueryOutcome: Sendable, Equatable {
    case secret(StoredSecret)
    /// No row: no such login role. The text says why, for the log.
    case refused(String)
    /// The lookup itself failed (connection, SQL error, result shape).
    case failed(String)
}

/// Runs the query on one connection of its own, opened on first use with the pool's upstream (or
/// `auth_upstream`) and no client's settings: `search_path` is `pg_catalog, pg_temp`, so an unqualified
/// name in the query cannot be captured by objects a client created.
///
/// Lookups run one at a time: the others wait in a queue on the event loop, not on worker threads, so a
/// login storm cannot take every worker thread from the pools' connects.
final class AuthQuery: @unchecked Sendable {  // `connection`: only with `lock` held, on worker threads; `queue`: on the event loop.
    let query: String
    private let parameters: [(String, String)]
    private let lock = NIOLock()
    private var connection: OpaquePointer?
    private var queue: [(user: String, stillWanted: () -> Bool, promise: EventLoopPromise<AuthQueryOutcome>)] = []
    private var running = false
    /// Lookups waiting beyond this are refused at once: a flood of logins cannot grow the queue without end.
    static let maximumQueued = 1000

    init(query: String, conninfo: String, poolName: String, connectTimeout: Duration) throws(UpstreamConninfoError) {
        self.query = query
        var parameters = try UpstreamConninfo(parsing: conninfo).connectParameters(
            poolName: poolName,
            // A lookup that hangs (a lock, a slow catalog) ends with an error after ten seconds instead of
            // holding the pool's logins.
            serverSettings: [("search_path", "pg_catalog, pg_temp"), ("statement_timeout", "10s")],
            connectTimeout: connectTimeout
        )
        // Its sends are small queries, so unlike a pool's servers it can take a TCP user timeout: a lookup whose
        // request the network swallowed ends in 10 s.
        if !parameters.contains(where: { $0.0 == "tcp_user_timeout" }) { parameters.append(("tcp_user_timeout", "10000")) }
        parameters.removeAll { $0.0 == "fallback_application_name" }
        parameters.append(("fallback_application_name", "poolagent auth_query"))
        self.parameters = parameters
    }

    deinit {
        if let connection { PQfinish(connection) }
    }

    /// Call on `eventLoop`; the outcome arrives there too.
    func lookup(
        user: String, threadPool: NIOThreadPool, eventLoop: any EventLoop, stillWanted: @escaping () -> Bool
    ) -> EventLoopFuture<AuthQueryOutcome> {
        guard self.queue.count < Self.maximumQueued else {
            return eventLoop.makeSucceededFuture(.failed("auth_query: \(Self.maximumQueued) lookups already waiting"))
        }
        let promise = eventLoop.makePromise(of: AuthQueryOutcome.self)
        self.queue.append((user, stillWanted, promise))
        self.runNext(threadPool: threadPool, eventLoop: eventLoop)
        return promise.futureResult
    }

    private func runNext(threadPool: NIOThreadPool, eventLoop: any EventLoop) {
        guard !self.running else { return }
        // Clients that went away (or timed out) while queued are not looked up.
        while let first = self.queue.first, !first.stillWanted() {
            self.queue.removeFirst()
            first.promise.succeed(.refused("the client left before its lookup ran"))
        }
        guard !self.queue.isEmpty else { return }
        let (user, _, promise) = self.queue.removeFirst()
        self.running = true
        threadPool.runIfActive(eventLoop: eventLoop) { self.lock.withLock { self.run(user: user) } }
            .whenComplete { result in
                self.running = false
                promise.completeWith(result)
                self.runNext(threadPool: threadPool, eventLoop: eventLoop)
            }
    }

    /// Blocking. A broken connection is reopened once, so a restarted upstream costs one retry, not an error.
    private func run(user: String) -> AuthQueryOutcome {
        for attempt in 0..<2 {
            if self.connection == nil {
                switch LibPQConnector.open(parameters: self.parameters) {
                case .success(let opened): self.connection = opened
                case .failure(let failure): return .failed("cannot connect for auth_query: \(failure.message)")
                }
            }
            guard let connection = self.connection else { continue }
            let result = user.withCString { name -> OpaquePointer? in
                var values: [UnsafePointer<CChar>?] = [name]
                return PQexecParams(connection, self.query, 1, nil, &values, nil, nil, 1)
            }
            defer { if let result { PQclear(result) } }
            guard let result, PQresultStatus(result) == PGRES_TUPLES_OK else {
                let message = String(cString: PQerrorMessage(connection)).trimmingWhitespace()
                if PQstatus(connection) != CONNECTION_OK {
                    PQfinish(connection)
                    self.connection = nil
                    if attempt == 0 { continue }
                }
                return .failed("auth_query failed: \(message.isEmpty ? "no result" : message)")
            }
            return Self.outcome(of: result)
        }
        return .failed("auth_query failed: the connection broke twice")
    }

    static let textTypes: Set<Oid> = [25, 1043, 19, 1042]  // text, varchar, name, bpchar
    static let timestampTypes: Set<Oid> = [1184, 1114]  // timestamptz, timestamp

    /// Reads the result: one row of (password), (password, valid until) or PgBouncer's (name, password[, valid until]).
    /// Binary format: text columns are their bytes, timestamps are microseconds since 2000-01-01 UTC.
    static func outcome(of result: OpaquePointer) -> AuthQueryOutcome {
        let rows = PQntuples(result)
        let columns = PQnfields(result)
        guard rows <= 1 else { return .failed("auth_query returned \(rows) rows for one user; it must return at most one") }
        guard columns >= 1 else { return .failed("auth_query returned no columns") }
        guard rows == 1 else { return .refused("no such user (auth_query found no row)") }
        var passwordColumn: Int32 = 0
        var validUntilColumn: Int32? = nil
        if columns >= 2 {
            if Self.timestampTypes.contains(PQftype(result, 1)) {
                validUntilColumn = 1
            } else {
                passwordColumn = 1
                if columns >= 3, Self.timestampTypes.contains(PQftype(result, 2)) { validUntilColumn = 2 }
            }
        }
        guard Self.textTypes.contains(PQftype(result, passwordColumn)) else {
            return .failed("auth_query: column \(passwordColumn + 1) must be the password as text")
        }
        if let column = validUntilColumn, PQgetisnull(result, 0, column) == 0 {
            guard PQgetlength(result, 0, column) == 8, let raw = PQgetvalue(result, 0, column) else {
                return .failed("auth_query: the valid-until column is not a timestamp")
            }
            var microseconds: Int64 = 0
            for index in 0..<8 { microseconds = microseconds << 8 | Int64(UInt8(bitPattern: raw[index])) }
            if microseconds != Int64.max {
                var now = timespec()
                clock_gettime(CLOCK_REALTIME, &now)
                let nowMicroseconds = (Int64(now.tv_sec) - 946_684_800) * 1_000_000 + Int64(now.tv_nsec / 1000)
                if microseconds < nowMicroseconds { return .refused("password expired (VALID UNTIL has passed)") }
            }
        }
        guard PQgetisnull(result, 0, passwordColumn) == 0, let raw = PQgetvalue(result, 0, passwordColumn) else {
            return .refused("user has no password")
        }
        let length = Int(PQgetlength(result, 0, passwordColumn))
        let text = String(decoding: UnsafeRawBufferPointer(start: raw, count: length), as: UTF8.self)
        switch StoredSecret.parse(text) {
        case nil: return .refused("user has no password")
        case .success(let secret)?: return .secret(secret)
        case .failure(let error)?: return .refused("the stored password is unusable: \(error)")
        }
    }
}
