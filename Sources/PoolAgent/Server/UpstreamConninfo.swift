// A pool's upstream libpq conninfo: parsed by libpq itself, checked for plaintext, and turned into connect parameters.

import CLibPQ

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
        var options: [(String, String)] = []
        var option = parsed
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val {
                options.append((String(cString: keyword), String(cString: value)))
            }
            option += 1
        }
        self.options = options
        for (keyword, value) in options {
            switch keyword {
            case "sslmode" where value != "disable":
                throw .asksForTLS("sslmode=\(value)")
            case "requiressl" where value == "1":
                throw .asksForTLS("requiressl=1")
            case "gssencmode" where value != "disable":
                throw .asksForTLS("gssencmode=\(value)")
            case "replication":
                throw .invalid("a replication connection cannot be pooled")
            default:
                break
            }
        }
    }

    subscript(keyword: String) -> String? {
        self.options.first { $0.0 == keyword }?.1
    }

    /// The parameters handed to `PQconnectdbParams`: the conninfo's own, forced plaintext (the socket is
    /// handed to the event loop after login), `dbname` defaulting to the pool name, and the pool's
    /// server settings appended to `options` so they survive `DISCARD ALL`.
    func connectParameters(
        poolName: String,
        serverSettings: [(String, String)],
        connectTimeout: Duration
    ) -> [(String, String)] {
        var parameters = self.options.filter { !["sslmode", "gssencmode", "options", "requiressl"].contains($0.0) }
        parameters.append(("sslmode", "disable"))
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
            "\(keyword)=\(keyword == "password" ? "********" : Self.quoteConninfo(value))"
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
    case asksForTLS(String)

    var description: String {
        switch self {
        case .invalid(let reason):
            "invalid libpq conninfo: \(reason)"
        case .asksForTLS(let setting):
            "the upstream asks for TLS (\(setting)); the agent forwards server connections as plaintext, use sslmode=disable"
        }
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
