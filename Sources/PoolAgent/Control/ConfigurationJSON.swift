// The effective configuration as the `config` method shows it: every key, passwords in upstreams hidden.

import ControlRPC

extension AgentConfiguration {
    /// The effective configuration for `config`: every key with its value, passwords in upstreams hidden.
    var redactedJSON: JSONValue {
        [
            "file": .string(self.path),
            "agent": [
                "listen": .array(self.listen.map { .string($0.description) }),
                "unix_socket_dir": self.unixSocketDirectory.map { .string($0) } ?? .null,
                "unix_socket_port": JSONValue(self.unixSocketPort),
                "control_socket": .string(self.controlSocket),
                "control_socket_mode": .string(String(self.controlSocketMode, radix: 8)),
                "control_allowed_uids": .array(self.controlAllowedUIDs.map { JSONValue($0) }),
                "login_timeout_s": JSONValue(self.loginTimeout.seconds),
                "shutdown_timeout_s": JSONValue(self.shutdownTimeout.seconds),
                "log_level": .string(self.logLevel),
                "log_format": .string(self.logFormat.rawValue),
                "admin_users": .array(self.adminUsers.map { .string($0) }),
                "stats_users": .array(self.statsUsers.map { .string($0) }),
                "metrics_listen": self.metricsListen.map { .string($0.description) } ?? .null,
                "io_uring": .bool(self.ioUring),
                "max_client_conn": JSONValue(self.maxClientConnections),
                "max_login_clients": JSONValue(self.maxLoginClients),
                "max_user_connections": JSONValue(self.maxUserConnections),
            ],
            "auth": [
                "file": self.auth.file.map { .string($0) } ?? .null,
                "tcp": .string(self.auth.tcp.rawValue),
                "unix": .string(self.auth.unix.rawValue),
                "rules": .array(self.auth.rules.map { rule in
                    [
                        "connection": rule.connection.map { .string($0) } ?? .null,
                        "database": rule.databases.map { .array($0.map { .string($0) }) } ?? .null,
                        "user": rule.users.map { .array($0.map { .string($0) }) } ?? .null,
                        "address": rule.address.map { .string($0.description) } ?? .null,
                        "method": .string(rule.method.rawValue),
                    ]
                }),
            ],
            "tls": [
                "cert_file": self.tls.certificateFile.map { .string($0) } ?? .null,
                "key_file": self.tls.keyFile.map { .string($0) } ?? .null,
                "client_tls": .string(self.tls.mode.rawValue),
            ],
            "pools": .object(self.pools.sorted { $0.key < $1.key }.map { ($0.key, $0.value.redactedJSON) }),
            "template": self.template.map { template in
                .object((template.settings.redactedJSON.objectValue ?? []) + [
                    ("max_pools", JSONValue(template.maxPools)), ("unused_timeout_s", JSONValue(template.unusedTimeout.seconds)),
                ])
            } ?? .null,
        ]
    }
}

extension PoolSettings {
    var redactedJSON: JSONValue {
        var members: [(String, JSONValue)] = [
            ("upstream", .string((try? UpstreamConninfo(parsing: self.upstream).redacted) ?? "(invalid)")),
            ("mode", .string(self.mode.rawValue)),
            ("size", self.sizeIsAuto ? .string("auto") : JSONValue(self.size)),
            ("min_idle", JSONValue(self.minIdle)),
            ("max_overflow", JSONValue(self.maxOverflow)),
            ("wait_timeout_s", JSONValue(self.waitTimeout.seconds)),
            ("connect_timeout_s", JSONValue(self.connectTimeout.seconds)),
            ("reset_query", .string(self.resetQuery)),
            ("max_prepared_statements", JSONValue(self.maxPreparedStatements)),
            ("statement_budget", .string(ByteSizeParser.text(self.statementBudget))),
            ("max_client_statements", JSONValue(self.maxClientStatements)),
            ("max_clients", JSONValue(self.maxClients)),
            ("listener", .bool(self.listener)),
            ("pin", .string(self.pin.rawValue)),
            ("max_pinned", self.maxPinned.map { JSONValue($0) } ?? .null),
            ("notification_queue", JSONValue(self.notificationQueue)),
            ("recycle", .string(self.adaptiveRecycle ? "adaptive" : "fixed")),
        ]
        let optional: [(String, Duration?)] = [
            ("max_lifetime_s", self.maxLifetime), ("idle_timeout_s", self.idleTimeout), ("pre_ping_after_s", self.prePingAfter),
            ("query_timeout_s", self.queryTimeout), ("idle_in_transaction_timeout_s", self.idleInTransactionTimeout),
            ("client_idle_timeout_s", self.clientIdleTimeout), ("pin_timeout_s", self.pinTimeout),
        ]
        for (key, value) in optional { members.append((key, value.map { JSONValue($0.seconds) } ?? .null)) }
        let autoscale: JSONValue = self.autoscale.map {
            ["interval_s": JSONValue($0.interval.seconds), "min": JSONValue($0.minimum), "max": JSONValue($0.maximum)]
        } ?? .null
        members.append(("autoscale", autoscale))
        members.append(("server_settings", .object(self.serverSettings.map { ($0.0, .string($0.1)) })))
        members.append(("auth_query", self.authQuery.map { .string($0) } ?? .null))
        members.append(("auth_upstream", self.authUpstream.map { .string((try? UpstreamConninfo(parsing: $0).redacted) ?? "(invalid)") } ?? .null))
        return .object(members)
    }
}
