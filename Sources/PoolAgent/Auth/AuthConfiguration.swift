// Who may log in and how: methods, pg_hba-like rules, the auth file and TLS for clients.

#if canImport(Glibc)
import Glibc
#endif

public enum AuthMethod: String, Sendable, Equatable, CaseIterable {
    case trust
    case scramSHA256 = "scram-sha-256"
    case md5
    case peer
    case reject
}

/// How a client reached the agent, in pg_hba's words.
public enum ConnectionKind: String, Sendable, Equatable {
    /// The Unix socket.
    case local
    /// TCP with TLS.
    case hostssl
    /// TCP without TLS.
    case hostnossl
}

/// One `[[auth.rules]]` entry; nil fields match everything.
public struct AuthRule: Sendable, Equatable {
    /// "local", "host" (any TCP), "hostssl" or "hostnossl"; nil: any connection.
    public var connection: String?
    public var databases: [String]?
    public var users: [String]?
    public var address: AddressRange?
    public var method: AuthMethod

    func matches(kind: ConnectionKind, address: [UInt8]?, database: String, user: String) -> Bool {
        switch self.connection {
        case nil: break
        case "host"?: guard kind != .local else { return false }
        case let connection?: guard connection == kind.rawValue else { return false }
        }
        if let databases, !databases.contains(database) { return false }
        if let users, !users.contains(user) { return false }
        if let range = self.address {
            guard let address, range.contains(address) else { return false }
        }
        return true
    }
}

/// An address with a prefix length, as in pg_hba's ADDRESS column: `10.0.0.0/8`, `::1/128`, `192.168.1.7`.
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    public var network: [UInt8]
    public var prefixLength: Int
    public var description: String

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = Self.parseAddress(String(parts[0])) else { return nil }
        let bits = address.count * 8
        let prefix: Int
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...bits).contains(value) else { return nil }
            prefix = value
        } else {
            prefix = bits
        }
        self.network = address
        self.prefixLength = prefix
        self.description = text
    }

    /// 4 bytes for IPv4, 16 for IPv6; nil if `text` is neither.
    static func parseAddress(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    func contains(_ address: [UInt8]) -> Bool {
        var candidate = address
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        if self.network.count == 4, candidate.count == 16, candidate.prefix(12).elementsEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]) {
            candidate = Array(candidate.suffix(4))
        }
        guard candidate.count == self.network.count else { return false }
        var remaining = self.prefixLength
        for index in 0..<candidate.count where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if candidate[index] & mask != self.network[index] & mask { return false }
            remaining -= bits
        }
        return true
    }
}

public struct AuthSettings: Sendable, Equatable {
    /// The userlist-format auth file; nil: no file.
    public var file: String?
    /// The method for TCP clients no rule matched.
    public var tcp: AuthMethod = .scramSHA256
    /// The method for Unix-socket clients no rule matched.
    public var unix: AuthMethod = .peer
    public var rules: [AuthRule] = []
    /// The auth file as read when the configuration was loaded (at start and on each reload).
    var users = UserList()

    /// The method for this client and, when a rule chose it, the rule's number (1-based).
    func method(kind: ConnectionKind, address: [UInt8]?, database: String, user: String) -> (AuthMethod, rule: Int?) {
        for (index, rule) in self.rules.enumerated() where rule.matches(kind: kind, address: address, database: database, user: user) {
            return (rule.method, index + 1)
        }
        return (kind == .local ? self.unix : self.tcp, nil)
    }
}

public enum ClientTLSMode: String, Sendable, Equatable, CaseIterable {
    /// SSLRequest is answered `N`.
    case disable
    /// TLS when the client asks for it; plaintext is accepted too.
    case allow
    /// TCP clients must use TLS; plaintext ones are refused at startup.
    case require
}

public struct TLSSettings: Sendable, Equatable {
    public var certificateFile: String?
    public var keyFile: String?
    public var mode: ClientTLSMode = .disable
    /// The certificate and key as loaded with the configuration; nil without them.
    var context: ClientTLSContext?
}
