// Client to server: every message told to the server's protocol machine, statement names rewritten in transaction mode.

import NIOCore
import PGWire

extension ClientSession {
    /// Forwards client bytes to `server`.
    ///
    /// Every message is told to the server's protocol machine before it goes out. In transaction mode named
    /// statements become the pool's shared server-side statements: a Parse of a statement the server already
    /// has is answered by the agent, a Bind or Describe of one it lacks is preceded by the agent's own Parse,
    /// a Parse of a name the client already holds is sent under that statement's server-side name so the
    /// server refuses it as PostgreSQL would, and Close only forgets the name. A message whose meaning
    /// depends on a Parse or Close behind an earlier Sync still in flight waits, with everything after it,
    /// until the server has answered that. Unchanged bytes are forwarded as slices of the input.
    func forwardToServer(_ input: ByteBuffer, server: ServerConnection) {
        guard let pool = self.pool else { return }
        pool.stats.bytesIn += input.readableBytes
        let buffer = self.joinScanned(input)
        var cursor = buffer.readerIndex
        var runStart = cursor
        var ending: Ending? = nil
        var immediate = SynthesizedResponses()

        func passRun(until end: Int) {
            if end > runStart { server.write(buffer.getSlice(at: runStart, length: end - runStart)!) }
        }
        /// The client's message from `start` to `cursor` is replaced by what the caller writes next.
        func replace(from start: Int) {
            passRun(until: start)
            runStart = cursor
        }
        /// Tells the machine; false when the server is in doubt and must go (`ending` says so).
        func record(_ pending: ServerProtocolMachine.Pending) -> Bool {
            switch server.record(pending) {
            case .recorded, .discarded:
                return true
            case .answerNow:
                if case .answer(let type, let intent) = pending {
                    immediate.append(type)
                    _ = self.intentResolved(intent, done: true)
                }
                return true
            case .recordedThenFence:
                passRun(until: cursor)
                runStart = cursor
                var fence = server.allocator.buffer(capacity: 8)
                fence.writeQuery("")
                server.write(fence)
                return true
            case .close:
                ending = .serverInDoubt(server.doubt ?? "the protocol machine refused a message")
                return false
            }
        }
        /// Room for statement `id` on the server: the LRU's oldest is closed first when it is full, and `id`
        /// itself when the server may still have it.
        func ensureRoom(for id: Int) -> Bool {
            for evicted in server.prepareStatement(id) {
                var out = server.allocator.buffer(capacity: 64)
                TargetMessage(kind: TargetMessage.statement, name: pool.statements.serverName(evicted.id))
                    .encode(into: &out, type: FrontendMessageID.close)
                guard record(.evict(evicted.id, confirmed: evicted.confirmed)) else { return false }
                server.write(out)
            }
            return true
        }
        /// Makes sure the server has statement `id` for the message at `start`, sending the agent's Parse (and
        /// an LRU Close) if not; false when forwarding stops (`ending` says why).
        func ensure(_ id: Int, for start: Int) -> Bool {
            switch server.presence(of: id) {
            case .present:
                return true
            case .unresolved:
                ending = .stall(start, onServer: true)
                return false
            case .absent:
                break
            }
            guard let parse = pool.statements.parse(id) else {
                ending = .serverInDoubt("a statement the client holds is gone from the pool's registry")
                return false
            }
            guard ensureRoom(for: id) else { return false }
            var out = server.allocator.buffer(capacity: parse.queryBytes.count + 64)
            parse.encode(into: &out)
            guard record(.parse(.agent(statement: id))) else { return false }
            server.write(out)
            return true
        }

        /// A Bind or Describe of the client's statement `name` (the message at `start`): sent as it came when the
        /// client has no such name (the server refuses it as PostgreSQL would), else under the server-side
        /// name, after the agent's own Parse when the server lacks it; false when forwarding stops.
        func sendNamed(_ name: String, from start: Int, as pending: ServerProtocolMachine.Pending,
                       encode: (String, inout ByteBuffer) -> Void) -> Bool {
            switch self.statements.lookup(name, syncs: server.syncsSent) {
            case .unresolved:
                passRun(until: start)
                ending = .stall(start, onServer: true)
                return false
            case .absent:
                return record(pending)
            case .exists(let id):
                replace(from: start)
                guard ensure(id, for: start) else { return false }
                var out = server.allocator.buffer(capacity: cursor - start + 64)
                encode(pool.statements.serverName(id), &out)
                guard record(pending) else { return false }
                server.write(out)
                return true
            }
        }

        /// Applies the session effects of the statement text in the message at `start`; false when forwarding
        /// stops (`ending` says why). A refused simple Query is replaced by one that fails on the server with the
        /// refusal; in the extended protocol a refusal disconnects, as a Parse cannot be made to fail with the
        /// refusal's error where the statement would have.
        func allowed(_ effects: SessionEffects, at start: Int, simpleQuery: Bool = false) -> Bool {
            guard !effects.isEmpty else { return true }
            switch self.sessionEffects(effects, server: server) {
            case .proceed:
                return true
            case .waitForListener:
                passRun(until: start)
                ending = .stall(start, onServer: false)
            case .refuse(let error) where simpleQuery:
                replace(from: start)
                var out = server.allocator.buffer(capacity: 256)
                out.writeQuery(Self.refusalQuery(error))
                server.write(out)
                return true
            case .refuse(let error):
                ending = .limit(ErrorResponse(.fatal, sqlState: error.sqlState, message: error.message, hint: error.hint))
            case .close(let error):
                ending = .limit(error)
            }
            return false
        }

        do {
            scan: while true {
                switch try self.nextScanned(in: buffer, cursor: &cursor) {
                case .message(let type, let start, let captured):
                    // While the server skips to the next Sync, it discards whatever else comes: no rewriting.
                    if server.skippingUntilSync && type != FrontendMessageID.sync && type != FrontendMessageID.terminate {
                        guard FrontendMessageID.isValid(type) else {
                            ending = .invalid(type)
                            break scan
                        }
                        continue
                    }
                    let rewriting = server.rewritesStatements
                    switch type {
                    case FrontendMessageID.query, FrontendMessageID.functionCall:
                        if type == FrontendMessageID.query, server.sharesServer, let captured {
                            let effects = captured.withBytes(in: buffer) { SessionEffects.scan($0) }
                            guard allowed(effects, at: start, simpleQuery: true) else { break scan }
                        }
                        server.requestStarted()
                        guard record(.query) else { break scan }
                        if server.rewritesStatements && !self.statements.isEmpty {
                            // Names sent behind it wait until it is done: it may drop them all.
                            let intent = self.statements.add(.barrier, syncs: server.syncsSent)
                            guard record(.barrier(intent: intent)) else { break scan }
                        }
                    case FrontendMessageID.sync:
                        server.requestStarted()
                        guard record(.sync(certain: true)) else { break scan }
                    case FrontendMessageID.execute:
                        guard record(.execute) else { break scan }
                    case FrontendMessageID.copyData:
                        guard record(.copyData) else { break scan }
                    case FrontendMessageID.copyDone:
                        guard record(.copyDone) else { break scan }
                    case FrontendMessageID.copyFail:
                        guard record(.copyFail) else { break scan }
                    case FrontendMessageID.flush:
                        break
                    case FrontendMessageID.terminate:
                        passRun(until: start)
                        runStart = cursor
                        ending = .terminate
                        break scan
                    case FrontendMessageID.parse:
                        guard rewriting, let captured, !ParseMessage.isUnnamed(captured, in: buffer) else {
                            // An unnamed statement runs right after (drivers parse it for each use): its effects now.
                            if server.sharesServer, let captured {
                                let effects = captured.withBytes(in: buffer) { SessionEffects.scan(parseBody: $0) }
                                guard allowed(effects, at: start) else { break scan }
                            }
                            guard record(.parse(.client(statement: nil, intent: nil))) else { break scan }
                            continue
                        }
                        var body = captured.slice(of: buffer)
                        let parse = try ParseMessage.decode(from: &body)
                        switch self.statements.lookup(parse.statement, syncs: server.syncsSent) {
                        case .unresolved:
                            passRun(until: start)
                            ending = .stall(start, onServer: true)
                            break scan
                        case .exists(let id):
                            // PostgreSQL parses the text, then refuses the name (42P05): so does the server.
                            replace(from: start)
                            guard ensure(id, for: start) else { break scan }
                            let intent = self.statements.add(.duplicate(name: parse.statement, statement: id), syncs: server.syncsSent)
                            var duplicate = parse
                            duplicate.statement = pool.statements.serverName(id)
                            var out = server.allocator.buffer(capacity: parse.queryBytes.count + 64)
                            duplicate.encode(into: &out)
                            guard record(.parse(.duplicate(intent: intent))) else { break scan }
                            server.write(out)
                        case .absent:
                            guard self.statements.count < pool.settings.maxClientStatements else {
                                ending = .limit(.fatal("53400", "too many prepared statements: this client holds \(pool.settings.maxClientStatements), the limit of pool \"\(pool.name)\" (max_client_statements)"))
                                break scan
                            }
                            guard let id = pool.statements.retain(parse) else {
                                ending = .limit(.fatal("53200", "out of memory for prepared statements: pool \"\(pool.name)\" holds \(pool.statements.bytes) bytes of statement text, its statement_budget is \(pool.statements.budget)"))
                                break scan
                            }
                            let presence = server.presence(of: id)
                            if presence == .unresolved {
                                pool.statements.release(id)
                                passRun(until: start)
                                ending = .stall(start, onServer: true)
                                break scan
                            }
                            replace(from: start)
                            let intent = self.statements.add(.parse(name: parse.statement, statement: id), syncs: server.syncsSent)
                            var out = server.allocator.buffer(capacity: parse.queryBytes.count + 64)
                            if presence == .present {
                                // The server parses the client's text anyway, as PostgreSQL would (it refuses it
                                // inside a failed transaction): the shared statement is closed and made anew.
                                let confirmed = server.reprepareStatement(id)
                                TargetMessage(kind: TargetMessage.statement, name: pool.statements.serverName(id))
                                    .encode(into: &out, type: FrontendMessageID.close)
                                guard record(.replace(id, confirmed: confirmed)) else { break scan }
                            } else {
                                guard ensureRoom(for: id) else { break scan }
                            }
                            guard let serverParse = pool.statements.parse(id) else {
                                ending = .serverInDoubt("a statement just retained is missing")
                                break scan
                            }
                            serverParse.encode(into: &out)
                            guard record(.parse(.client(statement: id, intent: intent))) else { break scan }
                            server.write(out)
                        }
                    case FrontendMessageID.bind:
                        guard rewriting, let captured, !BindMessage.bindsUnnamedStatement(captured, in: buffer) else {
                            guard record(.bind) else { break scan }
                            continue
                        }
                        var body = captured.slice(of: buffer)
                        var bind = try BindMessage.decode(from: &body)
                        // A named statement's effects count each time it is bound.
                        if case .exists(let id) = self.statements.lookup(bind.statement, syncs: server.syncsSent) {
                            guard allowed(pool.statements.effects(id), at: start) else { break scan }
                        }
                        guard sendNamed(bind.statement, from: start, as: .bind, encode: { name, out in
                            bind.statement = name
                            bind.encode(into: &out)
                        }) else { break scan }
                    case FrontendMessageID.describe:
                        guard rewriting, let captured, TargetMessage.namesStatement(captured, in: buffer) else {
                            guard record(.describe) else { break scan }
                            continue
                        }
                        var body = captured.slice(of: buffer)
                        var describe = try TargetMessage.decode(from: &body)
                        guard sendNamed(describe.name, from: start, as: .describe, encode: { name, out in
                            describe.name = name
                            describe.encode(into: &out, type: FrontendMessageID.describe)
                        }) else { break scan }
                    case FrontendMessageID.close:
                        guard rewriting, let captured, TargetMessage.namesStatement(captured, in: buffer) else {
                            guard record(.close) else { break scan }
                            continue
                        }
                        var body = captured.slice(of: buffer)
                        // The server-side statement stays for others; the LRU closes it in time. PostgreSQL
                        // answers CloseComplete whether the name exists or not.
                        let close = try TargetMessage.decode(from: &body)
                        replace(from: start)
                        let intent = self.statements.add(.close(name: close.name), syncs: server.syncsSent)
                        guard record(.answer(type: BackendMessageID.closeComplete, intent: intent)) else { break scan }
                    default:
                        ending = .invalid(type)
                        break scan
                    }
                case .end(let end):
                    passRun(until: end)
                    break scan
                }
            }
        } catch {
            self.protocolViolation("invalid message from client: \(error)")
            return
        }

        server.flush()
        if !server.isWritable { self.pauseReading() }
        if !immediate.isEmpty {
            self.writeFromServer(immediate.encoded(allocator: server.allocator))
            self.flushFromServer()
        }
        switch ending {
        case nil:
            self.releaseIfIdle()
        case .terminate:
            self.close(reason: "client sent Terminate")
        case .stall(let start, let onServer):
            // What the message waits for must come from the server: with nothing owed it never would.
            if onServer && server.owesNothing {
                server.close(reason: "protocol state in doubt: a client message waits for an answer the server does not owe")
                return
            }
            self.stall(buffer.getSlice(at: start, length: buffer.writerIndex - start)!)
        case .invalid(let type):
            self.protocolViolation("invalid frontend message type \(type)")
        case .limit(let error):
            self.fatal(error)
        case .serverInDoubt(let reason):
            server.close(reason: "protocol state in doubt: \(reason)")
        }
    }
}

/// Why forwarding stopped before the end of the client's bytes.
private enum Ending {
    case terminate
    /// The message at this index waits for the server's answer to an earlier one (`onServer`), or for the
    /// pool's listener.
    case stall(Int, onServer: Bool)
    case invalid(UInt8)
    case limit(ErrorResponse)
    case serverInDoubt(String)
}

extension FrontendMessageID {
    /// The message types a client may send after the startup, as PostgreSQL's `SocketBackend` accepts them.
    static func isValid(_ type: UInt8) -> Bool {
        switch type {
        case Self.query, Self.functionCall, Self.sync, Self.flush, Self.terminate, Self.parse, Self.bind,
            Self.describe, Self.execute, Self.close, Self.copyData, Self.copyDone, Self.copyFail:
            true
        default:
            false
        }
    }
}
