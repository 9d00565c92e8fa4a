// A pool's upstream libpq conninfo: parsed by libpq itself, its values checked, and turned into connect parameters.

import CLibPQ
import CPoolIO

#if canImport(Glibc)
import Glibc
#endif

/// The libpq the agent runs with.
enum LibPQ {
    static let version = Int(PQlibVersion())

    /// The keyword/value pairs of a `PQconninfoOption` list (from `PQconninfoParse` or `PQconninfo`) that have
    /// a value, in libpq's order.
    static func settings(in list: UnsafeMutablePointer<PQconninfoOption>) -> [(String, String)] {
        var settings: [(String, String)] = []
        var option = list
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val { settings.append((String(cString: keyword), String(cString: value))) }
            option += 1
        }
        return settings
    }
}

struct UpstreamConninfo: Sendable, Equatable {
    /// Keyword/value pairs the conninfo sets, in libpq's order.
    private(set) var options: [(String, String)]

    static func == (lhs: UpstreamConninfo, rhs: UpstreamConninfo) -> Bool {
        lhs.options.elementsEqual(rhs.options) { $0 == $1 }
    }

    /// Parses with `PQconninfoParse`, so the agent accepts exactly what libpq accepts (URIs included).
    init(parsing conninfo: String) throws(UpstreamConninfoError) {
        var errorMessage: UnsafeMutablePointer<CChar>? = nil
        guard let parsed = PQconninfoParse(conninfo, &errorMessage) else {
            defer { if let errorMessage { PQfreemem(errorMessage) } }
            let text = errorMessage.map { String(cString: $0) } ?? "libpq could not parse it"
            throw .invalid(text.trimmingWhitespace())
        }
        defer { PQconninfoFree(parsed) }
        self.options = LibPQ.settings(in: parsed)
        try self.checkValues()
    }

    /// The values libpq checks only when it connects, checked now: a setting the agent cannot honour is
    /// refused with its key, never downgraded.
    private mutating func checkValues() throws(UpstreamConninfoError) {
        func oneOf(_ keyword: String, _ allowed: [String], caseless: Bool = false) throws(UpstreamConninfoError) {
            guard let value = self[keyword] else { return }
            let found = allowed.contains { caseless ? $0.lowercased() == value.lowercased() : $0 == value }
            if !found { throw .setting(keyword, "invalid value \"\(value)\"; expected \(allowed.joined(separator: ", "))") }
        }
        try oneOf("sslmode", Self.sslModes)
        try oneOf("channel_binding", ["disable", "prefer", "require"])
        try oneOf("sslsni", ["0", "1"])
        try oneOf("ssl_min_protocol_version", Self.protocolVersions, caseless: true)
        try oneOf("ssl_max_protocol_version", Self.protocolVersions, caseless: true)
        if let value = self["gssencmode"], value != "disable" {
            throw .setting("gssencmode", "the agent cannot carry on a GSSAPI-encrypted connection; use gssencmode=disable (TLS is supported)")
        }
        if self["replication"] != nil {
            throw .invalid("a replication connection cannot be pooled")
        }
        let mode = self.sslMode
        if self["channel_binding"] == "require", mode == "disable" {
            throw .setting("channel_binding", "require needs TLS, which sslmode=disable turns off")
        }
        if self["sslrootcert"] == "system", LibPQ.version < 160_000 {
            // libpq 16's meaning, for an older libpq: the machine's trusted roots, checked with the host name.
            guard mode == "verify-full" else {
                throw .setting("sslmode", "weak sslmode \"\(mode)\" may not be used with sslrootcert=system (use \"verify-full\")")
            }
            let roots = Self.systemRoots
            self.options = self.options.map { $0.0 == "sslrootcert" ? ($0.0, roots) : $0 }
            if self["sslmode"] == nil { self.options.append(("sslmode", "verify-full")) }
        }
    }

    static let sslModes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
    static let protocolVersions = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]

    /// The sslmode libpq will use: the conninfo's, `PGSSLMODE`, `requiressl=1`, or libpq's default `prefer`
    /// (`verify-full` with sslrootcert=system).
    var sslMode: String {
        if let mode = self["sslmode"] { return mode }
        if self["requiressl"] == "1" { return "require" }
        if let mode = Self.environment("PGSSLMODE"), Self.sslModes.contains(mode) { return mode }
        return self["sslrootcert"] == "system" ? "verify-full" : "prefer"
    }

    /// Checks the files the conninfo names as libpq will when it connects, so that what would fail there fails
    /// `--check`, the start and `reload` instead: a file that exists but cannot be read; a client certificate
    /// without its key; a verifying sslmode without roots. Like libpq, a missing client certificate or CRL
    /// and, unless sslmode verifies, a missing root file are not errors: libpq goes on without them.
    func checkFiles() throws(UpstreamConninfoError) {
        func readable(_ keyword: String, required: Bool) throws(UpstreamConninfoError) -> Bool {
            guard let path = self[keyword], !path.isEmpty else { return false }
            if access(path, F_OK) != 0, !required { return false }
            guard access(path, R_OK) == 0 else {
                throw .setting(keyword, "cannot read \"\(path)\": \(String(cString: strerror(errno)))")
            }
            return true
        }
        let mode = self.sslMode
        let verifies = mode == "verify-ca" || mode == "verify-full"
        if self["sslrootcert"] != "system" { _ = try readable("sslrootcert", required: verifies) }
        _ = try readable("sslcrl", required: false)
        _ = try readable("passfile", required: false)
        if try readable("sslcert", required: false), !(self["sslkey"]?.hasPrefix("engine:") ?? false) {
            // A certificate without its key is an error in libpq; the key's default is next to the certificate.
            if self["sslkey"] != nil {
                _ = try readable("sslkey", required: true)
            }
        }
        if let directory = self["sslcrldir"], !directory.isEmpty, access(directory, F_OK) == 0, access(directory, R_OK | X_OK) != 0 {
            throw .setting("sslcrldir", "cannot read \"\(directory)\": \(String(cString: strerror(errno)))")
        }
        // A service file may name the roots; libpq reads it only when it connects.
        let fromService = self["service"] != nil || Self.environment("PGSERVICE") != nil
        if verifies, self["sslrootcert"] == nil, !fromService {
            let path = Self.environment("PGSSLROOTCERT") ?? Self.environment("HOME").map { $0 + "/.postgresql/root.crt" }
            if path.map({ access($0, R_OK) }) != 0 {
                throw .setting(
                    "sslrootcert",
                    "sslmode=\(mode) verifies the server's certificate and needs the roots to verify it with: set sslrootcert to a file of CA certificates, or to system for the machine's trusted roots"
                )
            }
        }
    }

    /// The machine's trusted roots, where OpenSSL looks for them (`SSL_CERT_FILE` first).
    static var systemRoots: String {
        if let file = Self.environment("SSL_CERT_FILE") { return file }
        return String(cString: cpoolio_tls_default_roots())
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    subscript(keyword: String) -> String? {
        self.options.first { $0.0 == keyword }?.1
    }

    /// The parameters handed to `PQconnectdbParams`: the conninfo's own (TLS included: the loop carries on
    /// libpq's session), no GSSAPI encryption, `dbname` defaulting to the pool name, and the pool's
    /// server settings appended to `options` so they survive `DISCARD ALL`.
    func connectParameters(
        poolName: String,
        serverSettings: [(String, String)],
        connectTimeout: Duration
    ) -> [(String, String)] {
        var parameters = self.options.filter { !["gssencmode", "options"].contains($0.0) }
        parameters.append(("gssencmode", "disable"))
        if self["dbname"] == nil { parameters.append(("dbname", poolName)) }
        if self["connect_timeout"] == nil {
            parameters.append(("connect_timeout", String(max(1, Int(connectTimeout.seconds.rounded(.up))))))
        }
        if self["fallback_application_name"] == nil { parameters.append(("fallback_application_name", "poolagent")) }
        // A server behind a dead network is found out, not waited on for hours: keepalives probe an idle
        // connection (TCP only; the conninfo's own values win). No default tcp_user_timeout: it also ends a
        // live connection whose server keeps a zero window that long (a long statement behind pipelined input).
        for (keyword, value) in Self.liveness where self[keyword] == nil { parameters.append((keyword, value)) }
        var startupOptions = self["options"] ?? ""
        for (name, value) in serverSettings {
            if !startupOptions.isEmpty { startupOptions += " " }
            startupOptions += "-c " + Self.escapeOption("\(name)=\(value)")
        }
        if !startupOptions.isEmpty { parameters.append(("options", startupOptions)) }
        return parameters
    }

    static let liveness = [
        ("keepalives", "1"), ("keepalives_idle", "30"), ("keepalives_interval", "10"), ("keepalives_count", "3"),
    ]

    /// The conninfo with any password replaced, safe for logs and `config`.
    var redacted: String {
        self.options.map { keyword, value in
            "\(keyword)=\(keyword == "password" || keyword == "sslpassword" ? "********" : Self.quoteConninfo(value))"
        }.joined(separator: " ")
    }

    /// Backslash-escapes spaces and backslashes, as libpq's `options` splitting expects.
    static func escapeOption(_ text: String) -> String {
        var escaped = ""
        for character in text {
            if character == " " || character == "\\" { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }

    private static func quoteConninfo(_ value: String) -> String {
        guard value.isEmpty || value.contains(where: { $0 == " " || $0 == "'" || $0 == "\\" }) else { return value }
        return "'" + value.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'") + "'"
    }
}

enum UpstreamConninfoError: Error, Equatable {
    case invalid(String)
    /// A keyword the agent cannot honour, or whose value libpq would refuse.
    case setting(String, String)

    var description: String {
        switch self {
        case .invalid(let reason):
            "invalid libpq conninfo: \(reason)"
        case .setting(let keyword, let reason):
            "\(keyword): \(reason)"
        }
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
