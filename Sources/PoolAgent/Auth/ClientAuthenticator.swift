// The agent's side of client authentication: which method applies, where secrets come from, TLS context.

import Logging
import NIOCore
import NIOPosix

/// Lives on the agent's event loop with the runtime; rebuilt pieces are swapped in by `reload`.
final class ClientAuthenticator: @unchecked Sendable {  // Confined to the agent's event loop.
    /// Methods, rules and the auth file, as the configuration loader read them.
    private(set) var settings: AuthSettings
    private(set) var tls: TLSSettings
    /// SCRAM verifiers derived from plaintext secrets, by user, so each is derived once per secret.
    private var derived: [String: (plaintext: String, secret: ScramSecret)] = [:]
    private var authQueries: [String: AuthQuery] = [:]
    /// Salts for unknown users come from this key: stable per user, unknowable to clients.
    let mockKey: [UInt8]
    private let threadPool: NIOThreadPool
    private let eventLoop: any EventLoop

    var tlsMode: ClientTLSMode { self.tls.mode }
    var tlsContext: ClientTLSContext? { self.tls.context }

    struct LoadError: Error, CustomStringConvertible {
        var key: String
        var reason: String
        var description: String { "\(self.key): \(self.reason)" }
    }

    init(configuration: AgentConfiguration, eventLoop: any EventLoop, threadPool: NIOThreadPool) throws(LoadError) {
        self.eventLoop = eventLoop
        self.threadPool = threadPool
        var random = SystemRandomNumberGenerator()
        self.mockKey = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        self.settings = configuration.auth
        self.tls = configuration.tls
        self.authQueries = try Self.authQueries(configuration)
    }

    /// Takes the auth file and certificate of a freshly loaded configuration and rebuilds auth_query
    /// connections; on error nothing changes.
    func reload(_ configuration: AgentConfiguration) throws(LoadError) {
        let authQueries = try Self.authQueries(configuration)
        self.settings = configuration.auth
        self.tls = configuration.tls
        // A lookup in flight keeps its runner alive until it ends.
        self.authQueries = authQueries
    }

    private static func authQueries(_ configuration: AgentConfiguration) throws(LoadError) -> [String: AuthQuery] {
        var queries: [String: AuthQuery] = [:]
        // The template's lookups run on one connection for all the pools it makes (its auth_upstream).
        let template = configuration.template.map { [(PoolTemplate.name, $0.settings)] } ?? []
        for (name, pool) in Array(configuration.pools) + template {
            guard let query = pool.authQuery else { continue }
            do {
                queries[name] = try AuthQuery(
                    query: query, conninfo: pool.authUpstream ?? pool.upstream, poolName: name, connectTimeout: pool.connectTimeout
                )
            } catch {
                throw LoadError(key: name == PoolTemplate.name ? "pools.\"*\".auth_upstream" : "pools.\(name).auth_upstream", reason: error.description)
            }
        }
        return queries
    }

    func method(kind: ConnectionKind, address: [UInt8]?, database: String, user: String) -> (AuthMethod, rule: Int?) {
        self.settings.method(kind: kind, address: address, database: database, user: user)
    }

    /// The user's secret from the auth file, else from the pool's auth_query. `.refused` carries why there is none.
    /// `stillWanted` is asked before a queued lookup runs: one whose client has gone is skipped.
    func secret(for user: String, pool: String, stillWanted: @escaping () -> Bool) -> EventLoopFuture<AuthQueryOutcome> {
        if let secret = self.settings.users.secrets[user] { return self.eventLoop.makeSucceededFuture(.secret(secret)) }
        if self.settings.users.withoutPassword.contains(user) {
            return self.eventLoop.makeSucceededFuture(.refused("user has an empty password in the auth file"))
        }
        guard let query = self.authQueries[pool] else {
            return self.eventLoop.makeSucceededFuture(.refused("no such user in the auth file"))
        }
        return query.lookup(user: user, threadPool: self.threadPool, eventLoop: self.eventLoop, stillWanted: stillWanted)
    }

    /// A SCRAM verifier for `secret`: as stored, or derived once from a plaintext password. Nil for md5 hashes,
    /// which cannot answer SCRAM.
    func scramSecret(user: String, _ secret: StoredSecret) -> ScramSecret? {
        switch secret {
        case .scram(let scram):
            return scram
        case .md5:
            return nil
        case .plaintext(let password):
            if let cached = self.derived[user], cached.plaintext == password { return cached.secret }
            var random = SystemRandomNumberGenerator()
            let salt = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &random) }
            let scram = ScramSecret(password: password, salt: salt)
            self.derived[user] = (password, scram)
            return scram
        }
    }
}
