// One PostgreSQL server connection after login: forwards bytes to its client and runs the agent's own queries.

import Logging
import NIOCore
import NIOPosix
import PGWire
import PoolCore

#if canImport(Glibc)
import Glibc
#endif

/// A server connection on the agent's event loop.
///
/// Bytes from the server are scanned in place and forwarded to the linked client as slices. Each message is
/// told to the server's protocol machine, which says what to do with it (forward, swallow, rewrite, close)
/// and what follows from it (answers the agent owes the client, statement changes, the end of the agent's
/// own query). The machine alone decides whether the server may serve someone else.
final class ServerConnection: TransportDelegate, @unchecked Sendable {  // Confined to the agent's event loop.
    enum State: String {
        case opening, idle, linked, resetting, closed
    }

    private struct InternalQuery {
        var firstError: ErrorResponse?
        var completion: (ErrorResponse?, [[String?]]) -> Void
        /// The rows returned, when the query's caller reads them (`runProbe`); nil otherwise.
        var rows: [[String?]]?
        var timer: Scheduled<Void>?
        /// Queries whose ReadyForQuery has not arrived yet.
        var remaining: Int
    }

    /// How long the agent's own queries (settings, rollback, reset) may take before the server is closed.
    static let internalQueryTimeout: TimeAmount = .seconds(30)

    let id: Int
    /// Strong: the pool stays until its last server has closed (it forgets the server then).
    let pool: Pool
    let link: UpstreamLink
    /// The server's socket, a duplicate of libpq's; set by `attach`.
    private(set) var transport: Transport!
    let createdAt: Moment
    var lastUsedAt: Moment
    private(set) var state: State = .opening
    /// Current ParameterStatus values of this backend.
    private(set) var parameters: [String: String]
    /// What the server owes and whether it may be reused; written only through its events.
    private(set) var machine: ServerProtocolMachine
    var transactionStatus: TransactionStatus { self.machine.transactionStatus }
    let rewritesStatements: Bool
    /// Transaction mode: clients take turns on this server.
    let sharesServer: Bool
    /// The settings key of the client whose settings this server has; nil after a reset.
    var settingsKey: Int?
    /// Non-reported settings the agent applied for the current or last client, by lowercased name.
    var appliedSettings: [String: String] = [:]
    /// Transaction mode: the linked client's SQL may have changed session state (settings, locks, temporary
    /// tables …): it is read from the server before the server goes back (see `ClientSession.probeSessionState`).
    var sessionStateChanged = false
    /// Transaction mode: the server holds session state of its client (it is pinned); reset before reuse.
    var holdsSessionState = false
    /// The pool relays notifications through its listener: notifications from this server are not forwarded.
    let relaysNotifications: Bool
    /// Cancel requests sent to this backend and not yet acknowledged; the server is not handed to
    /// another client until they are, so a late cancel cannot hit the next client's query.
    private var cancelsInFlight = 0
    private var releaseAfterCancel: (reusable: Bool, reason: String?)?
    /// Tells a cancel's completion from a later one's.
    private var cancelGeneration = 0
    /// A cancel request was sent but not seen through: the server must not serve another client.
    private var cancelMayStillLand = false
    /// libpq's blocking PQcancel runs on a worker (only where the agent cannot send cancels itself).
    private var blockingCancelRunning = false
    private var cancelDeadline: Scheduled<Void>?
    private var scanner: MessageScanner
    /// The message types the scanner holds whole, besides the rows of a probe.
    private let capturedTypes: MessageTypeSet
    private var internalQuery: InternalQuery?
    /// The linked client; cleared when it leaves or the server closes (a strong reference: no side table
    /// on every session, whose reference counting is on the hot path).
    private(set) var client: ClientSession?
    private(set) var closeReason: String?
    /// The server (or the network) closed the connection, not the agent.
    private(set) var closedByServer = false
    /// The server closed while idle in the pool: it was dead before anyone used it.
    private(set) var diedWhileIdle = false
    /// When the current request started (sent with nothing owed), for `query_timeout`.
    private(set) var busySince: Moment?
    /// When the current transaction's first request started.
    private var transactionStartedAt: Moment?
    private let logger: Logger

    init(id: Int, pool: Pool, link: UpstreamLink, logger: Logger) {
        self.id = id
        self.pool = pool
        self.link = link
        self.parameters = link.parameters
        self.sharesServer = pool.settings.mode == .transaction
        self.rewritesStatements = self.sharesServer && pool.settings.maxPreparedStatements > 0
        self.relaysNotifications = self.sharesServer && pool.settings.listener
        self.machine = ServerProtocolMachine(statementLimit: pool.settings.maxPreparedStatements)
        var captured = [
            BackendMessageID.readyForQuery, BackendMessageID.parameterStatus, BackendMessageID.errorResponse,
            BackendMessageID.commandComplete, BackendMessageID.emptyQueryResponse,
        ]
        if self.rewritesStatements {
            // Every message after which the agent may cut (to swallow it or add an answer) is held whole.
            captured += [
                BackendMessageID.parseComplete, BackendMessageID.bindComplete, BackendMessageID.closeComplete,
                BackendMessageID.rowDescription, BackendMessageID.noData, BackendMessageID.portalSuspended,
            ]
        }
        if self.sharesServer { captured.append(BackendMessageID.notificationResponse) }
        self.capturedTypes = MessageTypeSet(captured)
        self.scanner = MessageScanner(captureTypes: self.capturedTypes, maxCaptureLength: 8 << 20)
        self.createdAt = .now
        self.lastUsedAt = .now
        var logger = logger
        logger[metadataKey: LogKey.server] = "\(id)"
        logger[metadataKey: LogKey.backendPID] = "\(link.backendPID)"
        self.logger = logger
    }

    func attach(transport: Transport) {
        self.transport = transport
        self.state = .idle
    }

    var backendPID: Int32 { self.link.backendPID }

    // MARK: Linking

    /// Gives this server to `client`; its bytes flow to the client from now on.
    func link(to client: ClientSession) {
        precondition(self.state == .idle, "linking a server that is \(self.state)")
        self.state = .linked
        self.client = client
        self.lastUsedAt = self.pool.eventLoop.time
    }

    /// True when the machine says the server may serve someone else and the agent holds no part of a message.
    var isIdleForRelease: Bool {
        self.machine.checkRelease() && self.internalQuery == nil && self.scanner.isAtBoundary
    }

    /// Something sent to the server is still unanswered (for `query_timeout`, cancels and idle timeouts).
    var isBusy: Bool { !self.machine.isIdle || self.internalQuery != nil }
    /// No answer is owed to anything sent, the agent's own queries included.
    var owesNothing: Bool { self.machine.owed.isEmpty && self.internalQuery == nil }

    /// The client is done with this server. `clean` is false when the client stopped in the middle of a
    /// message. The server is rolled back and reset (session state the agent does not track is cleared), or
    /// closed when it is busy or in an unknown state.
    func clientLeft(clean: Bool) {
        guard self.state == .linked else { return }
        self.client = nil
        self.setReading(true)
        guard clean, self.machine.isIdle, self.scanner.isAtBoundary, self.internalQuery == nil else {
            self.returnToPool(reusable: false, reason: self.machine.doubt.map { "protocol state in doubt: \($0)" } ?? "client left during a query")
            return
        }
        let sessionMode = self.pool.settings.mode == .session
        var queries: [String] = []
        if self.machine.transactionStatus != .idle { queries.append("ROLLBACK") }
        // Session state a transaction-mode client made (or may have made) goes with it: locks, temporary
        // tables, cursors, SQL statements, roles, settings, listens.
        let discard = self.sharesServer && (self.sessionStateChanged || self.holdsSessionState)
        if sessionMode && !self.pool.settings.resetQuery.isEmpty {
            queries.append(self.pool.settings.resetQuery)
        } else if discard {
            queries.append("DISCARD ALL")
        } else {
            // A client's PREPARE or DEALLOCATE could have changed the agent's statements; its LISTEN would
            // deliver notifications to the next client.
            if self.machine.statementsInDoubt { queries.append("DEALLOCATE ALL") }
            if self.machine.listening { queries.append("UNLISTEN *") }
        }
        guard !queries.isEmpty else {
            self.returnToPool(reusable: true, reason: nil)
            return
        }
        self.state = .resetting
        self.runInternal(queries) { [self] error in
            if let error {
                self.returnToPool(reusable: false, reason: "reset failed: \(error.message)")
            } else if self.machine.transactionStatus != .idle {
                self.returnToPool(reusable: false, reason: "still \(self.machine.transactionStatus) after reset")
            } else {
                if sessionMode || discard {
                    self.appliedSettings = [:]
                    self.settingsKey = nil
                    self.sessionStateChanged = false
                    self.holdsSessionState = false
                }
                if queries.contains("DEALLOCATE ALL") || sessionMode || discard { self.machine.sessionStateReset() }
                self.returnToPool(reusable: true, reason: nil)
            }
        }
    }

    /// Gives the server back to its pool, or holds it until cancel requests sent to it have completed.
    private func returnToPool(reusable: Bool, reason: String?) {
        if self.cancelsInFlight > 0 {
            self.releaseAfterCancel = (reusable, reason)
            return
        }
        if self.cancelMayStillLand, reusable {
            self.returnToPool(reusable: false, reason: "a cancel request sent to it may still arrive")
            return
        }
        if reusable { self.state = .idle }
        self.lastUsedAt = self.pool.eventLoop.time
        self.pool.release(self, reusable: reusable, reason: reason)
    }

    // MARK: Cancel

    /// Sends a CancelRequest to this backend: by the agent itself from the loop where it knows the key, else
    /// with libpq's PQcancel on a worker. Either way it ends within the pool's connect_timeout. The server
    /// goes back to the pool only after its cancel has ended; a request that may still land later (sent but
    /// not seen through) leaves the server closed when released, never handed to another client.
    func cancel(threadPool: NIOThreadPool, logger: Logger) {
        // One cancel at a time per backend: more would only hold the server longer.
        guard self.state != .closed, self.cancelsInFlight == 0, let transport = self.transport, transport.isOpen else { return }
        self.cancelsInFlight = 1
        self.cancelGeneration += 1
        let generation = self.cancelGeneration
        let pid = self.backendPID
        let timeout = self.pool.settings.connectTimeout.timeAmount
        let overTLS = self.link.cancelKey != nil && self.link.cancelTLS != nil
        let ended: @Sendable (String?, Bool) -> Void = { [self] failure, uncertain in
            guard self.cancelGeneration == generation, self.cancelsInFlight > 0 else { return }
            if let failure {
                logger.warning("cancel request failed", metadata: [LogKey.backendPID: "\(pid)", LogKey.error: "\(failure)"])
            } else {
                logger.debug("cancel request sent", metadata: [LogKey.backendPID: "\(pid)", "tls": "\(overTLS)"])
            }
            self.cancelEnded(uncertain: uncertain)
        }
        if let key = self.link.cancelKey {
            CancelSender.send(
                processID: pid, secretKey: key, toPeerOf: transport.fd, tls: self.link.cancelTLS, loop: transport.loop, timeout: timeout
            ) { outcome in
                ended(outcome.failure, outcome.mayStillLand)
            }
            return
        }
        // One PQcancel per server at a time, even past its deadline: a stuck one must not be joined by more
        // on the shared worker threads.
        guard let handle = self.link.cancelHandle, !self.blockingCancelRunning else {
            self.cancelsInFlight = 0
            return
        }
        self.blockingCancelRunning = true
        threadPool.runIfActive(eventLoop: transport.loop) { handle.cancel() }.whenComplete { [self] result in
            self.blockingCancelRunning = false
            switch result {
            case .success(let failure): ended(failure, false)
            case .failure(let error): ended("\(error)", false)
            }
        }
        // PQcancel's connect has no timeout of its own: past the deadline the server is given up on.
        self.cancelDeadline = transport.loop.scheduleTask(in: timeout) {
            ended("PQcancel did not return within \(timeout.nanoseconds / 1_000_000_000) s", true)
        }
    }

    private func cancelEnded(uncertain: Bool) {
        self.cancelsInFlight = 0
        self.cancelDeadline?.cancel()
        self.cancelDeadline = nil
        if uncertain { self.cancelMayStillLand = true }
        if let pending = self.releaseAfterCancel {
            self.releaseAfterCancel = nil
            if self.state == .closed { return }
            self.returnToPool(reusable: pending.reusable, reason: pending.reason)
        }
    }

    // MARK: Agent queries

    /// An empty query on a server about to be handed out; `completion(true)` when it answered.
    func prePing(_ completion: @escaping (Bool) -> Void) {
        self.runInternal([""]) { error in completion(error == nil) }
    }

    /// Sends simple queries whose responses the client must not see; `completion` gets the first error.
    func runInternal(_ queries: [String], completion: @escaping (ErrorResponse?) -> Void) {
        self.runInternal(queries, rows: false) { error, _ in completion(error) }
    }

    /// Runs one query of the agent's and gives `completion` its rows as text (or the error).
    func runProbe(_ query: String, completion: @escaping (ErrorResponse?, [[String?]]) -> Void) {
        self.runInternal([query], rows: true, completion: completion)
    }

    private func runInternal(_ queries: [String], rows: Bool, completion: @escaping (ErrorResponse?, [[String?]]) -> Void) {
        var buffer = self.transport.allocator.buffer(capacity: 64)
        for query in queries {
            guard self.machine.send(.agentQuery) == .recorded else {
                completion(ErrorResponse(.error, sqlState: "08006", message: "the server cannot take the agent's query"), [])
                self.close(reason: self.machine.doubt.map { "protocol state in doubt: \($0)" } ?? "agent query refused")
                return
            }
            buffer.writeQuery(query)
        }
        let timer = self.transport.loop.scheduleTask(in: Self.internalQueryTimeout) { [self] in
            guard let query = self.internalQuery else { return }
            self.internalQuery = nil
            query.completion(ErrorResponse(.error, sqlState: "57014", message: "the server did not answer the agent's query within 30 s"), [])
            self.close(reason: "agent query timed out")
        }
        self.internalQuery = InternalQuery(firstError: nil, completion: completion, rows: rows ? [] : nil, timer: timer, remaining: queries.count)
        if rows { self.scanner.captureTypes.insert(BackendMessageID.dataRow) }
        self.transport.writeAndFlush(buffer)
    }

    // MARK: Traffic

    /// Notes that a request starts now if nothing was in flight, for `query_timeout` and the histograms.
    func requestStarted() {
        guard self.busySince == nil else { return }
        let now = self.pool.eventLoop.time
        self.busySince = now
        if self.transactionStartedAt == nil { self.transactionStartedAt = now }
    }

    /// Everything sent has been answered: a query (or pipeline) is done, and a transaction if idle now.
    private func requestFinished() {
        let now = self.pool.eventLoop.time
        if let since = self.busySince {
            self.pool.stats.queries += 1
            self.pool.stats.queryTime.record(microseconds: since.microseconds(to: now))
        }
        self.busySince = nil
        if self.machine.transactionStatus == .idle, let since = self.transactionStartedAt {
            self.pool.stats.transactions += 1
            self.pool.stats.transactionTime.record(microseconds: since.microseconds(to: now))
            self.transactionStartedAt = nil
        }
    }

    /// Tells the machine about a message sent to the server; see `ServerProtocolMachine.send`.
    func record(_ pending: ServerProtocolMachine.Pending) -> ServerProtocolMachine.SendOutcome {
        self.machine.send(pending)
    }

    /// True, and marked as just used, when the agent's statement `id` exists on this server.
    /// Whether statement `id` exists here for a message sent now (see `ServerProtocolMachine.presence`).
    func presence(of id: Int) -> ServerProtocolMachine.Presence { self.machine.presence(of: id) }

    /// Notes that statement `id`, present here, is closed and parsed again for a client's Parse; returns
    /// whether its earlier Parse had been answered.
    func reprepareStatement(_ id: Int) -> Bool { self.machine.reprepare(id) }

    /// Notes that statement `id` is being prepared here; returns those to close first (see `ServerProtocolMachine.prepare`).
    func prepareStatement(_ id: Int) -> [(id: Int, confirmed: Bool)] { self.machine.prepare(id) }

    var preparedCount: Int { self.machine.preparedCount }
    var skippingUntilSync: Bool { self.machine.skippingUntilSync }
    /// What went to the client ends with a whole message: something else may go in between.
    var atMessageBoundary: Bool { self.scanner.isAtBoundary }
    /// Why the protocol machine gave up on this server, if it did.
    var doubt: String? { self.machine.doubt }
    var syncsSent: Int { self.machine.syncsSent }

    /// Queues bytes for the server; `flush` sends them.
    func write(_ buffer: ByteBuffer) {
        self.transport.write(buffer)
    }

    func flush() {
        self.transport.flush()
    }

    var isWritable: Bool { self.transport.isWritable }

    var allocator: ByteBufferAllocator { Transport.allocator }

    /// Pauses or resumes reading from the server, so a slow client holds back the server, not memory.
    func setReading(_ on: Bool) {
        self.transport?.setReading(on)
    }

    func received(_ input: ByteBuffer) {
        self.pool.stats.bytesOut += input.readableBytes
        let buffer = self.scanner.join(input)
        var cursor = buffer.readerIndex
        // Bytes from `runStart` on are not yet written to the client.
        var runStart = cursor
        var forwardableEnd = cursor
        var internalDone = false
        var fence = false
        /// Where the last ReadyForQuery of this read starts and ends.
        var lastReady: (start: Int, end: Int)? = nil
        let client = self.internalQuery == nil ? self.client : nil
        do {
            scan: while true {
                switch try self.scanner.next(in: buffer, cursor: &cursor) {
                case .message(let type, let start, let captured):
                    // Most tags (SELECT, INSERT, COMMIT …) are none of those `commandTag` looks for: one byte tells.
                    if type == BackendMessageID.commandComplete, let captured, let first = captured.firstByte(in: buffer),
                        first == UInt8(ascii: "D") || first == UInt8(ascii: "R") || first == UInt8(ascii: "P") || first == UInt8(ascii: "L")
                            || (first == UInt8(ascii: "S") && self.sharesServer)
                    {
                        self.commandTag(captured, in: buffer, client: client)
                    }
                    if type == BackendMessageID.dataRow, self.internalQuery?.rows != nil, let captured {
                        var body = captured.slice(of: buffer)
                        self.internalQuery?.rows?.append(try DataRow.decode(from: &body))
                    }
                    if type == BackendMessageID.notificationResponse, self.sharesServer,
                        self.relaysNotifications || !(client?.listened ?? false)
                    {
                        // The pool's listener delivers notifications; or one for a LISTEN left behind by another
                        // client (one a function ran, with no tag to see): not this client's. The server is
                        // unlistened before it serves anyone.
                        self.machine.commandTag(.listen)
                        if let client, start > runStart { client.writeFromServer(buffer.getSlice(at: runStart, length: start - runStart)!) }
                        runStart = cursor
                        continue
                    }
                    if self.machine.passesThrough(type) { continue }
                    let reaction: ServerProtocolMachine.Reaction
                    var errorMessage: String? = nil
                    switch type {
                    case BackendMessageID.readyForQuery:
                        lastReady = (start, cursor)
                        reaction = self.machine.readyForQuery(try TransactionStatus.decode(captured!, in: buffer))
                    case BackendMessageID.parameterStatus:
                        var body = captured!.slice(of: buffer)
                        self.parameterStatus(try ParameterStatus.decode(from: &body), client: client)
                        continue
                    case BackendMessageID.errorResponse:
                        var body = captured!.slice(of: buffer)
                        let error = try ErrorResponse.decode(from: &body)
                        if self.internalQuery != nil, self.internalQuery?.firstError == nil, error.severity == .error || error.severity == .fatal {
                            self.internalQuery?.firstError = error
                        }
                        errorMessage = error.message
                        reaction = self.machine.errorResponse(fatal: error.severity == .fatal || error.severity == .panic, sqlState: error.sqlState)
                    case BackendMessageID.commandComplete:
                        reaction = self.machine.commandComplete()
                    default:
                        reaction = self.machine.message(type)
                    }
                    // Most messages: forwarded, nothing else follows from them.
                    if case .forward = reaction, errorMessage == nil, !self.machine.hasEvents { continue }
                    // An error naming the agent's statements names the client's instead; renamed before the
                    // events resolve a duplicate's intent.
                    var renamed: ByteBuffer? = nil
                    if let errorMessage, let client, self.rewritesStatements {
                        var duplicate: Int? = nil
                        if case .rewriteDuplicate(let intent) = reaction { duplicate = intent }
                        if duplicate != nil || errorMessage.contains(StatementRegistry.prefix) {
                            renamed = client.renamingStatements(
                                in: captured!.slice(of: buffer), message: errorMessage, duplicate: duplicate, allocator: self.allocator
                            )
                        }
                    }
                    var answersFirst = SynthesizedResponses()
                    var answers = SynthesizedResponses()
                    if self.machine.hasEvents {
                        for event in self.machine.takeEvents() {
                            switch event {
                            case .answer(let type):
                                answers.append(type)
                            case .answerFirst(let type):
                                answersFirst.append(type)
                            case .intent(let id, let done):
                                guard client?.intentResolved(id, done: done) ?? true else {
                                    self.close(reason: "protocol state in doubt: a statement answer out of step with the client's")
                                    return
                                }
                            case .agentQueryDone:
                                if var query = self.internalQuery {
                                    query.remaining -= 1
                                    self.internalQuery = query
                                    internalDone = query.remaining == 0
                                }
                            case .clientStatementsDropped:
                                client?.statementsDropped()
                            case .sendFence:
                                fence = true
                            }
                        }
                    }
                    if let client, !answersFirst.isEmpty {
                        if start > runStart { client.writeFromServer(buffer.getSlice(at: runStart, length: start - runStart)!) }
                        runStart = start
                        client.writeFromServer(answersFirst.encoded(allocator: self.allocator))
                    }
                    switch reaction {
                    case .forward, .rewriteDuplicate:
                        if let client, let renamed {
                            if start > runStart { client.writeFromServer(buffer.getSlice(at: runStart, length: start - runStart)!) }
                            runStart = cursor
                            client.writeFromServer(renamed)
                        }
                    case .swallow:
                        if let client, start > runStart { client.writeFromServer(buffer.getSlice(at: runStart, length: start - runStart)!) }
                        runStart = cursor
                    case .close:
                        let reason = self.machine.doubt ?? "the protocol machine refused a server message"
                        if let client {
                            if start > runStart { client.writeFromServer(buffer.getSlice(at: runStart, length: start - runStart)!) }
                            client.flushFromServer()
                        }
                        self.close(reason: "protocol state in doubt: \(reason)")
                        return
                    }
                    if let client, !answers.isEmpty {
                        if cursor > runStart { client.writeFromServer(buffer.getSlice(at: runStart, length: cursor - runStart)!) }
                        runStart = cursor
                        client.writeFromServer(answers.encoded(allocator: self.allocator))
                    }
                case .end(let end):
                    forwardableEnd = end
                    break scan
                }
            }
        } catch {
            self.close(reason: "protocol error from server: \(error)")
            return
        }
        if fence {
            var query = self.allocator.buffer(capacity: 8)
            query.writeQuery("")
            self.transport.writeAndFlush(query)
        }
        if self.busySince != nil, self.machine.checkIdle(), self.internalQuery == nil { self.requestFinished() }
        if let client {
            var end = forwardableEnd
            // The request may have changed session state: its ReadyForQuery waits until the state is read back,
            // so the client's next request (and everyone else's) sees the outcome, pins included.
            if self.sessionStateChanged, let ready = lastReady, ready.end == forwardableEnd, ready.start >= runStart,
                self.machine.checkRelease()
            {
                end = ready.start
                client.holdReady(buffer.getSlice(at: ready.start, length: ready.end - ready.start)!)
            }
            if end > runStart {
                client.writeFromServer(buffer.getSlice(at: runStart, length: end - runStart)!)
            }
            client.flushFromServer()
            client.serverAnswered()
        } else if internalDone, let query = self.internalQuery {
            self.internalQuery = nil
            query.timer?.cancel()
            if query.rows != nil { self.scanner.captureTypes = self.capturedTypes }
            query.completion(query.firstError, query.rows ?? [])
        }
    }

    /// A ParameterStatus: the server's value now, and the client's if one is linked.
    private func parameterStatus(_ status: ParameterStatus, client: ClientSession?) {
        self.parameters[status.name] = status.value
        if let client {
            client.parameterChanged(name: status.name, value: status.value)
        } else if self.internalQuery == nil || self.state == .resetting {
            // Changed with nobody linked (the agent's ROLLBACK undid a SET): sync again.
            self.settingsKey = nil
        }
    }

    /// Command tags that change more than the transaction: statements, listening, settings.
    private func commandTag(_ captured: MessageBody, in buffer: ByteBuffer, client: ClientSession?) {
        // Read in place; the tags of everyday statements (SELECT, INSERT, UPDATE, BEGIN, COMMIT …) start with
        // none of the letters below and cost one comparison.
        captured.withBytes(in: buffer) { tag in
            guard let first = tag.first else { return }
            switch first {
            case UInt8(ascii: "D"), UInt8(ascii: "L"), UInt8(ascii: "P"), UInt8(ascii: "R"):
                break
            case UInt8(ascii: "S") where Self.tag(tag, is: "SET\0"):
                break
            default:
                return
            }
            self.sessionTag(tag, client: client)
        }
    }

    /// A tag that may matter beyond its statement: what it did to the server's statements, LISTEN and settings.
    private func sessionTag(_ tag: UnsafeRawBufferPointer, client: ClientSession?) {
        func starts(_ prefix: StaticString) -> Bool { Self.tag(tag, startsWith: prefix) }
        func equals(_ text: StaticString) -> Bool { Self.tag(tag, is: text) }
        if starts("DISCARD ALL") || starts("DEALLOCATE ALL") {
            self.machine.commandTag(.statementsDropped)
        } else if starts("DISCARD") || starts("DEALLOCATE") || starts("PREPARE") {
            self.machine.commandTag(.statementsChanged)
        } else if equals("DO\0") {
            // A DO block can run PREPARE, DEALLOCATE and LISTEN without their tags.
            self.machine.commandTag(.statementsChanged)
            self.machine.commandTag(.listen)
        } else if starts("LISTEN") {
            self.machine.commandTag(.listen)
            client?.listened = true
        }
        // Tags that say session state changed, whatever the lexer made of the text: read it before release.
        if self.sharesServer, client != nil, !self.sessionStateChanged,
            equals("SET\0") || equals("RESET\0") || starts("DISCARD") || equals("PREPARE\0") || starts("DEALLOCATE")
                || equals("DO\0") || starts("DECLARE CURSOR") || (!self.relaysNotifications && starts("LISTEN"))
        {
            self.sessionStateChanged = true
        }
        // DISCARD ALL and RESET undo settings the agent applied: sync again next time.
        if starts("DISCARD ALL") || starts("RESET") {
            self.appliedSettings = [:]
            self.settingsKey = nil
        }
    }

    private static func tag(_ tag: UnsafeRawBufferPointer, startsWith prefix: StaticString) -> Bool {
        let count = prefix.utf8CodeUnitCount
        guard tag.count >= count else { return false }
        return memcmp(tag.baseAddress!, prefix.utf8Start, count) == 0
    }

    private static func tag(_ tag: UnsafeRawBufferPointer, is text: StaticString) -> Bool {
        tag.count == text.utf8CodeUnitCount && Self.tag(tag, startsWith: text)
    }

    // MARK: Closing

    /// Records why the server will be closed, before the pool decides to close it.
    func noteCloseReason(_ reason: String) {
        if self.closeReason == nil { self.closeReason = reason }
    }

    /// Closes the connection for `reason`: the agent's socket first, then libpq's side.
    func close(reason: String) {
        guard self.state != .closed else { return }
        if self.closeReason == nil { self.closeReason = reason }
        if let transport = self.transport, transport.isOpen {
            transport.close()
        } else {
            self.socketClosed()
        }
    }

    // MARK: Transport events

    func transportRead(_ buffer: ByteBuffer) {
        self.received(buffer)
    }

    func transportWritable() {
        self.client?.resumeReading()
    }

    func transportClosed(error: String?) {
        if let error { self.noteCloseReason("server connection error: \(error)") }
        self.socketClosed()
    }

    /// The socket is gone (closed by us or by the server).
    func socketClosed() {
        guard self.state != .closed else { return }
        let previous = self.state
        self.state = .closed
        self.closedByServer = self.closeReason == nil
        let reason = self.closeReason ?? "server closed the connection"
        self.closeReason = reason
        self.link.finish()
        if previous == .linked || previous == .resetting || self.internalQuery != nil {
            self.logger.info("server connection closed", metadata: [LogKey.reason: "\(reason)"])
        } else {
            self.logger.debug("server connection closed", metadata: [LogKey.reason: "\(reason)"])
        }
        if previous == .idle { self.diedWhileIdle = true }
        let client = self.client
        self.client = nil
        if let query = self.internalQuery {
            // Whoever waits for the agent's query learns that it failed.
            self.internalQuery = nil
            query.timer?.cancel()
            query.completion(ErrorResponse(.error, sqlState: "08006", message: "server connection closed: \(reason)"), [])
        }
        self.pool.serverClosed(self)
        client?.serverClosed(reason: reason)
    }
}

/// The ParseComplete and CloseComplete messages the agent owes a client at one point of the stream.
struct SynthesizedResponses {
    private var types: [UInt8] = []

    var isEmpty: Bool { self.types.isEmpty }

    mutating func append(_ type: UInt8) { self.types.append(type) }

    func encoded(allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 5 * self.types.count)
        for type in self.types { buffer.writeMessage(type) { _ in } }
        return buffer
    }
}
