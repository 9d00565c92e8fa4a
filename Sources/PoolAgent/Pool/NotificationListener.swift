// One upstream connection per transaction-mode pool that LISTENs for all of its clients and fans notifications out.

import Logging
import NIOCore
import PGWire
import PoolCore

/// Serves `LISTEN` in transaction mode: the pool's clients listen here, not on the servers they share.
///
/// The connection is opened when a client first listens and closed when no channel is wanted. It listens on
/// the union of its subscribers' channels, one batch of `LISTEN`/`UNLISTEN` at a time; a client whose
/// `LISTEN` names a channel not yet listened on waits (its input stalls) until the batch has been answered,
/// so a `NOTIFY` committed after its `LISTEN` completes always reaches it. Lost, the connection is opened
/// again with every channel, and each subscriber gets a notice that notifications may have been missed.
final class NotificationListener: TransportDelegate, @unchecked Sendable {  // Confined to the agent's event loop.
    private enum State {
        case closed, connecting, open
    }

    unowned let pool: Pool
    private var state: State = .closed
    private var transport: Transport?
    private var link: UpstreamLink?
    private var scanner = MessageScanner(
        captureTypes: MessageTypeSet([
            BackendMessageID.notificationResponse, BackendMessageID.readyForQuery, BackendMessageID.errorResponse,
        ]),
        maxCaptureLength: 1 << 20
    )
    /// Clients by channel.
    private(set) var subscribers: [String: [Int: ClientSession]] = [:]
    /// Channels the connection listens on, as its server confirmed.
    private var active: Set<String> = []
    /// The batch sent and not yet answered: what it listens on and unlistens.
    private var inFlight: (listen: Set<String>, unlisten: Set<String>)?
    private var batchError: ErrorResponse?
    /// Clients whose input waits for a channel to become active.
    private var waiters: [Int: ClientSession] = [:]
    /// Why the connection is down while clients want it; nil while it is up or not wanted.
    private(set) var failure: String?
    /// When it went down, for the notice sent once it is back.
    private var downSince: Moment?
    private var retry: Scheduled<Void>?
    private var retryDelay: TimeAmount = .milliseconds(250)
    private(set) var backendPID: Int32?
    private let logger: Logger

    init(pool: Pool) {
        self.pool = pool
        var logger = pool.logger
        logger[metadataKey: "listener"] = "true"
        self.logger = logger
    }

    var channelCount: Int { self.subscribers.count }
    var isOpen: Bool { self.state == .open }

    // MARK: Subscriptions

    /// `client` listens on `channel`; true when notifications on it are already delivered (or cannot be for
    /// now: the client then has a notice and goes on), false when the client must wait for `listenerReady`.
    func subscribe(_ client: ClientSession, to channel: String) -> Bool {
        self.subscribers[channel, default: [:]][client.id] = client
        if self.active.contains(channel) { return true }
        if let failure = self.failure {
            client.deliverNotice(.warning, "LISTEN \"\(channel)\" is not in effect yet: the listener connection of pool \"\(self.pool.name)\" is down (\(failure)); it is retried, and notifications before it is back are lost")
            return true
        }
        self.waiters[client.id] = client
        self.sync()
        return false
    }

    func unsubscribe(_ client: ClientSession, from channel: String) {
        guard var clients = self.subscribers[channel], clients.removeValue(forKey: client.id) != nil else { return }
        self.subscribers[channel] = clients.isEmpty ? nil : clients
        if clients.isEmpty { self.sync() }
    }

    /// The client left or ran `UNLISTEN *`.
    func unsubscribeAll(_ client: ClientSession, channels: Set<String>) {
        self.waiters.removeValue(forKey: client.id)
        for channel in channels { self.unsubscribe(client, from: channel) }
    }

    // MARK: The connection

    /// Sends the next batch when the channels wanted differ from those listened on; opens or closes the
    /// connection as needed.
    private func sync() {
        switch self.state {
        case .closed:
            if !self.subscribers.isEmpty, self.retry == nil { self.connect() }
            return
        case .connecting:
            return
        case .open:
            break
        }
        guard self.inFlight == nil, let transport = self.transport else { return }
        let wanted = Set(self.subscribers.keys)
        let listen = wanted.subtracting(self.active)
        let unlisten = self.active.subtracting(wanted)
        if wanted.isEmpty {
            self.close(reason: "no client listens")
            return
        }
        guard !listen.isEmpty || !unlisten.isEmpty else { return }
        let statements = listen.sorted().map { "LISTEN " + SettingsPlan.identifier($0) }
            + unlisten.sorted().map { "UNLISTEN " + SettingsPlan.identifier($0) }
        var buffer = transport.allocator.buffer(capacity: 64)
        buffer.writeQuery(statements.joined(separator: "; "))
        self.inFlight = (listen, unlisten)
        self.batchError = nil
        transport.writeAndFlush(buffer)
    }

    private func connect() {
        self.state = .connecting
        self.pool.connectUpstream { [self] result in
            switch result {
            case .success(let link): self.attach(link)
            case .failure(let error): self.connectFailed(error.message)
            }
        }
    }

    private func attach(_ link: UpstreamLink) {
        guard self.state == .connecting, !self.subscribers.isEmpty else {
            link.finish()
            self.state = .closed
            return
        }
        do {
            let tls = try link.adoptTLS()
            let transport = try Transport.start(fd: link.handOffSocket(), loop: self.pool.eventLoop, noDelay: true, delegate: self)
            if let tls { transport.startTLS(session: tls) }
            self.transport = transport
        } catch {
            link.finish()
            self.connectFailed("cannot register the listener socket: \(error)")
            return
        }
        self.link = link
        self.backendPID = link.backendPID
        self.state = .open
        self.scanner = MessageScanner(captureTypes: self.scanner.captureTypes, maxCaptureLength: self.scanner.maxCaptureLength)
        self.retryDelay = .milliseconds(250)
        if let since = self.downSince {
            self.pool.stats.listenerReconnects += 1
            let message = "the listener connection of pool \"\(self.pool.name)\" is back after \(since.duration(to: .now).configText) down (\(self.failure ?? "closed")): notifications sent meanwhile may have been missed"
            self.logger.warning("listener connection re-established", metadata: [LogKey.backendPID: "\(link.backendPID)"])
            self.pool.onListenerChange?(true, self.failure)
            for client in self.allSubscribers { client.deliverNotice(.warning, message) }
        } else {
            self.logger.debug("listener connection opened", metadata: [LogKey.backendPID: "\(link.backendPID)"])
        }
        self.failure = nil
        self.downSince = nil
        self.sync()
    }

    private var allSubscribers: [ClientSession] {
        var seen: [Int: ClientSession] = [:]
        for clients in self.subscribers.values { seen.merge(clients) { first, _ in first } }
        return seen.keys.sorted().map { seen[$0]! }
    }

    private func connectFailed(_ message: String) {
        self.state = .closed
        self.wentDown(message)
    }

    /// The connection is gone or could not be made while clients listen: they go on (with a notice) and it
    /// is tried again, backing off up to 30 s.
    private func wentDown(_ reason: String) {
        self.active = []
        self.inFlight = nil
        guard !self.subscribers.isEmpty else {
            self.failure = nil
            self.downSince = nil
            return
        }
        if self.failure == nil {
            self.logger.warning("listener connection down", metadata: [LogKey.error: "\(reason)"])
            self.pool.onListenerChange?(false, reason)
        }
        self.failure = reason
        if self.downSince == nil { self.downSince = .now }
        let waiting = self.waiters.values
        self.waiters = [:]
        for client in waiting {
            client.deliverNotice(.warning, "LISTEN is not in effect yet: the listener connection of pool \"\(self.pool.name)\" is down (\(reason)); it is retried, and notifications before it is back are lost")
            client.listenerReady()
        }
        let delay = self.retryDelay
        self.retryDelay = .nanoseconds(min(self.retryDelay.nanoseconds * 2, TimeAmount.seconds(30).nanoseconds))
        self.retry = self.pool.eventLoop.scheduleTask(in: delay) { [self] in
            self.retry = nil
            if self.state == .closed { self.sync() }
        }
    }

    /// Closes the connection (the pool shuts down, or nobody listens any more).
    func close(reason: String) {
        self.retry?.cancel()
        self.retry = nil
        self.subscribers = [:]
        self.waiters = [:]
        guard let transport = self.transport else {
            self.state = .closed
            return
        }
        self.logger.debug("listener connection closing", metadata: [LogKey.reason: "\(reason)"])
        self.transport = nil
        self.state = .closed
        self.active = []
        self.inFlight = nil
        transport.close()
        self.link?.finish()
        self.link = nil
    }

    // MARK: Transport events

    func transportRead(_ input: ByteBuffer) {
        let buffer = self.scanner.join(input)
        var cursor = buffer.readerIndex
        do {
            scan: while true {
                switch try self.scanner.next(in: buffer, cursor: &cursor) {
                case .message(let type, let start, let body):
                    switch type {
                    case BackendMessageID.notificationResponse:
                        var slice = body!.slice(of: buffer)
                        let notification = try NotificationResponse.decode(from: &slice)
                        guard let clients = self.subscribers[notification.channel] else { continue }
                        // One copy, shared by every client's queue.
                        var message = ByteBufferAllocator().buffer(capacity: cursor - start)
                        message.writeImmutableBuffer(buffer.getSlice(at: start, length: cursor - start)!)
                        for client in clients.values { client.deliverAsync(message) }
                        self.pool.stats.notifications += clients.count
                    case BackendMessageID.errorResponse:
                        var slice = body!.slice(of: buffer)
                        let error = try ErrorResponse.decode(from: &slice)
                        if error.severity == .fatal || error.severity == .panic {
                            self.transportFailed("the server ended the listener connection: \(error.message)")
                            return
                        }
                        if self.batchError == nil { self.batchError = error }
                    case BackendMessageID.readyForQuery:
                        self.batchAnswered()
                    default:
                        continue
                    }
                case .end:
                    break scan
                }
            }
        } catch {
            self.transportFailed("protocol error on the listener connection: \(error)")
        }
    }

    private func batchAnswered() {
        guard let batch = self.inFlight else { return }
        self.inFlight = nil
        if let error = self.batchError {
            // The batch is one implicit transaction: none of it took effect.
            self.logger.warning("listener could not listen", metadata: [LogKey.error: "\(error.message)"])
            for channel in batch.listen {
                for client in self.subscribers[channel]?.values.map({ $0 }) ?? [] {
                    client.deliverNotice(.warning, "LISTEN \"\(channel)\" failed on the listener connection of pool \"\(self.pool.name)\": \(error.message)")
                    client.listenerFailed(channel: channel)
                }
            }
        } else {
            self.active.formUnion(batch.listen)
            self.active.subtract(batch.unlisten)
        }
        for (id, client) in self.waiters where client.listenChannels.allSatisfy({ self.active.contains($0) || self.subscribers[$0]?[id] == nil }) {
            self.waiters.removeValue(forKey: id)
            client.listenerReady()
        }
        self.sync()
    }

    private func transportFailed(_ reason: String) {
        guard let transport = self.transport else { return }
        self.transport = nil
        self.state = .closed
        transport.close()
        self.link?.finish()
        self.link = nil
        self.wentDown(reason)
    }

    func transportWritable() {}

    func transportClosed(error: String?) {
        guard self.transport != nil else { return }
        self.transportFailed(error.map { "listener connection error: \($0)" } ?? "the server closed the listener connection")
    }
}
