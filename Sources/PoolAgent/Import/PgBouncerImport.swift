// `poolagent import-pgbouncer`: a PgBouncer configuration as the agent's TOML, with a report of every setting
// that could not be carried over and why.

#if canImport(Glibc)
import Glibc
#endif

/// Converts a pgbouncer.ini (with its includes, auth file and hba file) into the agent's configuration.
///
/// PgBouncer's defaults are written out where the agent's differ (pool size 20, max_client_conn 100, server
/// lifetime 1 h…), so the converted agent behaves as the PgBouncer did; what has no equivalent, or a
/// different meaning, is left out and reported, never guessed.
public struct PgBouncerImport {
    public struct Dropped: Sendable, Equatable, CustomStringConvertible {
        public var setting: String
        public var location: String
        public var reason: String
        public var description: String { "\(self.setting) (\(self.location)): \(self.reason)" }
    }

    public private(set) var dropped: [Dropped] = []
    public private(set) var notes: [String] = []
    /// The configuration file's text.
    public private(set) var toml = ""

    private let ini: PgBouncerIni
    private let workingDirectory: String
    private var users: UserList?
    private var usersPath: String?

    /// `userlist` replaces the ini's auth_file (read for the forced users' passwords and named in the output).
    public init(iniPath: String, userlist: String?, workingDirectory: String) throws(IniError) {
        self.workingDirectory = workingDirectory
        self.ini = try PgBouncerIni(path: iniPath, workingDirectory: workingDirectory) { try readFile($0) }
        self.notes = self.ini.notes
        if let path = userlist ?? self.ini.settings["auth_file"]?.value {
            let absolute = self.absolute(path)
            self.usersPath = absolute
            do {
                self.users = try UserList.parse(try readFile(absolute))
            } catch {
                throw IniError(location: self.ini.settings["auth_file"]?.location, reason: "auth_file \(absolute): \(error)")
            }
        }
        try self.convert(source: iniPath)
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : self.workingDirectory + "/" + path
    }

    private mutating func drop(_ setting: String, _ location: IniLocation?, _ reason: String) {
        self.dropped.append(Dropped(setting: setting, location: location?.description ?? "default", reason: reason))
    }

    // MARK: Values

    private func setting(_ key: String) -> PgBouncerIni.Entry? { self.ini.settings[key] }

    /// An integer as PgBouncer reads one (strtol base 0: 010 is 8, 0x10 is 16).
    private func integer(_ key: String, default value: Int) throws(IniError) -> Int {
        guard let entry = self.setting(key) else { return value }
        guard let number = Self.cInteger(entry.value) else {
            throw IniError(location: entry.location, reason: "\(key): expected an integer, found \"\(entry.value)\"")
        }
        return number
    }

    static func cInteger(_ text: String) -> Int? {
        var end: UnsafeMutablePointer<CChar>? = nil
        return text.withCString { start -> Int? in
            let value = strtol(start, &end, 0)
            guard let end, end != UnsafeMutablePointer(mutating: start), end.pointee == 0 else { return nil }
            return value
        }
    }

    /// Seconds as PgBouncer reads a time (a float, no units).
    private func seconds(_ key: String, default value: Double) throws(IniError) -> Double {
        guard let entry = self.setting(key) else { return value }
        guard let number = Double(entry.value.trimmingWhitespace()), number.isFinite, number >= 0 else {
            throw IniError(location: entry.location, reason: "\(key): expected a number of seconds, found \"\(entry.value)\"")
        }
        return number
    }

    private func text(_ key: String) -> String? { self.setting(key)?.value }

    /// A duration in the agent's words: `1h`, `10m`, `30s`, else milliseconds.
    static func duration(_ seconds: Double) -> String {
        // At least 1 ms, at most about 100 years: the range the agent reads.
        let milliseconds = Int(min(max((seconds * 1000).rounded(.up), 1), 3_153_600_000_000))
        if milliseconds % 3_600_000 == 0 { return "\(milliseconds / 3_600_000)h" }
        if milliseconds % 60_000 == 0 { return "\(milliseconds / 60_000)m" }
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000)s" }
        return "\(milliseconds)ms"
    }

    static func tomlString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func tomlKey(_ name: String) -> String {
        name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) ? name : Self.tomlString(name)
    }

    /// A libpq conninfo value, quoted when it must be (libpq escapes with a backslash, not PgBouncer's '').
    static func conninfoValue(_ value: String) -> String {
        guard value.isEmpty || value.contains(where: { $0 == " " || $0 == "'" || $0 == "\\" }) else { return value }
        return "'" + value.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'") + "'"
    }

    // MARK: Conversion

    /// Settings of [pgbouncer] the conversion reads; any other is reported with its reason.
    static let handled: Set<String> = [
        "listen_addr", "listen_port", "unix_socket_dir", "unix_socket_mode", "max_client_conn", "default_pool_size",
        "min_pool_size", "reserve_pool_size", "reserve_pool_timeout", "max_db_connections", "pool_mode", "server_reset_query",
        "server_check_delay", "server_lifetime", "server_idle_timeout", "server_connect_timeout", "query_timeout",
        "query_wait_timeout", "client_idle_timeout", "client_login_timeout", "idle_transaction_timeout",
        "max_prepared_statements", "auth_type", "auth_file", "auth_hba_file", "auth_query", "auth_user", "admin_users",
        "stats_users", "client_tls_sslmode", "client_tls_cert_file", "client_tls_key_file", "server_tls_sslmode",
        "server_tls_ca_file", "server_tls_cert_file", "server_tls_key_file", "verbose", "max_user_client_connections",
        "max_db_client_connections",
    ]

    /// Why the rest cannot be carried over.
    static let reasons: [String: String] = [
        "logfile": "the agent logs to stderr (the journal under systemd)",
        "pidfile": "the agent writes no pidfile; systemd follows it with Type=notify",
        "syslog": "the agent logs to stderr (the journal under systemd)",
        "syslog_ident": "the agent logs to stderr (the journal under systemd)",
        "syslog_facility": "the agent logs to stderr (the journal under systemd)",
        "user": "run the agent as that user (the unit's User=)",
        "unix_socket_group": "the agent does not change the socket's group",
        "ignore_startup_parameters": "not needed: the agent applies every startup parameter the server accepts",
        "track_extra_parameters": "the agent keeps a fixed set of parameters per client (IntervalStyle and search_path among them)",
        "max_user_connections": "caps server connections per user; the agent's max_user_connections caps clients per user, a different limit",
        "server_login_retry": "the agent pauses refills for 1 s after a failed connect; not configurable",
        "server_reset_query_always": "the agent never runs the reset query in transaction mode",
        "server_check_query": "the agent's pre-ping is always an empty query",
        "server_round_robin": "the order of idle servers is not configurable",
        "server_fast_close": "on reload the agent replaces servers as they are released",
        "listen_backlog": "the agent's backlog is fixed",
        "log_connections": "not configurable; `poolctl subscribe` and `list-clients` show connections",
        "log_disconnections": "not configurable; `poolctl list-clients` shows why clients closed",
        "log_pooler_errors": "not configurable",
        "log_stats": "not configurable; use `poolctl stats` or the Prometheus endpoint",
        "stats_period": "averages in SHOW STATS are over the agent's life",
        "client_tls_ca_file": "the agent does not verify client certificates",
        "client_tls_protocols": "the agent allows TLS 1.2 and 1.3 to clients",
        "client_tls_ciphers": "not configurable",
        "client_tls_ecdhcurve": "not configurable",
        "client_tls_dheparams": "not configurable",
        "server_tls_protocols": "set ssl_min_protocol_version in the upstreams if needed (libpq's default is TLS 1.2)",
        "server_tls_ciphers": "libpq has no cipher setting",
        "tcp_keepalive": "client sockets' keepalives are not configurable; servers get libpq keepalives (30/10/3)",
        "tcp_keepidle": "client sockets' keepalives are not configurable",
        "tcp_keepintvl": "client sockets' keepalives are not configurable",
        "tcp_keepcnt": "client sockets' keepalives are not configurable",
        "tcp_user_timeout": "not set on client sockets; put tcp_user_timeout in an upstream for servers",
        "so_reuseport": "one agent per socket",
        "peer_id": "the agent has no peers",
        "autodb_idle_timeout": "becomes the pool template's unused_timeout only with a * database",
        "dns_max_ttl": "libpq resolves names at each connect",
        "dns_nxdomain_ttl": "libpq resolves names at each connect",
        "dns_zone_check_period": "libpq resolves names at each connect",
        "pkt_buf": "the agent sizes its buffers itself",
        "sbuf_loopcnt": "the agent sizes its buffers itself",
        "max_packet_size": "the agent bounds messages itself",
        "disable_pqexec": "not configurable",
        "suspend_timeout": "the agent has no online restart",
        "application_name_add_host": "not supported",
        "conffile": "the agent's file is given with --config",
        "auth_ident_file": "no ident maps",
        "scram_iterations": "fixed at 4096 for verifiers derived from plaintext",
        "cancel_wait_timeout": "cancels run within the pool's connect_timeout",
        "transaction_timeout": "no pooler-side equivalent; on PostgreSQL 17 a server setting transaction_timeout comes close",
        "query_wait_notify": "not supported",
    ]

    private mutating func convert(source: String) throws(IniError) {
        var agent: [String] = []
        var auth: [String] = []
        var rules: [[String]] = []
        var tls: [String] = []
        var defaults: [String] = []

        for (key, entry) in self.ini.settings.sorted(by: { $0.key < $1.key }) where !Self.handled.contains(key) {
            self.drop("[pgbouncer] \(key) = \(entry.value)", entry.location, Self.reasons[key] ?? "no equivalent in the agent")
        }

        // Listening.
        let port = try self.integer("listen_port", default: 6432)
        var listen: [String] = []
        if let addresses = self.text("listen_addr") {
            for address in addresses.split(separator: ",").map({ String($0).trimmingWhitespace() }) where !address.isEmpty {
                switch address {
                case "*":
                    listen.append("*:\(port)")
                    self.drop("listen_addr *", self.setting("listen_addr")?.location, "the agent's * is every IPv4 address; add \"[::]:\(port)\" for IPv6")
                case "localhost": listen.append("127.0.0.1:\(port)")
                case _ where address.contains(":"): listen.append("[\(address)]:\(port)")
                default: listen.append("\(address):\(port)")
                }
            }
        }
        agent.append("listen = [\(listen.map(Self.tomlString).joined(separator: ", "))]" + (listen.isEmpty ? "          # PgBouncer had no listen_addr: no TCP" : ""))
        let socketDirectory = self.text("unix_socket_dir") ?? "/tmp"
        if socketDirectory.hasPrefix("@") {
            self.drop("unix_socket_dir = \(socketDirectory)", self.setting("unix_socket_dir")?.location, "abstract Unix sockets are not supported")
        } else if !socketDirectory.isEmpty {
            agent.append("unix_socket_dir = \(Self.tomlString(socketDirectory))")
            agent.append("unix_socket_port = \(port)")
        }
        if let mode = self.setting("unix_socket_mode"), Self.cInteger(mode.value) != 0o777 {
            self.drop("unix_socket_mode = \(mode.value)", mode.location, "the agent's Unix socket is always mode 0777; restrict its directory instead")
        }
        agent.append("max_client_conn = \(try self.integer("max_client_conn", default: 100))")
        if let entry = self.setting("max_user_client_connections") {
            agent.append("max_user_connections = \(try self.integer("max_user_client_connections", default: 0))")
            _ = entry
        }
        let loginTimeout = try self.seconds("client_login_timeout", default: 60)
        if loginTimeout > 0 {
            agent.append("login_timeout = \(Self.tomlString(Self.duration(loginTimeout)))")
        } else {
            self.drop("client_login_timeout = 0", self.setting("client_login_timeout")?.location, "the agent always has a login timeout; its default 60s applies")
        }
        switch try self.integer("verbose", default: 0) {
        case 0: break
        case 1: agent.append("log_level = \"debug\"")
        default: agent.append("log_level = \"trace\"")
        }
        for key in ["admin_users", "stats_users"] {
            guard let value = self.text(key) else { continue }
            let names = value.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
            if !names.isEmpty { agent.append("\(key) = [\(names.map(Self.tomlString).joined(separator: ", "))]") }
        }

        // Clients' authentication.
        let authType = (self.text("auth_type") ?? "md5").lowercased()
        let authLocation = self.setting("auth_type")?.location
        switch authType {
        case "md5", "scram-sha-256":
            auth += ["tcp = \(Self.tomlString(authType))", "unix = \(Self.tomlString(authType))"]
        case "trust", "any":
            auth += ["tcp = \"trust\"", "unix = \"trust\""]
            self.drop("auth_type = \(authType)", authLocation, "the agent's trust admits any user name, not only those in auth_file")
        case "hba":
            auth += ["tcp = \"reject\"", "unix = \"reject\""]
            if let hba = self.setting("auth_hba_file") {
                rules = try self.hbaRules(hba)
            } else {
                self.drop("auth_type = hba", authLocation, "no auth_hba_file: every client is rejected")
            }
        default:
            auth += ["tcp = \"scram-sha-256\"", "unix = \"scram-sha-256\""]
            self.drop("auth_type = \(authType)", authLocation, "the agent has trust, md5, scram-sha-256 and peer; scram-sha-256 written instead")
        }
        if let usersPath { auth.insert("file = \(Self.tomlString(usersPath))", at: 0) }

        // TLS to clients.
        let clientMode = (self.text("client_tls_sslmode") ?? "disable").lowercased()
        if let certificate = self.text("client_tls_cert_file"), let key = self.text("client_tls_key_file") {
            tls.append("cert_file = \(Self.tomlString(self.absolute(certificate)))")
            tls.append("key_file = \(Self.tomlString(self.absolute(key)))")
            switch clientMode {
            case "disable": tls.append("client_tls = \"disable\"")
            case "allow", "prefer": tls.append("client_tls = \"allow\"")
            case "require": tls.append("client_tls = \"require\"")
            default:
                tls.append("client_tls = \"require\"")
                self.drop("client_tls_sslmode = \(clientMode)", self.setting("client_tls_sslmode")?.location,
                          "the agent does not verify client certificates; require written instead")
            }
        } else if clientMode != "disable" {
            self.drop("client_tls_sslmode = \(clientMode)", self.setting("client_tls_sslmode")?.location, "no client_tls_cert_file and client_tls_key_file")
        }

        // Pools: [pgbouncer]'s pool settings become [defaults].
        let size = try self.integer("default_pool_size", default: 20)
        let minimum = try self.integer("min_pool_size", default: 0)
        var reserve = try self.integer("reserve_pool_size", default: 0)
        if reserve > 0, try self.seconds("reserve_pool_timeout", default: 5) == 0 {
            self.drop("reserve_pool_size = \(reserve)", self.setting("reserve_pool_timeout")?.location, "reserve_pool_timeout = 0: PgBouncer never used the reserve pool")
            reserve = 0
        } else if reserve > 0 {
            self.drop("reserve_pool_timeout", self.setting("reserve_pool_timeout")?.location, "the agent opens max_overflow servers as soon as clients queue")
        }
        let mode = try self.mode(self.text("pool_mode"), self.setting("pool_mode")?.location)
        defaults.append("mode = \(Self.tomlString(mode))")
        defaults.append("size = \(max(1, size))")
        if minimum > 0 {
            defaults.append("min_idle = \(min(minimum, max(1, size)))")
            self.drop("min_pool_size = \(minimum)", self.setting("min_pool_size")?.location, "becomes min_idle: servers kept idle ahead, not a floor on open servers")
        }
        if reserve > 0 { defaults.append("max_overflow = \(reserve)") }
        let waitTimeout = try self.seconds("query_wait_timeout", default: 120)
        defaults.append("wait_timeout = \(Self.tomlString(waitTimeout > 0 ? Self.duration(waitTimeout) : "3650d"))")
        if waitTimeout == 0 { self.drop("query_wait_timeout = 0", self.setting("query_wait_timeout")?.location, "the agent always has a wait timeout; 3650d written") }
        defaults.append("connect_timeout = \(Self.tomlString(Self.duration(max(1, try self.seconds("server_connect_timeout", default: 15)))))")
        let lifetime = try self.seconds("server_lifetime", default: 3600)
        if lifetime > 0 {
            defaults.append("max_lifetime = \(Self.tomlString(Self.duration(lifetime)))")
        } else {
            self.drop("server_lifetime = 0", self.setting("server_lifetime")?.location, "PgBouncer closed each server after one use; the agent keeps servers until a lifetime")
        }
        let idle = try self.seconds("server_idle_timeout", default: 600)
        if idle > 0 { defaults.append("idle_timeout = \(Self.tomlString(Self.duration(idle)))") }
        if let reset = self.text("server_reset_query") { defaults.append("reset_query = \(Self.tomlString(reset))") }
        defaults.append("pre_ping_after = \(Self.tomlString(Self.duration(try self.seconds("server_check_delay", default: 30))))")
        for (key, target) in [("query_timeout", "query_timeout"), ("client_idle_timeout", "client_idle_timeout"),
                              ("idle_transaction_timeout", "idle_in_transaction_timeout")] {
            let value = try self.seconds(key, default: 0)
            if value > 0 { defaults.append("\(target) = \(Self.tomlString(Self.duration(value)))") }
        }
        if self.setting("query_timeout") != nil {
            self.drop("query_timeout", self.setting("query_timeout")?.location, "carried over, but the agent cancels the query (57014) where PgBouncer closed the connection")
        }
        if let prepared = self.setting("max_prepared_statements") {
            defaults.append("max_prepared_statements = \(try self.integer("max_prepared_statements", default: 0))")
            _ = prepared
        }
        if self.setting("max_db_client_connections") != nil {
            defaults.append("max_clients = \(try self.integer("max_db_client_connections", default: 0))")
        }
        let authUser = self.text("auth_user")
        let authQuery = self.text("auth_query")
            ?? "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin"
        if authUser != nil { defaults.append("auth_query = \(Self.tomlString(authQuery))") }
        if self.setting("auth_query") != nil && authUser == nil {
            self.drop("auth_query", self.setting("auth_query")?.location, "PgBouncer runs it only with an auth_user; none is set")
        }

        let maxDatabaseConnections = try self.integer("max_db_connections", default: 0)
        var pools: [(String, [String])] = []
        for entry in self.ini.databases {
            if let pool = try self.pool(entry, defaultSize: size, defaultMinimum: minimum, reserve: reserve,
                                        maxDatabaseConnections: maxDatabaseConnections, authUser: authUser, socketDirectory: socketDirectory) {
                pools.append(pool)
            }
        }
        for entry in self.ini.users {
            let pairs = try PgBouncerIni.connectionString(entry.value, location: entry.location)
            for (key, value) in pairs {
                let reason = key == "pool_mode" ? "the mode is per pool in the agent" : "the agent has no per-user settings; they are per pool or per agent"
                self.drop("[users] \(entry.key) \(key)=\(value)", entry.location, reason)
            }
        }

        var lines = [
            "# Converted from \(source) by poolagent import-pgbouncer.",
            "# PgBouncer's defaults are written out where the agent's differ. Check: poolagent --check --config FILE",
            "",
            "[agent]",
        ] + agent + ["", "[auth]"] + auth
        for rule in rules { lines += ["", "[[auth.rules]]"] + rule }
        if !tls.isEmpty { lines += ["", "[tls]"] + tls }
        lines += ["", "[defaults]"] + defaults
        for (name, body) in pools { lines += ["", "[pools.\(Self.tomlKey(name))]"] + body }
        if !self.dropped.isEmpty {
            lines += ["", "# Not carried over:"] + self.dropped.map { "#   \($0)" }
        }
        self.toml = lines.joined(separator: "\n") + "\n"
    }

    private mutating func mode(_ text: String?, _ location: IniLocation?) throws(IniError) -> String {
        switch (text ?? "session").lowercased() {
        case "session": return "session"
        case "transaction": return "transaction"
        case "statement":
            self.drop("pool_mode = statement", location, "the agent has no statement mode; transaction written, which allows transactions of several statements")
            return "transaction"
        case let other: throw IniError(location: location, reason: "pool_mode: unknown mode \"\(other)\"")
        }
    }

    /// One [databases] entry as a pool (`*` as the pool template); nil when it cannot be one.
    private mutating func pool(
        _ entry: PgBouncerIni.Entry, defaultSize: Int, defaultMinimum: Int, reserve: Int, maxDatabaseConnections: Int,
        authUser globalAuthUser: String?, socketDirectory: String
    ) throws(IniError) -> (String, [String])? {
        let name = entry.key
        let label = "[databases] \(name)"
        if name == "pgbouncer" {
            self.drop(label, entry.location, "the name of the admin console (admin_users, stats_users)")
            return nil
        }
        var options: [String: String] = [:]
        for (key, value) in try PgBouncerIni.connectionString(entry.value, location: entry.location) { options[key.lowercased()] = value }
        let template = name == "*"
        var body: [String] = []
        var conninfo: [(String, String)] = []
        let host = options["host"] ?? socketDirectory
        let tcp = !host.hasPrefix("/") && !host.hasPrefix("@")
        conninfo.append(("host", host))
        if let port = options["port"] { conninfo.append(("port", port)) }
        if template {
            if options["dbname"] != nil { self.drop("\(label) dbname", entry.location, "the template connects to the database each client asks for") }
        } else {
            conninfo.append(("dbname", options["dbname"] ?? name))
        }
        if let user = options["user"] {
            conninfo.append(("user", user))
            if let password = options["password"] {
                conninfo.append(("password", password))
            } else if let secret = self.users?.secrets[user] {
                if case .plaintext(let password) = secret {
                    conninfo.append(("password", password))
                } else {
                    self.drop("\(label) password of \(user)", entry.location, "the auth file holds a hash; libpq needs the password itself: add password= or a .pgpass entry")
                }
            }
        } else {
            self.drop("\(label) without user=", entry.location,
                      "PgBouncer logged in as each client's user; the agent logs in as the upstream's user: add user= (the pool now logs in as the agent's OS user)")
        }
        if tcp {
            if let mode = self.text("server_tls_sslmode") { conninfo.append(("sslmode", mode.lowercased())) }
            for (key, keyword) in [("server_tls_ca_file", "sslrootcert"), ("server_tls_cert_file", "sslcert"), ("server_tls_key_file", "sslkey")] {
                if let path = self.text(key) { conninfo.append((keyword, self.absolute(path))) }
            }
        }
        body.append("upstream = \(Self.tomlString(conninfo.map { "\($0.0)=\(Self.conninfoValue($0.1))" }.joined(separator: " ")))")

        var size = defaultSize
        if let text = options["pool_size"], let value = Int(text), value >= 0 {
            size = value
        }
        let limit = options["max_db_connections"].flatMap { Int($0) } ?? maxDatabaseConnections
        var overflow = options["reserve_pool"].flatMap { Int($0) } ?? options["reserve_pool_size"].flatMap { Int($0) } ?? reserve
        if limit > 0 {
            size = min(size, limit)
            overflow = min(overflow, max(0, limit - size))
        }
        if size == 0 {
            self.drop("\(label) pool_size=0", entry.location, "the agent's pools have at least one server; 1 written")
            size = 1
        }
        if size != defaultSize { body.append("size = \(size)") }
        let minimum = options["min_pool_size"].flatMap { Int($0) } ?? defaultMinimum
        if minimum != defaultMinimum || minimum > size { body.append("min_idle = \(min(minimum, size))") }
        if overflow != reserve { body.append("max_overflow = \(overflow)") }
        if let text = options["pool_mode"] { body.append("mode = \(Self.tomlString(try self.mode(text, entry.location)))") }
        var serverSettings: [String] = []
        for (key, setting) in [("client_encoding", "client_encoding"), ("datestyle", "DateStyle"), ("timezone", "TimeZone"), ("application_name", "application_name")] {
            if let value = options[key] { serverSettings.append("\(setting) = \(Self.tomlString(value))") }
        }
        if !serverSettings.isEmpty { body.append("server_settings = { \(serverSettings.joined(separator: ", ")) }") }
        let authUser = options["auth_user"] ?? globalAuthUser
        if let authUser {
            var lookup = conninfo.filter { !["user", "password", "dbname"].contains($0.0) }
            lookup.append(("dbname", options["auth_dbname"] ?? (template ? "postgres" : options["dbname"] ?? name)))
            lookup.append(("user", authUser))
            switch self.users?.secrets[authUser] {
            case .plaintext(let password)?: lookup.append(("password", password))
            case .some: self.drop("\(label) password of auth_user \(authUser)", entry.location, "the auth file holds a hash; libpq needs the password itself: add it to auth_upstream or a .pgpass entry")
            case nil: break
            }
            if template && options["auth_dbname"] == nil {
                self.drop("\(label) auth_user lookups", entry.location, "PgBouncer ran them in each requested database; the template runs them in postgres")
            }
            if options["auth_user"] != nil && globalAuthUser == nil {
                body.append("auth_query = \(Self.tomlString(self.text("auth_query") ?? "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin"))")
            }
            body.append("auth_upstream = \(Self.tomlString(lookup.map { "\($0.0)=\(Self.conninfoValue($0.1))" }.joined(separator: " ")))")
        }
        let handled: Set<String> = [
            "host", "port", "dbname", "user", "password", "pool_size", "max_db_connections", "reserve_pool", "reserve_pool_size",
            "min_pool_size", "pool_mode", "client_encoding", "datestyle", "timezone", "application_name", "auth_user", "auth_dbname",
        ]
        for (key, value) in options.sorted(by: { $0.key < $1.key }) where !handled.contains(key) {
            let reason = key == "connect_query" ? "the agent runs no query on new servers; use server_settings for SET statements" : "no equivalent in the agent"
            self.drop("\(label) \(key)=\(key == "password" ? "…" : value)", entry.location, reason)
        }
        if template {
            let timeout = try self.seconds("autodb_idle_timeout", default: 3600)
            body.append("unused_timeout = \(Self.tomlString(Self.duration(max(1, timeout))))")
            self.dropped.removeAll { $0.setting.hasPrefix("[pgbouncer] autodb_idle_timeout") }
        }
        return (name, body)
    }

    /// auth_hba_file's lines as auth rules, in order; what a rule cannot say is reported and rejects.
    private mutating func hbaRules(_ setting: PgBouncerIni.Entry) throws(IniError) -> [[String]] {
        let path = self.absolute(setting.value)
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw IniError(location: setting.location, reason: "auth_hba_file \(path): \(error)")
        }
        var rules: [[String]] = []
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let location = IniLocation(file: path, line: index + 1)
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard fields.count >= 3 else { continue }
            var rule: [String] = []
            let connection = fields[0]
            guard ["local", "host", "hostssl", "hostnossl"].contains(connection) else {
                self.drop("hba \(fields.joined(separator: " "))", location, "unknown connection type \(connection)")
                continue
            }
            if connection != "host" { rule.append("connection = \(Self.tomlString(connection))") }
            let databases = fields[1].split(separator: ",").map(String.init)
            if databases.contains(where: { $0 == "sameuser" || $0 == "replication" || $0.hasPrefix("@") }) {
                if databases == ["replication"] {
                    self.drop("hba \(fields.joined(separator: " "))", location, "the agent refuses replication connections; the line is left out")
                    continue
                }
                self.drop("hba \(fields.joined(separator: " "))", location, "sameuser, replication and @file databases are not converted; the line becomes a reject of its connection type")
                rules.append([rule.first ?? "connection = \"host\"", "method = \"reject\""].filter { $0.hasPrefix("connection") || $0.hasPrefix("method") })
                continue
            }
            if databases != ["all"] { rule.append("database = [\(databases.map(Self.tomlString).joined(separator: ", "))]") }
            let users = fields[2].split(separator: ",").map(String.init)
            if users.contains(where: { $0.hasPrefix("@") || $0.hasPrefix("+") }) {
                self.drop("hba \(fields.joined(separator: " "))", location, "@file and +group users are not converted; the line becomes a reject of its databases")
                rules.append(rule + ["method = \"reject\""])
                continue
            }
            if users != ["all"] { rule.append("user = [\(users.map(Self.tomlString).joined(separator: ", "))]") }
            var rest = Array(fields.dropFirst(3))
            if connection != "local" {
                guard let address = rest.first else { continue }
                rest.removeFirst()
                if address != "all" {
                    if !address.contains("/"), let mask = rest.first, let prefix = Self.prefixLength(mask) {
                        rest.removeFirst()
                        rule.append("address = \(Self.tomlString("\(address)/\(prefix)"))")
                    } else {
                        guard AddressRange(address) != nil else {
                            self.drop("hba \(fields.joined(separator: " "))", location, "the address \(address) is not an IP address or CIDR range; the line is left out")
                            continue
                        }
                        rule.append("address = \(Self.tomlString(address))")
                    }
                }
            }
            guard let method = rest.first else { continue }
            var agentMethod = method
            switch method {
            case "trust", "reject", "md5", "scram-sha-256": break
            case "peer" where connection == "local": break
            default:
                agentMethod = "reject"
                self.drop("hba \(fields.joined(separator: " "))", location, "method \(method) is not the agent's; the rule rejects")
            }
            if rest.count > 1 { self.drop("hba options \(rest.dropFirst().joined(separator: " "))", location, "hba options are not supported") }
            rule.append("method = \(Self.tomlString(agentMethod))")
            rules.append(rule)
        }
        return rules
    }

    /// A dotted netmask's prefix length.
    static func prefixLength(_ mask: String) -> Int? {
        let parts = mask.split(separator: ".").compactMap { UInt8($0) }
        guard parts.count == 4 else { return nil }
        let bits = parts.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let ones = (~bits).leadingZeroBitCount
        return bits << ones == 0 ? ones : nil
    }
}
