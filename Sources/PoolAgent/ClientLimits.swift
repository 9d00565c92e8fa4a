// The agent's client limits: max_client_conn, max_login_clients, a pool's max_clients and max_user_connections.

import PGWire

/// How many clients the agent holds, per stage, pool and user, and whether one more may come in.
///
/// A value fed by the runtime as sockets are accepted, logins complete and clients leave; it decides
/// without I/O, so every ordering is a unit test.
struct ClientLimits: Equatable {
    /// Which limit refused a client, with its value.
    enum Refusal: Equatable, CustomStringConvertible {
        case agent(limit: Int)
        case logins(limit: Int)
        case pool(name: String, limit: Int)
        case user(name: String, limit: Int)
        /// The descriptors left are kept for server connections.
        case descriptors(limit: Int)

        /// Every refusal's key, in the order `stats` and Prometheus list them.
        static let keys = ["max_client_conn", "max_login_clients", "max_clients", "max_user_connections", "descriptors"]

        /// The limit's configuration key, as `stats` counts refusals.
        var key: String {
            switch self {
            case .agent: return "max_client_conn"
            case .logins: return "max_login_clients"
            case .pool: return "max_clients"
            case .user: return "max_user_connections"
            case .descriptors: return "descriptors"
            }
        }

        var description: String {
            switch self {
            case .agent(let limit): return "max_client_conn (\(limit)) reached"
            case .logins(let limit): return "max_login_clients (\(limit)) clients are logging in"
            case .pool(let name, let limit): return "pool \"\(name)\" has max_clients (\(limit)) clients"
            case .user(let name, let limit): return "user \"\(name)\" has max_user_connections (\(limit)) clients"
            case .descriptors(let limit): return "the agent is out of file descriptors (\(limit) kept for server connections)"
            }
        }

        /// What the client is told: PostgreSQL's words for too many connections, and which limit it was.
        var error: ErrorResponse {
            .fatal("53300", "sorry, too many clients already", detail: self.description)
        }
    }

    /// The pool and user a logged-in client counts against.
    struct Admission: Equatable {
        var pool: String
        var user: String
    }

    var maxClientConnections: Int
    var maxLoginClients: Int
    var maxUserConnections: Int
    /// A client socket whose descriptor number reaches this is refused: the descriptors above it are kept
    /// for server connections (descriptor numbers are allocated lowest first, so the number tells how full
    /// the table is).
    var descriptorCeiling = Int32.max
    /// How many descriptors below the limit are kept for servers.
    var descriptorReserve = 0
    /// Client sockets open, logged in or not.
    private(set) var open = 0
    /// Of those, the ones not admitted to a pool yet.
    private(set) var loggingIn = 0
    private(set) var byPool: [String: Int] = [:]
    private(set) var byUser: [String: Int] = [:]
    /// Clients refused, by limit key.
    private(set) var refused: [String: Int] = [:]

    init(maxClientConnections: Int, maxLoginClients: Int, maxUserConnections: Int) {
        self.maxClientConnections = maxClientConnections
        self.maxLoginClients = maxLoginClients
        self.maxUserConnections = maxUserConnections
    }

    /// A socket was accepted as descriptor `fd`: nil lets it log in (and counts it); otherwise it is refused.
    mutating func accept(fd: Int32) -> Refusal? {
        if fd >= self.descriptorCeiling { return self.refuse(.descriptors(limit: self.descriptorReserve)) }
        if self.open >= self.maxClientConnections { return self.refuse(.agent(limit: self.maxClientConnections)) }
        if self.loggingIn >= self.maxLoginClients { return self.refuse(.logins(limit: self.maxLoginClients)) }
        self.open += 1
        self.loggingIn += 1
        return nil
    }

    /// A counted client proved who it is and asks to join `admission.pool` (limit `poolLimit`, 0: none).
    mutating func admit(_ admission: Admission, poolLimit: Int) -> Refusal? {
        if poolLimit > 0, self.byPool[admission.pool, default: 0] >= poolLimit {
            return self.refuse(.pool(name: admission.pool, limit: poolLimit))
        }
        if self.maxUserConnections > 0, self.byUser[admission.user, default: 0] >= self.maxUserConnections {
            return self.refuse(.user(name: admission.user, limit: self.maxUserConnections))
        }
        self.loggingIn -= 1
        self.byPool[admission.pool, default: 0] += 1
        self.byUser[admission.user, default: 0] += 1
        return nil
    }

    /// A counted client left; `admission` is where it was admitted, nil if it never was.
    mutating func left(_ admission: Admission?) {
        self.open -= 1
        guard let admission else {
            self.loggingIn -= 1
            return
        }
        Self.decrement(&self.byPool, admission.pool)
        Self.decrement(&self.byUser, admission.user)
    }

    /// Keeps `reserve` descriptors under `limit` for servers.
    mutating func reserveDescriptors(_ reserve: Int, limit: Int) {
        self.descriptorReserve = reserve
        self.descriptorCeiling = Int32(clamping: max(limit - reserve, 16))
    }

    /// Clients closed because descriptors ran out.
    mutating func noteShed(_ count: Int) {
        self.refused["descriptors", default: 0] += count
    }

    /// The clients of `pool`.
    func clients(of pool: String) -> Int { self.byPool[pool, default: 0] }

    /// The user with the most clients, for `stats` (how close max_user_connections is).
    var busiestUser: (name: String, clients: Int)? {
        self.byUser.max { ($0.value, $1.key) < ($1.value, $0.key) }.map { ($0.key, $0.value) }
    }

    private mutating func refuse(_ refusal: Refusal) -> Refusal {
        self.refused[refusal.key, default: 0] += 1
        return refusal
    }

    private static func decrement(_ counts: inout [String: Int], _ key: String) {
        let left = counts[key, default: 0] - 1
        counts[key] = left > 0 ? left : nil
    }
}
