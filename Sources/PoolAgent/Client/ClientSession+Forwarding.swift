// Client to server: requests counted, responses owed recorded in order, statement names rewritten in transaction mode.

import NIOCore
import PGWire

extension ClientSession {
    /// Forwards client bytes to `server`.
    ///
    /// Every request that the server will answer is recorded in the server's response queue, so the agent
    /// knows when the server is idle and which responses belong to whom. In transaction mode named
    /// statements become the pool's shared server-side statements: a Parse the server already has is
    /// answered by the agent, a Bind or Describe of a statement the server lacks is preceded by the agent's
    /// own Parse, and Close only forgets the name. Unchanged bytes are forwarded as slices of the input.
    func forwardToServer(_ input: ByteBuffer, server: ServerConnection) {
        guard let pool = self.pool else { return }
        pool.stats.bytesIn += input.readableBytes
        let buffer = self.joinScanned(input)
        var cursor = buffer.readerIndex
        var runStart = cursor
        var terminate = false
        let limit = pool.settings.mode == .transaction ? pool.settings.maxPreparedStatements : 0
        var immediate = SynthesizedResponses()

        func passRun(until end: Int) {
            if end > runStart { server.write(buffer.getSlice(at: runStart, length: end - runStart)!) }
        }
        /// Makes sure the server has `statement`, sending the agent's Parse (and an LRU Close) if not.
        func ensure(_ statement: ClientStatement, swallow: Bool) {
            // The server is skipping until Sync: it would ignore the agent's messages too.
            if server.usesStatement(statement.id) || server.responses.skippingUntilSync { return }
            var out = server.allocator.buffer(capacity: statement.parse.queryBytes.count + 32)
            if let evicted = server.addStatement(statement.id, limit: limit) {
                TargetMessage(kind: TargetMessage.statement, name: StatementRegistry.serverName(evicted))
                    .encode(into: &out, type: FrontendMessageID.close)
                server.responses.append(.evict(evicted))
            }
            statement.parse.encode(into: &out)
            if !server.responses.append(.parse(swallow: swallow, statement: statement.id)) {
                server.forgetStatement(statement.id)  // skipped by the server after an error
            }
            server.write(out)
        }

        do {
            scan: while true {
                switch try self.nextScanned(in: buffer, cursor: &cursor) {
                case .message(let type, let start, let captured):
                    switch type {
                    case FrontendMessageID.query, FrontendMessageID.functionCall:
                        if server.responses.append(.query) {
                            server.outstanding += 1
                            server.requestStarted()
                        }
                    case FrontendMessageID.sync:
                        server.unsynced = false
                        // In COPY FROM STDIN the server ignores Sync; it answers nothing.
                        guard !server.copyIn else { continue }
                        server.outstanding += 1
                        server.requestStarted()
                        server.responses.append(.sync)
                    case FrontendMessageID.copyDone, FrontendMessageID.copyFail:
                        server.copyIn = false
                    case FrontendMessageID.flush:
                        break
                    case FrontendMessageID.execute:
                        server.unsynced = true
                        server.responses.append(.execute)
                    case FrontendMessageID.terminate:
                        passRun(until: start)
                        runStart = cursor
                        terminate = true
                        break scan
                    case FrontendMessageID.parse:
                        server.unsynced = true
                        guard limit > 0, var body = captured?.slice(of: buffer), !ParseMessage.isUnnamed(body) else {
                            server.responses.append(.parse(swallow: false, statement: nil))
                            continue
                        }
                        let parse = try ParseMessage.decode(from: &body)
                        // A Parse the server will skip must not change what the name means.
                        guard !parse.statement.isEmpty, !server.responses.skippingUntilSync else {
                            server.responses.append(.parse(swallow: false, statement: nil))
                            continue
                        }
                        passRun(until: start)
                        runStart = cursor
                        let id = pool.statements.id(for: parse)
                        var serverParse = parse
                        serverParse.statement = StatementRegistry.serverName(id)
                        let statement = ClientStatement(id: id, parse: serverParse)
                        self.statements[parse.statement] = statement
                        if server.usesStatement(id) {
                            if server.responses.appendSynthesized(BackendMessageID.parseComplete) {
                                immediate.append(BackendMessageID.parseComplete)
                            }
                        } else {
                            ensure(statement, swallow: false)
                        }
                    case FrontendMessageID.bind:
                        server.unsynced = true
                        guard limit > 0, var body = captured?.slice(of: buffer), !BindMessage.bindsUnnamedStatement(body) else {
                            server.responses.append(.bind)
                            continue
                        }
                        var bind = try BindMessage.decode(from: &body)
                        guard let statement = self.statements[bind.statement] else {
                            server.responses.append(.bind)
                            continue
                        }
                        passRun(until: start)
                        runStart = cursor
                        ensure(statement, swallow: true)
                        bind.statement = StatementRegistry.serverName(statement.id)
                        var out = server.allocator.buffer(capacity: bind.rest.readableBytes + 64)
                        bind.encode(into: &out)
                        server.write(out)
                        server.responses.append(.bind)
                    case FrontendMessageID.describe:
                        server.unsynced = true
                        if limit > 0, var body = captured?.slice(of: buffer), TargetMessage.namesStatement(body) {
                            var describe = try TargetMessage.decode(from: &body)
                            if describe.isStatement, let statement = self.statements[describe.name] {
                                passRun(until: start)
                                runStart = cursor
                                ensure(statement, swallow: true)
                                describe.name = StatementRegistry.serverName(statement.id)
                                var out = server.allocator.buffer(capacity: describe.name.utf8.count + 8)
                                describe.encode(into: &out, type: FrontendMessageID.describe)
                                server.write(out)
                            }
                        }
                        server.responses.append(.describe)
                    case FrontendMessageID.close:
                        server.unsynced = true
                        guard limit > 0, var body = captured?.slice(of: buffer), TargetMessage.namesStatement(body) else {
                            server.responses.append(.close(swallow: false))
                            continue
                        }
                        let close = try TargetMessage.decode(from: &body)
                        guard close.isStatement, !close.name.isEmpty, !server.responses.skippingUntilSync else {
                            server.responses.append(.close(swallow: false))
                            continue
                        }
                        // The server-side statement stays for others; the LRU closes it in time.
                        passRun(until: start)
                        runStart = cursor
                        self.statements.removeValue(forKey: close.name)
                        if server.responses.appendSynthesized(BackendMessageID.closeComplete) {
                            immediate.append(BackendMessageID.closeComplete)
                        }
                    default:
                        break
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
        if terminate {
            self.close(reason: "client sent Terminate")
        } else {
            self.releaseIfIdle()
        }
    }
}
