// The configuration file: defaults, inheritance from [defaults], and one precise error per bad key.

import ControlRPC
import Testing
@testable import PoolAgent

@Suite struct ConfigLoaderTests {
    func load(_ text: String) throws(ConfigError) -> AgentConfiguration {
        try ConfigLoader.parse(text, file: "test.toml")
    }

    func error(_ text: String) -> ConfigError? {
        do {
            _ = try self.load(text)
            return nil
        } catch {
            return error
        }
    }

    @Test func minimalFileGetsDefaults() throws {
        let config = try self.load("""
            [pools.app]
            upstream = "host=/tmp dbname=app"
            """)
        #expect(config.listen == [.init(host: "127.0.0.1", port: 6432)])
        #expect(config.unixSocketDirectory == nil)
        #expect(config.controlSocket == "/run/poolagent/poolagent.sock")
        #expect(config.controlSocketMode == 0o600)
        #expect(config.ioUring)
        let pool = try #require(config.pools["app"])
        #expect(pool.mode == .session)
        #expect(pool.size == 10)
        #expect(pool.minIdle == 0)
        #expect(pool.maxOverflow == 0)
        #expect(pool.waitTimeout == .seconds(30))
        #expect(pool.resetQuery == "DISCARD ALL")
        #expect(config.maxClientConnections == 10_000)
        #expect(config.maxLoginClients == 2_000)
        #expect(config.maxUserConnections == 0)
        #expect(pool.maxClients == 0)
    }

    @Test func aTemplateAloneIsEnoughAndTakesPoolKeysWithItsOwn() throws {
        let config = try self.load("""
            [defaults]
            size = 4
            [pools."*"]
            upstream = "host=/tmp user=app"
            mode = "transaction"
            max_pools = 7
            unused_timeout = "10m"
            """)
        #expect(config.pools.isEmpty)
        let template = try #require(config.template)
        #expect(template.maxPools == 7)
        #expect(template.unusedTimeout == .seconds(600))
        #expect(template.settings.size == 4)
        let made = try #require(config.poolSettings(for: "reports"))
        #expect(made.name == "reports" && made.mode == .transaction)
        #expect(config.poolSettings(for: "reports") != nil)
        #expect(try self.load("[pools.app]\nupstream = \"host=/tmp\"").poolSettings(for: "other") == nil)

        #expect(self.error("[pools.\"*\"]\nupstream = \"host=/tmp dbname=x\"")?.key == "pools.\"*\".upstream")
        #expect(self.error("[pools.\"*\"]\nupstream = \"host=/tmp\"\nmax_pools = 0")?.key == "pools.\"*\".max_pools")
        #expect(self.error("[pools.\"*\"]\nupstream = \"host=/tmp\"\nauth_query = \"SELECT $1\"")?.key == "pools.\"*\".auth_upstream")
        #expect(self.error("[pools.\"*\"]\nupstream = \"host=/tmp\"\nsizes = 3")?.key == "pools.\"*\".sizes")
        #expect(self.error("[pools.app]\nupstream = \"host=/tmp\"\nmax_pools = 3")?.key == "pools.app.max_pools")
    }

    @Test func clientLimitsAreReadAndMaxClientsInherits() throws {
        let config = try self.load("""
            [agent]
            max_client_conn = 500
            max_login_clients = 50
            max_user_connections = 20
            [defaults]
            max_clients = 100
            [pools.app]
            upstream = "host=/tmp"
            [pools.small]
            upstream = "host=/tmp"
            max_clients = 5
            """)
        #expect(config.maxClientConnections == 500)
        #expect(config.maxLoginClients == 50)
        #expect(config.maxUserConnections == 20)
        #expect(config.pools["app"]?.maxClients == 100)
        #expect(config.pools["small"]?.maxClients == 5)
        #expect(DescriptorLimit.needed(by: config) == 500 + 2 * (11 + 11) + 1 + 64)
        #expect(DescriptorLimit.warning(for: config, limit: 1024) == nil)
        #expect(DescriptorLimit.warning(for: config, limit: 512)?.contains("max_client_conn 500") == true)
    }

    @Test func poolKeysOverrideDefaults() throws {
        let config = try self.load("""
            [agent]
            listen = ["127.0.0.1:7000", "[::1]:7001", "*:7002"]
            unix_socket_dir = "/tmp/pa"
            control_socket_mode = "0660"
            io_uring = false

            [defaults]
            size = 20
            wait_timeout = "1500ms"
            max_overflow = 3

            [pools.app]
            upstream = "host=/tmp"
            size = 5
            min_idle = 2
            server_settings = { jit = "off", work_mem = "32MB", random_page_cost = 1.1, enable_seqscan = false }

            [pools.other]
            upstream = "postgresql://u@localhost:5433/other"
            """)
        #expect(config.listen.map(\.description) == ["127.0.0.1:7000", "[::1]:7001", "0.0.0.0:7002"])
        #expect(config.unixSocketPort == 7000)
        #expect(!config.ioUring)
        #expect(config.controlSocketMode == 0o660)
        let app = try #require(config.pools["app"])
        #expect(app.size == 5)
        #expect(app.minIdle == 2)
        #expect(app.maxOverflow == 3)
        #expect(app.waitTimeout == .milliseconds(1500))
        // TOML tables carry no order; the agent applies settings in key order.
        #expect(app.serverSettings.map { "\($0.0)=\($0.1)" }.sorted() == ["enable_seqscan=off", "jit=off", "random_page_cost=1.1", "work_mem=32MB"])
        #expect(config.pools["other"]?.size == 20)
    }

    @Test(arguments: [
        ("[agent]\nlisten_on = 1\n[pools.a]\nupstream = \"host=/tmp\"", "agent.listen_on", "unknown key"),
        ("[pool.a]\nupstream = \"host=/tmp\"", "pool", "unknown section"),
        ("[pools.a]\nupstream = 5", "pools.a.upstream", "expected a string"),
        ("[pools.a]\nsize = 3", "pools.a.upstream", "missing"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nsize = -1", "pools.a.size", "out of range"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nsize = \"many\"", "pools.a.size", "whole number"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nautoscale = { interval = \"500ms\" }", "pools.a.autoscale.interval", "at least 1s"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nautoscale = { min = 9, max = 3 }", "pools.a.autoscale.min", "larger than max"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nautoscale = { step = 3 }", "pools.a.autoscale.step", "unknown key"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nrecycle = \"sometimes\"", "pools.a.recycle", "adaptive"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nsize = 2\nmin_idle = 3", "pools.a.min_idle", "larger than the pool size"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nmax_overflow = 1.5", "pools.a.max_overflow", "expected an integer"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nwait_timeout = \"soon\"", "pools.a.wait_timeout", "duration"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nwait_timeout = 0", "pools.a.wait_timeout", "greater than zero"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nmode = \"statement\"", "pools.a.mode", "unknown mode"),
        ("[defaults]\nsize = 0\n[pools.a]\nupstream = \"host=/tmp\"", "defaults.size", "out of range"),
        ("[defaults]\nupstream = \"host=/tmp\"\n[pools.a]\nupstream = \"host=/tmp\"", "defaults.upstream", "unknown key"),
        ("[pools.a]\nupstream = \"host=/tmp sslmode=sometimes\"", "pools.a.upstream", "sslmode: invalid value \"sometimes\""),
        ("[pools.a]\nupstream = \"postgresql://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt\"", "pools.a.upstream", "sslrootcert: cannot read"),
        ("[pools.a]\nupstream = \"host=h sslmode=disable channel_binding=require\"", "pools.a.upstream", "channel_binding"),
        ("[pools.a]\nupstream = \"host=h ssl_min_protocol_version=SSLv3\"", "pools.a.upstream", "ssl_min_protocol_version"),
        ("[pools.a]\nupstream = \"host=/tmp gssencmode=require\"", "pools.a.upstream", "gssencmode"),
        ("[pools.a]\nupstream = \"host=/tmp nosuchoption=1\"", "pools.a.upstream", "invalid libpq conninfo"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nserver_settings = { \"bad name\" = 1 }", "pools.a.server_settings.bad name", "setting name"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nserver_settings = { jit = [1] }", "pools.a.server_settings.jit", "expected a string"),
        ("[agent]\nlisten = [\"localhost\"]\n[pools.a]\nupstream = \"host=/tmp\"", "agent.listen[0]", "host:port"),
        ("[agent]\nlog_level = \"loud\"\n[pools.a]\nupstream = \"host=/tmp\"", "agent.log_level", "unknown level"),
        ("[agent]\nio_uring = \"yes\"\n[pools.a]\nupstream = \"host=/tmp\"", "agent.io_uring", "expected a boolean"),
        ("[agent]\ncontrol_socket_mode = \"rw\"\n[pools.a]\nupstream = \"host=/tmp\"", "agent.control_socket_mode", "octal"),
        ("[agent]\nmax_client_conn = 0\n[pools.a]\nupstream = \"host=/tmp\"", "agent.max_client_conn", "out of range"),
        ("[agent]\nmax_login_clients = \"many\"\n[pools.a]\nupstream = \"host=/tmp\"", "agent.max_login_clients", "expected an integer"),
        ("[agent]\nmax_user_connections = -1\n[pools.a]\nupstream = \"host=/tmp\"", "agent.max_user_connections", "out of range"),
        ("[pools.a]\nupstream = \"host=/tmp\"\nmax_clients = -5", "pools.a.max_clients", "out of range"),
        ("[agent]\n", "pools", "no pool"),
    ])
    func badKeysAreNamed(text: String, key: String, reason: String) throws {
        let error = try #require(self.error(text))
        #expect(error.file == "test.toml")
        #expect(error.key == key)
        #expect(error.reason.contains(reason), "\(error)")
        #expect(!error.description.contains("\n"))
    }

    @Test func autoSizeAutoscaleAndAdaptiveRecycle() throws {
        let config = try self.load("""
            [pools.a]
            upstream = "host=/tmp"
            size = "auto"
            recycle = "adaptive"
            autoscale = { interval = "2s", min = 2, max = 30 }
            """)
        let pool = try #require(config.pools["a"])
        #expect(pool.sizeIsAuto)
        #expect((5...50).contains(pool.size))
        #expect(pool.adaptiveRecycle)
        #expect(pool.autoscale == AutoscaleSettings(interval: .seconds(2), minimum: 2, maximum: 30))
    }

    @Test func syntaxErrorsNameTheLine() throws {
        let error = try #require(self.error("[pools.a]\nupstream = \"unterminated\n"))
        #expect(error.description.hasPrefix("test.toml: TOML syntax error at line 2"))
    }

    @Test func transactionModeIsAccepted() throws {
        let config = try self.load("[defaults]\nmode = \"transaction\"\n[pools.a]\nupstream = \"host=/tmp\"")
        #expect(config.pools["a"]?.mode == .transaction)
    }

    @Test func authAndTLSDefaults() throws {
        let config = try self.load("[pools.a]\nupstream = \"host=/tmp\"")
        #expect(config.auth.tcp == .scramSHA256)
        #expect(config.auth.unix == .peer)
        #expect(config.auth.rules.isEmpty)
        #expect(config.tls.mode == .disable)
        #expect(config.pools["a"]?.authQuery == nil)
    }

    @Test func authRulesAreReadInOrder() throws {
        let config = try self.load("""
            [auth]
            tcp = "md5"
            unix = "trust"
            [[auth.rules]]
            connection = "hostssl"
            user = ["alice", "bob"]
            database = "all"
            address = "10.0.0.0/8"
            method = "scram-sha-256"
            [[auth.rules]]
            connection = "local"
            method = "peer"
            [pools.a]
            upstream = "host=/tmp"
            auth_query = "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1"
            """)
        #expect(config.auth.tcp == .md5)
        #expect(config.auth.rules.count == 2)
        #expect(config.auth.rules[0] == AuthRule(connection: "hostssl", databases: nil, users: ["alice", "bob"], address: AddressRange("10.0.0.0/8"), method: .scramSHA256))
        #expect(config.auth.rules[1].method == .peer)
        #expect(config.pools["a"]?.authQuery?.contains("$1") == true)
    }

    @Test(arguments: [
        ("[auth]\ntcp = \"password\"", "auth.tcp", "unknown method"),
        ("[auth]\ntcp = \"peer\"", "auth.tcp", "only on the Unix socket"),
        ("[auth]\nhba = 1", "auth.hba", "unknown key"),
        ("[auth]\nfile = \"/nonexistent/users.txt\"", "auth.file", "cannot read"),
        ("[[auth.rules]]\nuser = \"a\"", "auth.rules[0].method", "missing"),
        ("[[auth.rules]]\nmethod = \"peer\"", "auth.rules[0].method", "connection = \"local\""),
        ("[[auth.rules]]\nmethod = \"trust\"\nconnection = \"hostgss\"", "auth.rules[0].connection", "unknown connection type"),
        ("[[auth.rules]]\nmethod = \"trust\"\naddress = \"10.0.0.0/40\"", "auth.rules[0].address", "CIDR"),
        ("[[auth.rules]]\nmethod = \"trust\"\nuser = []", "auth.rules[0].user", "never match"),
        ("[[auth.rules]]\nmethod = \"trust\"\nport = 5", "auth.rules[0].port", "unknown key"),
        ("[tls]\nclient_tls = \"require\"", "tls.client_tls", "needs a certificate"),
        ("[tls]\ncert_file = \"/tmp/x.pem\"", "tls.key_file", "go together"),
        ("[tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.key\"", "tls", "/nonexistent.pem"),
        ("[tls]\nclient_tls = \"prefer\"", "tls.client_tls", "disable, allow or require"),
    ])
    func authAndTLSErrorsNameTheKey(section: String, key: String, reason: String) throws {
        let error = try #require(self.error("\(section)\n[pools.a]\nupstream = \"host=/tmp\""))
        #expect(error.key == key, "\(error)")
        #expect(error.description.contains(reason), "\(error)")
    }

    @Test func authQueryMustTakeTheUserAsAParameter() throws {
        let error = try #require(self.error("[pools.a]\nupstream = \"host=/tmp\"\nauth_query = \"SELECT 1\""))
        #expect(error.key == "pools.a.auth_query")
    }

    @Test(arguments: [
        ("30s", Duration.seconds(30)), ("250ms", .milliseconds(250)), ("5m", .seconds(300)), ("1h", .seconds(3600)),
        ("2d", .seconds(172_800)), ("1.5s", .milliseconds(1500)), ("7", .seconds(7)), (" 10 s ", .seconds(10)),
    ])
    func durationsParse(text: String, expected: Duration) {
        #expect(DurationParser.parse(text) == expected)
    }

    @Test(arguments: ["", "s", "-1s", "1y", "abc", "1e999s"])
    func badDurationsAreRejected(text: String) {
        #expect(DurationParser.parse(text) == nil)
    }
}

@Suite struct AgentLogHandlerTests {
    @Test func logfmtQuotesWhatItMustAndJSONIsOneObject() throws {
        let line = AgentLogHandler.line(format: .logfmt, time: "2026-12-07T14:00:00.000Z", level: .info, message: "client refused",
                                        fields: [("pool", "app"), ("reason", "pool \"app\" is full"), ("empty", ""), ("a=b", "x\ny")])
        #expect(line == "ts=2026-12-07T14:00:00.000Z level=info msg=\"client refused\" pool=app reason=\"pool \\\"app\\\" is full\" empty=\"\" a_b=\"x\\ny\"\n")
        let json = AgentLogHandler.line(format: .json, time: "t", level: .warning, message: "m \"q\"", fields: [("pool", "app")])
        let object = try JSONValue.parse(Array(json.dropLast().utf8))
        #expect(object["ts"] == "t" && object["level"] == "warning" && object["msg"] == "m \"q\"" && object["pool"] == "app")
        #expect(!json.dropLast().contains("\n"))
    }
}
