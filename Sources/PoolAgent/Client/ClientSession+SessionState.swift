// Transaction mode's session state: what a client's SQL may change, the server's state read back, pins, notifications.

import NIOCore
import PGWire

extension ClientSession {
    /// What forwarding does with a message whose text has session effects.
    enum EffectsVerdict {
        case proceed
        /// The message waits (with everything after it) until the pool's listener listens on its channels.
        case waitForListener
        /// The statement is not run: the client gets this error instead (its transaction fails as if it ran).
        case refuse(ErrorResponse)
        /// The client is disconnected with this error.
        case close(ErrorResponse)
    }

    /// Notes what a statement text about to be sent to `server` may do to its session: LISTEN and UNLISTEN
    /// go to the pool's listener, state that pins takes a slot of `max_pinned` (or is refused as `pin` says),
    /// and anything that may have changed the session has the server's state read back once it is idle.
    func sessionEffects(_ effects: SessionEffects, server: ServerConnection) -> EffectsVerdict {
        guard let pool = self.pool, !effects.isEmpty else { return .proceed }
        var pins = effects.pins
        let relays = pool.settings.listener
        if !relays, effects.listens.contains(where: { if case .listen = $0 { true } else { false } }) { pins.insert(.listen) }
        let added = pins.subtracting(self.pins)
        // A text that may also drop what it makes (PREPARE … DEALLOCATE, lock … unlock) is judged by the state
        // left after it, when the server's state is read back.
        if !added.isEmpty, !self.pinSlot, !effects.mayRelease {
            let what = added.names.joined(separator: ", ")
            switch pool.settings.pin {
            case .refuse:
                pool.stats.pinRefusals += 1
                return .refuse(ErrorResponse(
                    .error, sqlState: "0A000",
                    message: "session state (\(what)) would pin this client to a server, and pool \"\(pool.name)\" refuses pinning (pin = \"refuse\")",
                    hint: "Use a session-mode pool for this, or the transaction-level form (pg_advisory_xact_lock, SET LOCAL, ON COMMIT DROP)."
                ))
            case .close:
                pool.stats.pinRefusals += 1
                return .close(.fatal("0A000", "session state (\(what)) would pin this client to a server, and pool \"\(pool.name)\" closes such clients (pin = \"close\")"))
            case .allow:
                guard self.takePinSlot(pool) else {
                    pool.stats.pinRefusals += 1
                    return .refuse(ErrorResponse(
                        .error, sqlState: "53300",
                        message: "too many pinned clients: session state (\(what)) would pin this client, and pool \"\(pool.name)\" already has \(pool.pinnedClients) of max_pinned \(pool.pinnedLimit)",
                        hint: "Retry once other clients have released their session state, or raise max_pinned."
                    ))
                }
            }
        }
        if !pins.isEmpty || effects.changesSettings || (effects.mayRelease && !self.pins.isEmpty) || (!relays && !effects.listens.isEmpty) {
            server.sessionStateChanged = true
        }
        guard relays, !effects.listens.isEmpty else { return .proceed }
        let listener = pool.notificationListener
        var ready = true
        for change in effects.listens {
            switch change {
            case .listen(let channel):
                self.listenChannels.insert(channel)
                if !listener.subscribe(self, to: channel) { ready = false }
            case .unlisten(let channel):
                self.listenChannels.remove(channel)
                listener.unsubscribe(self, from: channel)
            case .unlistenAll:
                listener.unsubscribeAll(self, channels: self.listenChannels)
                self.listenChannels = []
            }
        }
        return ready ? .proceed : .waitForListener
    }

    /// The query a refused statement is replaced with: it fails on the server with `error`, so the client's
    /// transaction and the server's agree as if the statement itself had failed.
    static func refusalQuery(_ error: ErrorResponse) -> String {
        var text = "DO $poolagent$BEGIN RAISE EXCEPTION USING ERRCODE = \(SettingsPlan.literal(error.sqlState)), MESSAGE = \(SettingsPlan.literal(error.message))"
        if let hint = error.hint { text += ", HINT = \(SettingsPlan.literal(hint))" }
        return text + "; END$poolagent$"
    }

    // MARK: The server's state

    /// Reads the session state of `server` back (the client's SQL may have changed it): settings become the
    /// client's, locks and the like pin it. Input that arrives meanwhile waits.
    func probeSessionState(_ server: ServerConnection) {
        self.state = .syncing
        let query = SessionProbe.query(
            listens: !(self.pool?.settings.listener ?? true),
            sessionAuthorization: server.link.parameters["session_authorization"]
        )
        server.runProbe(query) { [self] error, rows in
            guard self.state == .syncing, self.server === server else { return }
            if let error {
                self.fatal(ErrorResponse(.fatal, sqlState: error.sqlState, message: "cannot read the session state of the server: \(error.message)"))
                return
            }
            let result = SessionProbe.Result(rows: rows, reported: server.parameters)
            self.sendHeldReady()
            server.sessionStateChanged = false
            server.appliedSettings = result.settings
            self.sessionSettings = result.settings
            self.setReported(self.reported)
            server.settingsKey = self.settingsKey
            guard self.updatePins(result.pins, server: server) else { return }
            self.state = .active
            if let pending = self.pendingInput {
                self.pendingInput = nil
                self.resumeReading()
                self.forwardToServer(pending, server: server)
            } else {
                self.releaseIfIdle()
            }
        }
    }

    /// Holds the ReadyForQuery that ends a request until its session state has been read back.
    func holdReady(_ message: ByteBuffer) {
        self.heldReady = message
    }

    func sendHeldReady() {
        guard let message = self.heldReady else { return }
        self.heldReady = nil
        guard self.state == .active || self.state == .syncing, let transport = self.transport else { return }
        transport.write(message)
        transport.flush()
    }

    /// The pins the server's state shows now; false when the client was closed for one it may not have.
    private func updatePins(_ pins: SessionEffects.Pins, server: ServerConnection) -> Bool {
        guard let pool = self.pool else { return false }
        let added = pins.subtracting(self.pins)
        let removed = self.pins.subtracting(pins)
        if !added.isEmpty, !self.pinSlot {
            // State the text did not show (a function made it): kept only if a pin would have been allowed.
            guard pool.settings.pin == .allow, self.takePinSlot(pool) else {
                pool.stats.pinRefusals += 1
                let why = pool.settings.pin == .allow ? "max_pinned \(pool.pinnedLimit) is reached" : "pin = \"\(pool.settings.pin.rawValue)\""
                self.fatal(.fatal("0A000", "session state (\(added.names.joined(separator: ", "))) appeared that would pin this client to a server, and pool \"\(pool.name)\" cannot pin it (\(why)): the server is reset"))
                return false
            }
        }
        for (pin, name) in SessionEffects.Pins.named {
            if added.contains(pin) { pool.stats.pins[name, default: 0] += 1 }
            if removed.contains(pin) { pool.stats.unpins[name, default: 0] += 1 }
        }
        self.pins = pins
        server.holdsSessionState = !pins.isEmpty
        if pins.isEmpty { self.givePinSlotBack(pool) }
        if !added.isEmpty || !removed.isEmpty {
            if self.logs(.debug) { self.logger.debug("pins changed", metadata: ["pins": "\(pins.names)", LogKey.backendPID: "\(server.backendPID)"]) }
            pool.onPinChange?(self, pins, added, removed)
        }
        return true
    }

    /// One of the pool's `max_pinned` slots for this client; false when none is free.
    private func takePinSlot(_ pool: Pool) -> Bool {
        guard pool.pinnedClients < pool.pinnedLimit else { return false }
        pool.pinnedClients += 1
        self.pinSlot = true
        return true
    }

    private func givePinSlotBack(_ pool: Pool) {
        guard self.pinSlot else { return }
        self.pinSlot = false
        pool.pinnedClients -= 1
    }

    /// The client leaves: its slot and its channels go.
    func releaseSessionState() {
        guard let pool = self.pool else { return }
        if !self.pins.isEmpty {
            for (pin, name) in SessionEffects.Pins.named where self.pins.contains(pin) { pool.stats.unpins[name, default: 0] += 1 }
            pool.onPinChange?(self, [], [], self.pins)
        }
        self.givePinSlotBack(pool)
        if !self.listenChannels.isEmpty {
            pool.existingListener?.unsubscribeAll(self, channels: self.listenChannels)
            self.listenChannels = []
        }
        self.asyncMessages = []
    }

    // MARK: Notifications

    /// The pool's listener now listens on every channel this client asked for: stalled input goes on.
    func listenerReady() {
        self.serverAnswered()
    }

    /// The listener could not listen on `channel`: the client no longer counts as listening on it.
    func listenerFailed(channel: String) {
        self.listenChannels.remove(channel)
        self.pool?.existingListener?.unsubscribe(self, from: channel)
    }

    /// A NoticeResponse from the agent, delivered between the client's messages.
    func deliverNotice(_ severity: ErrorResponse.Severity, _ message: String) {
        var buffer = Transport.allocator.buffer(capacity: 64 + message.utf8.count)
        ErrorResponse(severity, sqlState: "01000", message: message).encode(into: &buffer, notice: true)
        self.deliverAsync(buffer)
    }

    /// An asynchronous message for this client (a NotificationResponse, the agent's notice), delivered between
    /// its messages.
    func deliverAsync(_ message: ByteBuffer) {
        guard self.loggedIn, self.state == .active || self.state == .waiting || self.state == .syncing, let pool = self.pool else { return }
        self.asyncMessages.append(message)
        if self.asyncMessages.count > pool.settings.notificationQueue {
            pool.stats.notificationOverflows += 1
            self.asyncMessages = []
            self.fatal(.fatal("54000", "this client left \(pool.settings.notificationQueue) notifications unread (notification_queue of pool \"\(pool.name)\"): closing it rather than dropping any"))
            return
        }
        self.deliverQueued()
    }

    /// Writes queued notifications while the socket takes them and the client's stream is between messages.
    func deliverQueued() {
        guard !self.asyncMessages.isEmpty, let transport = self.transport else { return }
        var written = 0
        while written < self.asyncMessages.count, transport.isWritable, self.server?.atMessageBoundary ?? true {
            transport.write(self.asyncMessages[written])
            written += 1
        }
        guard written > 0 else { return }
        self.asyncMessages.removeFirst(written)
        transport.flush()
    }
}

/// The one query that reads a server's session state back, and what its rows say.
enum SessionProbe {
    /// Rows of (setting, value) for the settings the session changed, and one row ('', pins) naming the
    /// state that keeps the client on its server.
    static func query(listens: Bool, sessionAuthorization: String?) -> String {
        var checks = [
            "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) THEN 'advisory_lock' END",
            "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) THEN 'temporary_table' END",
            "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable) THEN 'hold_cursor' END",
            "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) THEN 'sql_prepare' END",
        ]
        var role = "pg_catalog.current_setting('role') <> 'none'"
        if let sessionAuthorization {
            role += " OR pg_catalog.current_setting('session_authorization') <> \(SettingsPlan.literal(sessionAuthorization))"
        }
        checks.append("CASE WHEN \(role) THEN 'role' END")
        if listens { checks.append("CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN 'listen' END") }
        return "SELECT '', pg_catalog.concat_ws(',', \(checks.joined(separator: ", "))) UNION ALL "
            + "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings "
            + "WHERE source = 'session' AND name NOT IN ('role', 'session_authorization')"
    }

    struct Result: Equatable {
        var pins: SessionEffects.Pins = []
        /// Settings the session changed that the server does not report, by lowercased name.
        var settings: [String: String] = [:]

        init(rows: [[String?]], reported: [String: String]) {
            let reportedNames = Set(reported.keys.map { $0.lowercased() })
            for row in rows where row.count == 2 {
                guard let name = row[0], let value = row[1] else { continue }
                if name.isEmpty {
                    let names = Set(value.split(separator: ",").map(String.init))
                    for (pin, pinName) in SessionEffects.Pins.named where names.contains(pinName) { self.pins.insert(pin) }
                } else if !reportedNames.contains(name.lowercased()) {
                    self.settings[name.lowercased()] = value
                }
            }
        }
    }
}
