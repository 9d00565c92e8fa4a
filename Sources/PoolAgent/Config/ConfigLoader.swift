// Reads the TOML file and validates every key, refusing unknown keys, wrong types and impossible values.

#if canImport(Glibc)
import Glibc
#endif

public enum ConfigLoader {
    static let agentKeys: Set<String> = [
        "listen", "unix_socket_dir", "unix_socket_port", "control_socket", "control_socket_mode",
        "login_timeout", "shutdown_timeout", "log_level", "control_allowed_uids", "metrics_listen", "io_uring",
        "max_client_conn", "max_login_clients", "max_user_connections", "admin_users", "stats_users", "log_format",
    ]
    static let poolKeys: Set<String> = [
        "upstream", "mode", "size", "min_idle", "max_overflow", "wait_timeout", "connect_timeout",
        "reset_query", "server_settings", "max_prepared_statements", "max_lifetime", "idle_timeout",
        "pre_ping_after", "query_timeout", "idle_in_transaction_timeout", "client_idle_timeout",
        "autoscale", "recycle", "auth_query", "auth_upstream", "statement_budget", "max_client_statements",
        "max_clients", "listener", "pin", "max_pinned", "pin_timeout", "notification_queue",
    ]
    static let authKeys = ["file", "rules", "tcp", "unix"]
    static let ruleKeys = ["address", "connection", "database", "method", "user"]
    static let tlsKeys = ["cert_file", "client_tls", "key_file"]
    static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Reads and validates `path`.
    public static func load(path: String) throws(ConfigError) -> AgentConfiguration {
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw ConfigError(file: path, key: "", reason: "cannot read the file: \(error)")
        }
        return try self.parse(text, file: path)
    }

    /// Validates TOML text; `file` is used in error messages.
    public static func parse(_ text: String, file: String) throws(ConfigError) -> AgentConfiguration {
        let root = try ConfigValue.parse(toml: text, file: file)
        var reader = Reader(file: file)
        return try reader.read(root)
    }

    struct Reader {
        let file: String

        func error(_ key: String, _ reason: String) -> ConfigError {
            ConfigError(file: self.file, key: key, reason: reason)
        }

        mutating func read(_ root: [(String, ConfigValue)]) throws(ConfigError) -> AgentConfiguration {
            var agent: [(String, ConfigValue)] = []
            var defaults: [(String, ConfigValue)] = []
            var poolTables: [(String, ConfigValue)] = []
            var authTable: [(String, ConfigValue)] = []
            var tlsTable: [(String, ConfigValue)] = []
            for (key, value) in root {
                switch key {
                case "agent": agent = try self.table(value, key)
                case "defaults": defaults = try self.table(value, key)
                case "pools": poolTables = try self.table(value, key)
                case "auth": authTable = try self.table(value, key)
                case "tls": tlsTable = try self.table(value, key)
                default: throw self.error(key, "unknown section; expected agent, auth, tls, defaults or pools")
                }
            }
            try self.rejectUnknown(agent, allowed: Self.agentKeysSorted, in: "agent")
            try self.rejectUnknown(defaults, allowed: Self.poolKeysSorted.filter { $0 != "upstream" }, in: "defaults")

            var listen: [AgentConfiguration.Listen] = []
            switch self.lookup(agent, "listen") {
            case nil: listen = [.init(host: "127.0.0.1", port: 6432)]
            case .string(let text)?: listen = [try self.listenAddress(text, "agent.listen")]
            case .array(let items)?:
                for (index, item) in items.enumerated() {
                    guard case .string(let text) = item else {
                        throw self.error("agent.listen[\(index)]", "expected a string such as \"127.0.0.1:6432\", found \(item.typeName)")
                    }
                    listen.append(try self.listenAddress(text, "agent.listen[\(index)]"))
                }
            case let other?: throw self.error("agent.listen", "expected an array of \"host:port\" strings, found \(other.typeName)")
            }
            let unixDirectory = try self.optionalString(agent, "unix_socket_dir", "agent")
            let unixPort = try self.optionalInteger(agent, "unix_socket_port", "agent", range: 1...65535)
                ?? listen.first?.port ?? 6432
            if listen.isEmpty && unixDirectory == nil {
                throw self.error("agent.listen", "no TCP listener and no unix_socket_dir: clients could not connect")
            }
            if let unixDirectory, unixDirectory.utf8.count + 20 > 107 {
                throw self.error("agent.unix_socket_dir", "path too long for a Unix socket name")
            }
            let controlSocket = try self.optionalString(agent, "control_socket", "agent") ?? "/run/poolagent/poolagent.sock"
            if controlSocket.utf8.count > 107 || controlSocket.isEmpty {
                throw self.error("agent.control_socket", "must be a non-empty path of at most 107 bytes")
            }
            let controlMode = try self.fileMode(agent, "control_socket_mode") ?? 0o600
            var allowedUIDs = getuid() == 0 ? [0] : [Int(getuid()), 0]
            if let value = self.lookup(agent, "control_allowed_uids") {
                guard case .array(let items) = value, !items.isEmpty else {
                    throw self.error("agent.control_allowed_uids", "expected a non-empty array of uids")
                }
                allowedUIDs = []
                for (index, item) in items.enumerated() {
                    guard case .integer(let uid) = item, uid >= 0, uid <= Int(UInt32.max) else {
                        throw self.error("agent.control_allowed_uids[\(index)]", "expected a uid (a non-negative integer)")
                    }
                    allowedUIDs.append(uid)
                }
            }
            let metricsListen = try self.optionalString(agent, "metrics_listen", "agent").map { text throws(ConfigError) in
                try self.listenAddress(text, "agent.metrics_listen")
            }
            let loginTimeout = try self.duration(agent, "login_timeout", "agent", positive: true) ?? .seconds(60)
            let shutdownTimeout = try self.duration(agent, "shutdown_timeout", "agent", positive: false) ?? .seconds(30)
            let ioUring = try self.optionalBoolean(agent, "io_uring", "agent") ?? true
            let maxClientConnections = try self.optionalInteger(agent, "max_client_conn", "agent", range: 1...1_000_000) ?? 10_000
            let maxLoginClients = try self.optionalInteger(agent, "max_login_clients", "agent", range: 1...1_000_000) ?? 2_000
            let maxUserConnections = try self.optionalInteger(agent, "max_user_connections", "agent", range: 0...1_000_000) ?? 0
            let logLevel = try self.optionalString(agent, "log_level", "agent") ?? "info"
            guard ConfigLoader.logLevels.contains(logLevel) else {
                throw self.error("agent.log_level", "unknown level \"\(logLevel)\"; expected one of \(ConfigLoader.logLevels.joined(separator: ", "))")
            }

            let logFormatText = try self.optionalString(agent, "log_format", "agent") ?? "logfmt"
            guard let logFormat = AgentLogHandler.Format(rawValue: logFormatText) else {
                throw self.error("agent.log_format", "unknown format \"\(logFormatText)\"; expected logfmt or json")
            }
            let adminUsers = try self.names(agent, "admin_users", "agent") ?? []
            let statsUsers = try self.names(agent, "stats_users", "agent") ?? []
            let auth = try self.auth(authTable)
            let tls = try self.tls(tlsTable)

            var pools: [String: PoolSettings] = [:]
            var template: PoolTemplate? = nil
            for (name, value) in poolTables {
                let keyPath = "pools.\(name)"
                if name == PoolTemplate.name {
                    template = try self.template(try self.table(value, "pools.\"*\""), defaults: defaults)
                    continue
                }
                guard !name.isEmpty, name.utf8.count < 64 else {
                    throw self.error(keyPath, "a pool name must be a database name of 1 to 63 bytes")
                }
                let table = try self.table(value, keyPath)
                try self.rejectUnknown(table, allowed: Self.poolKeysSorted, in: keyPath)
                pools[name] = try self.pool(name: name, table: table, defaults: defaults)
            }
            if !adminUsers.isEmpty || !statsUsers.isEmpty, pools[AdminConsole.database] != nil {
                throw self.error("pools.\(AdminConsole.database)", "the admin console (admin_users, stats_users) is the database \"\(AdminConsole.database)\"; name the pool otherwise")
            }
            if pools.isEmpty && template == nil {
                throw self.error("pools", "no pool is configured; add a [pools.<database>] table with an upstream, or a [pools.\"*\"] template")
            }
            return AgentConfiguration(
                path: self.file,
                listen: listen,
                unixSocketDirectory: unixDirectory,
                unixSocketPort: unixPort,
                controlSocket: controlSocket,
                controlSocketMode: controlMode,
                metricsListen: metricsListen,
                controlAllowedUIDs: allowedUIDs,
                loginTimeout: loginTimeout,
                shutdownTimeout: shutdownTimeout,
                ioUring: ioUring,
                maxClientConnections: maxClientConnections,
                maxLoginClients: maxLoginClients,
                maxUserConnections: maxUserConnections,
                adminUsers: adminUsers,
                statsUsers: statsUsers,
                logLevel: logLevel,
                logFormat: logFormat,
                auth: auth,
                tls: tls,
                pools: pools,
                template: template
            )
        }

        static let templateKeysSorted = (ConfigLoader.poolKeys.union(["max_pools", "unused_timeout"])).sorted()

        /// `[pools."*"]`: the settings of the pools made on first use for databases no pool is configured for.
        func template(_ table: [(String, ConfigValue)], defaults: [(String, ConfigValue)]) throws(ConfigError) -> PoolTemplate {
            let keyPath = "pools.\"*\""
            try self.rejectUnknown(table, allowed: Self.templateKeysSorted, in: keyPath)
            let poolTable = table.filter { $0.0 != "max_pools" && $0.0 != "unused_timeout" }
            let settings = try self.pool(name: PoolTemplate.name, table: poolTable, defaults: defaults, keyPath: keyPath)
            if let conninfo = try? UpstreamConninfo(parsing: settings.upstream), conninfo["dbname"] != nil {
                throw self.error("\(keyPath).upstream", "a template's upstream must not set dbname: each pool it makes connects to the database its clients ask for")
            }
            if settings.authQuery != nil && settings.authUpstream == nil {
                throw self.error("\(keyPath).auth_upstream", "required with auth_query in a template: the conninfo (with dbname) of the database the lookups run in")
            }
            let maxPools = try self.optionalInteger(table, "max_pools", keyPath, range: 1...10_000) ?? 100
            let unusedTimeout = try self.duration(table, "unused_timeout", keyPath, positive: true) ?? .seconds(3600)
            return PoolTemplate(settings: settings, maxPools: maxPools, unusedTimeout: unusedTimeout)
        }

        static let agentKeysSorted = ConfigLoader.agentKeys.sorted()
        static let poolKeysSorted = ConfigLoader.poolKeys.sorted()

        func pool(
            name: String, table: [(String, ConfigValue)], defaults: [(String, ConfigValue)], keyPath: String? = nil
        ) throws(ConfigError) -> PoolSettings {
            let keyPath = keyPath ?? "pools.\(name)"
            // A key set on the pool wins; otherwise [defaults]; errors name where the value came from.
            func source(_ key: String) -> (value: ConfigValue, section: String)? {
                if let value = self.lookup(table, key) { return (value, keyPath) }
                if let value = self.lookup(defaults, key) { return (value, "defaults") }
                return nil
            }
            func merged(_ key: String) -> ([(String, ConfigValue)], String) {
                if let found = source(key) { return ([(key, found.value)], found.section) }
                return ([], keyPath)
            }

            guard let upstreamValue = self.lookup(table, "upstream") else {
                throw self.error("\(keyPath).upstream", "missing; set a libpq conninfo such as \"host=/var/run/postgresql dbname=\(name)\"")
            }
            guard case .string(let upstream) = upstreamValue else {
                throw self.error("\(keyPath).upstream", "expected a string, found \(upstreamValue.typeName)")
            }
            do {
                try UpstreamConninfo(parsing: upstream).checkFiles()
            } catch {
                throw self.error("\(keyPath).upstream", error.description)
            }

            var (values, section) = merged("mode")
            let modeText = try self.optionalString(values, "mode", section) ?? "session"
            guard let mode = PoolMode(rawValue: modeText) else {
                throw self.error("\(section).mode", "unknown mode \"\(modeText)\"; expected \"session\" or \"transaction\"")
            }
            (values, section) = merged("size")
            var sizeIsAuto = false
            if case .string(let text)? = self.lookup(values, "size") {
                guard text == "auto" else {
                    throw self.error("\(section).size", "expected a whole number of connections or \"auto\", found \"\(text)\"")
                }
                sizeIsAuto = true
                values = []
            }
            let size = sizeIsAuto ? AutoSize.machineSize().size : try self.optionalInteger(values, "size", section, range: 1...10_000) ?? 10
            (values, section) = merged("min_idle")
            let minIdle = try self.optionalInteger(values, "min_idle", section, range: 0...10_000) ?? 0
            if minIdle > size {
                throw self.error("\(section).min_idle", "\(minIdle) is larger than the pool size \(size)")
            }
            (values, section) = merged("max_overflow")
            let maxOverflow = try self.optionalInteger(values, "max_overflow", section, range: 0...10_000) ?? 0
            (values, section) = merged("wait_timeout")
            let waitTimeout = try self.duration(values, "wait_timeout", section, positive: true) ?? .seconds(30)
            (values, section) = merged("connect_timeout")
            let connectTimeout = try self.duration(values, "connect_timeout", section, positive: true) ?? .seconds(10)
            (values, section) = merged("reset_query")
            let resetQuery = try self.optionalString(values, "reset_query", section) ?? "DISCARD ALL"
            if resetQuery.contains("\0") {
                throw self.error("\(section).reset_query", "must not contain a NUL character")
            }
            (values, section) = merged("max_prepared_statements")
            let maxPrepared = try self.optionalInteger(values, "max_prepared_statements", section, range: 0...100_000) ?? 200
            (values, section) = merged("statement_budget")
            let statementBudget = try self.byteSize(values, "statement_budget", section, range: (1 << 20)...(1 << 40)) ?? 64 << 20
            (values, section) = merged("max_client_statements")
            let maxClientStatements = try self.optionalInteger(values, "max_client_statements", section, range: 1...1_000_000) ?? 10_000
            (values, section) = merged("max_clients")
            let maxClients = try self.optionalInteger(values, "max_clients", section, range: 0...1_000_000) ?? 0
            (values, section) = merged("listener")
            let listener = try self.optionalBoolean(values, "listener", section) ?? true
            (values, section) = merged("pin")
            let pinText = try self.optionalString(values, "pin", section) ?? "allow"
            guard let pin = PinPolicy(rawValue: pinText) else {
                throw self.error("\(section).pin", "expected \"allow\", \"refuse\" or \"close\", found \"\(pinText)\"")
            }
            (values, section) = merged("max_pinned")
            let maxPinned = try self.optionalInteger(values, "max_pinned", section, range: 0...10_000)
            (values, section) = merged("pin_timeout")
            let pinTimeout = try self.duration(values, "pin_timeout", section, positive: true)
            (values, section) = merged("notification_queue")
            let notificationQueue = try self.optionalInteger(values, "notification_queue", section, range: 1...1_000_000) ?? 1000
            (values, section) = merged("max_lifetime")
            let maxLifetime = try self.duration(values, "max_lifetime", section, positive: true)
            (values, section) = merged("idle_timeout")
            let idleTimeout = try self.duration(values, "idle_timeout", section, positive: true)
            (values, section) = merged("pre_ping_after")
            let prePingAfter = values.isEmpty ? .seconds(30) : try self.duration(values, "pre_ping_after", section, positive: false)
            (values, section) = merged("query_timeout")
            let queryTimeout = try self.duration(values, "query_timeout", section, positive: true)
            (values, section) = merged("idle_in_transaction_timeout")
            let idleInTransaction = try self.duration(values, "idle_in_transaction_timeout", section, positive: true)
            (values, section) = merged("client_idle_timeout")
            let clientIdle = try self.duration(values, "client_idle_timeout", section, positive: true)
            (values, section) = merged("recycle")
            let recycle = try self.optionalString(values, "recycle", section) ?? "fixed"
            guard recycle == "fixed" || recycle == "adaptive" else {
                throw self.error("\(section).recycle", "expected \"fixed\" or \"adaptive\", found \"\(recycle)\"")
            }
            (values, section) = merged("autoscale")
            var autoscale: AutoscaleSettings? = nil
            if let value = self.lookup(values, "autoscale") {
                let key = "\(section).autoscale"
                let table: [(String, ConfigValue)]
                switch value {
                case .boolean(let on): table = on ? [] : [("enabled", .boolean(false))]
                default: table = try self.table(value, key)
                }
                try self.rejectUnknown(table, allowed: ["enabled", "interval", "max", "min"], in: key)
                let enabled = try self.optionalBoolean(table, "enabled", key) ?? true
                if enabled {
                    let interval = try self.duration(table, "interval", key, positive: true) ?? .seconds(300)
                    guard interval >= .seconds(1) else { throw self.error("\(key).interval", "must be at least 1s") }
                    let minimum = try self.optionalInteger(table, "min", key, range: 1...10_000) ?? max(1, minIdle)
                    let maximum = try self.optionalInteger(table, "max", key, range: 1...10_000) ?? max(size, min(size * 2, 10_000))
                    guard minimum <= maximum else { throw self.error("\(key).min", "\(minimum) is larger than max \(maximum)") }
                    autoscale = AutoscaleSettings(interval: interval, minimum: minimum, maximum: maximum)
                }
            }
            (values, section) = merged("server_settings")
            var serverSettings: [(String, String)] = []
            if let value = self.lookup(values, "server_settings") {
                for (setting, settingValue) in try self.table(value, "\(section).server_settings") {
                    let settingKey = "\(section).server_settings.\(setting)"
                    guard Self.isSettingName(setting) else {
                        throw self.error(settingKey, "not a valid PostgreSQL setting name")
                    }
                    switch settingValue {
                    case .string(let text) where !text.contains("\0"): serverSettings.append((setting, text))
                    case .integer(let number): serverSettings.append((setting, String(number)))
                    case .float(let number): serverSettings.append((setting, String(number)))
                    case .boolean(let flag): serverSettings.append((setting, flag ? "on" : "off"))
                    default: throw self.error(settingKey, "expected a string, number or boolean, found \(settingValue.typeName)")
                    }
                }
            }
            (values, section) = merged("auth_query")
            let authQuery = try self.optionalString(values, "auth_query", section)
            if let authQuery {
                guard !authQuery.contains("\0"), authQuery.contains("$1") else {
                    throw self.error("\(section).auth_query", "must be one SQL query that takes the user name as $1")
                }
            }
            (values, section) = merged("auth_upstream")
            let authUpstream = try self.optionalString(values, "auth_upstream", section)
            if let authUpstream {
                do {
                    try UpstreamConninfo(parsing: authUpstream).checkFiles()
                } catch {
                    throw self.error("\(section).auth_upstream", error.description)
                }
            }
            return PoolSettings(
                name: name,
                upstream: upstream,
                mode: mode,
                size: size,
                sizeIsAuto: sizeIsAuto,
                autoscale: autoscale,
                adaptiveRecycle: recycle == "adaptive",
                minIdle: minIdle,
                maxOverflow: maxOverflow,
                waitTimeout: waitTimeout,
                connectTimeout: connectTimeout,
                resetQuery: resetQuery,
                maxPreparedStatements: maxPrepared,
                statementBudget: statementBudget,
                maxClientStatements: maxClientStatements,
                maxClients: maxClients,
                listener: listener,
                pin: pin,
                maxPinned: maxPinned,
                pinTimeout: pinTimeout,
                notificationQueue: notificationQueue,
                maxLifetime: maxLifetime,
                idleTimeout: idleTimeout,
                prePingAfter: prePingAfter,
                queryTimeout: queryTimeout,
                idleInTransactionTimeout: idleInTransaction,
                clientIdleTimeout: clientIdle,
                serverSettings: serverSettings,
                authQuery: authQuery,
                authUpstream: authUpstream
            )
        }

        func auth(_ table: [(String, ConfigValue)]) throws(ConfigError) -> AuthSettings {
            try self.rejectUnknown(table, allowed: ConfigLoader.authKeys, in: "auth")
            var settings = AuthSettings()
            settings.file = try self.optionalString(table, "file", "auth")
            if let file = settings.file {
                do {
                    settings.users = try UserList.parse(try readFile(file))
                } catch let error as UserList.LineError {
                    throw self.error("auth.file", "\(file) \(error)")
                } catch {
                    throw self.error("auth.file", "cannot read \(file): \(error)")
                }
            }
            settings.tcp = try self.method(table, "tcp", "auth") ?? .scramSHA256
            settings.unix = try self.method(table, "unix", "auth") ?? .peer
            if settings.tcp == .peer {
                throw self.error("auth.tcp", "peer authentication works only on the Unix socket")
            }
            guard let rules = self.lookup(table, "rules") else { return settings }
            guard case .array(let items) = rules else {
                throw self.error("auth.rules", "expected an array of tables ([[auth.rules]]), found \(rules.typeName)")
            }
            for (index, item) in items.enumerated() {
                let key = "auth.rules[\(index)]"
                let rule = try self.table(item, key)
                try self.rejectUnknown(rule, allowed: ConfigLoader.ruleKeys, in: key)
                guard let method = try self.method(rule, "method", key) else {
                    throw self.error("\(key).method", "missing; expected one of \(AuthMethod.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                let connection = try self.optionalString(rule, "connection", key)
                if let connection, !["local", "host", "hostssl", "hostnossl"].contains(connection) {
                    throw self.error("\(key).connection", "unknown connection type \"\(connection)\"; expected local, host, hostssl or hostnossl")
                }
                if method == .peer && connection != "local" {
                    throw self.error("\(key).method", "peer authentication works only on the Unix socket; add connection = \"local\"")
                }
                var address: AddressRange? = nil
                if let text = try self.optionalString(rule, "address", key) {
                    guard let parsed = AddressRange(text) else {
                        throw self.error("\(key).address", "expected an IP address or CIDR range such as \"10.0.0.0/8\", found \"\(text)\"")
                    }
                    guard connection != "local" else {
                        throw self.error("\(key).address", "a local (Unix socket) rule cannot match an address")
                    }
                    address = parsed
                }
                settings.rules.append(AuthRule(
                    connection: connection,
                    databases: try self.names(rule, "database", key),
                    users: try self.names(rule, "user", key),
                    address: address,
                    method: method
                ))
            }
            return settings
        }

        func method(_ table: [(String, ConfigValue)], _ key: String, _ section: String) throws(ConfigError) -> AuthMethod? {
            guard let text = try self.optionalString(table, key, section) else { return nil }
            guard let method = AuthMethod(rawValue: text) else {
                throw self.error("\(section).\(key)", "unknown method \"\(text)\"; expected one of \(AuthMethod.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return method
        }

        /// A name or an array of names; "all" (or no key) matches every name.
        func names(_ table: [(String, ConfigValue)], _ key: String, _ section: String) throws(ConfigError) -> [String]? {
            var names: [String] = []
            switch self.lookup(table, key) {
            case nil: return nil
            case .string(let name)?: names = [name]
            case .array(let items)?:
                for item in items {
                    guard case .string(let name) = item else {
                        throw self.error("\(section).\(key)", "expected a name or an array of names, found \(item.typeName) in the array")
                    }
                    names.append(name)
                }
            case let other?: throw self.error("\(section).\(key)", "expected a name or an array of names, found \(other.typeName)")
            }
            guard !names.isEmpty else { throw self.error("\(section).\(key)", "empty list: the rule could never match") }
            return names.contains("all") ? nil : names
        }

        func tls(_ table: [(String, ConfigValue)]) throws(ConfigError) -> TLSSettings {
            try self.rejectUnknown(table, allowed: ConfigLoader.tlsKeys, in: "tls")
            var settings = TLSSettings()
            settings.certificateFile = try self.optionalString(table, "cert_file", "tls")
            settings.keyFile = try self.optionalString(table, "key_file", "tls")
            if (settings.certificateFile == nil) != (settings.keyFile == nil) {
                throw self.error(settings.certificateFile == nil ? "tls.cert_file" : "tls.key_file", "cert_file and key_file go together; set both or neither")
            }
            let configured = settings.certificateFile != nil
            if let text = try self.optionalString(table, "client_tls", "tls") {
                guard let mode = ClientTLSMode(rawValue: text) else {
                    throw self.error("tls.client_tls", "unknown mode \"\(text)\"; expected disable, allow or require")
                }
                settings.mode = mode
            } else {
                settings.mode = configured ? .allow : .disable
            }
            if settings.mode != .disable && !configured {
                throw self.error("tls.client_tls", "\(settings.mode.rawValue) needs a certificate: set tls.cert_file and tls.key_file")
            }
            if configured {
                do {
                    settings.context = try ClientTLS.makeContext(settings)
                } catch {
                    throw self.error("tls", error.description)
                }
            }
            return settings
        }

        static func isSettingName(_ name: String) -> Bool {
            guard let first = name.unicodeScalars.first, first == "_" || first.properties.isAlphabetic else { return false }
            return name.unicodeScalars.allSatisfy { $0 == "_" || $0 == "." || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
        }

        func lookup(_ table: [(String, ConfigValue)], _ key: String) -> ConfigValue? {
            table.first { $0.0 == key }?.1
        }

        func table(_ value: ConfigValue, _ key: String) throws(ConfigError) -> [(String, ConfigValue)] {
            guard case .table(let entries) = value else { throw self.error(key, "expected a table, found \(value.typeName)") }
            return entries
        }

        func rejectUnknown(_ table: [(String, ConfigValue)], allowed: [String], in section: String) throws(ConfigError) {
            for (key, _) in table where !allowed.contains(key) {
                throw self.error("\(section).\(key)", "unknown key; expected one of \(allowed.joined(separator: ", "))")
            }
        }

        func optionalString(_ table: [(String, ConfigValue)], _ key: String, _ section: String) throws(ConfigError) -> String? {
            guard let value = self.lookup(table, key) else { return nil }
            guard case .string(let text) = value else { throw self.error("\(section).\(key)", "expected a string, found \(value.typeName)") }
            return text
        }

        func optionalBoolean(_ table: [(String, ConfigValue)], _ key: String, _ section: String) throws(ConfigError) -> Bool? {
            guard let value = self.lookup(table, key) else { return nil }
            guard case .boolean(let flag) = value else { throw self.error("\(section).\(key)", "expected a boolean, found \(value.typeName)") }
            return flag
        }

        func optionalInteger(_ table: [(String, ConfigValue)], _ key: String, _ section: String, range: ClosedRange<Int>) throws(ConfigError) -> Int? {
            guard let value = self.lookup(table, key) else { return nil }
            guard case .integer(let number) = value else { throw self.error("\(section).\(key)", "expected an integer, found \(value.typeName)") }
            guard range.contains(number) else {
                throw self.error("\(section).\(key)", "\(number) is out of range; allowed \(range.lowerBound) to \(range.upperBound)")
            }
            return number
        }

        func byteSize(_ table: [(String, ConfigValue)], _ key: String, _ section: String, range: ClosedRange<Int>) throws(ConfigError) -> Int? {
            guard let value = self.lookup(table, key) else { return nil }
            let parsed: Int?
            switch value {
            case .integer(let bytes): parsed = bytes
            case .string(let text): parsed = ByteSizeParser.parse(text)
            default: throw self.error("\(section).\(key)", "expected a size such as \"64MB\", found \(value.typeName)")
            }
            guard let parsed else {
                throw self.error("\(section).\(key)", "not a valid size; use a whole number with B, kB, MB or GB, such as \"64MB\"")
            }
            guard range.contains(parsed) else {
                throw self.error(
                    "\(section).\(key)",
                    "\(ByteSizeParser.text(parsed)) is out of range; allowed \(ByteSizeParser.text(range.lowerBound)) to \(ByteSizeParser.text(range.upperBound))"
                )
            }
            return parsed
        }

        func duration(_ table: [(String, ConfigValue)], _ key: String, _ section: String, positive: Bool) throws(ConfigError) -> Duration? {
            guard let value = self.lookup(table, key) else { return nil }
            let parsed: Duration?
            switch value {
            case .integer(let seconds): parsed = seconds >= 0 ? .seconds(seconds) : nil
            case .string(let text): parsed = DurationParser.parse(text)
            default: throw self.error("\(section).\(key)", "expected a duration such as \"30s\" or \"500ms\", found \(value.typeName)")
            }
            guard let parsed else {
                throw self.error("\(section).\(key)", "not a valid non-negative duration; use a number with ms, s, m, h or d, such as \"30s\"")
            }
            if positive && parsed == .zero {
                throw self.error("\(section).\(key)", "must be greater than zero")
            }
            return parsed
        }

        func fileMode(_ table: [(String, ConfigValue)], _ key: String) throws(ConfigError) -> Int? {
            guard let value = self.lookup(table, key) else { return nil }
            guard case .string(let text) = value, let mode = Int(text, radix: 8), (0...0o777).contains(mode) else {
                throw self.error("agent.\(key)", "expected an octal mode string such as \"0600\"")
            }
            return mode
        }

        func listenAddress(_ text: String, _ key: String) throws(ConfigError) -> AgentConfiguration.Listen {
            var host: Substring
            let portText: Substring
            if text.hasPrefix("[") {
                guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                    throw self.error(key, "expected \"[address]:port\", found \"\(text)\"")
                }
                host = text[text.index(after: text.startIndex)..<close]
                portText = text[text.index(close, offsetBy: 2)...]
            } else {
                guard let colon = text.lastIndex(of: ":") else {
                    throw self.error(key, "expected \"host:port\", found \"\(text)\"")
                }
                host = text[..<colon]
                portText = text[text.index(after: colon)...]
            }
            if host == "*" { host = "0.0.0.0" }
            guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else {
                throw self.error(key, "expected \"host:port\" with a port from 1 to 65535, found \"\(text)\"")
            }
            return .init(host: String(host), port: port)
        }
    }
}

/// Reads a whole file with POSIX calls; the agent does not depend on Foundation.
func readFile(_ path: String) throws -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SystemError(call: "open", errno: errno) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            throw SystemError(call: "read", errno: errno)
        }
        if count == 0 { break }
        bytes.append(contentsOf: chunk[0..<count])
        guard bytes.count <= 16 << 20 else { throw SystemError(call: "read", errno: EFBIG) }
    }
    return String(decoding: bytes, as: UTF8.self)
}

struct SystemError: Error, CustomStringConvertible {
    var call: String
    var errno: Int32
    var description: String { String(cString: strerror(self.errno)) }
}
