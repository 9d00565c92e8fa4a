// Starts and stops the agent: listeners, pools, the control socket and signal handling.

import Dispatch
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

public enum PoolAgentVersion {
    public static let current = "0.1.0"
}

/// The running agent. `run()` blocks until the agent has stopped.
public final class Agent: @unchecked Sendable {  // Mutable state is touched only on the event loop after start.
    private let configuration: AgentConfiguration
    private let logger: Logger
    /// Client and server traffic, pools and timers.
    private let loop: IOLoop
    /// The control socket and the metrics endpoint, which hop to `loop` for the agent's state.
    private let group: MultiThreadedEventLoopGroup
    private let threadPool: NIOThreadPool
    private let runtime: AgentRuntime
    private var listeners: [Listener] = []
    private var metricsChannel: (any Channel)?
    private var controlChannel: (any Channel)?
    private let stopped: EventLoopPromise<Void>
    private var stopping = false
    private var stoppedMarked = false
    private let notifier = SystemdNotifier()

    public init(configuration: AgentConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        let (before, after) = DescriptorLimit.raiseToHard()
        logger.info("descriptor limit", metadata: ["soft_before": "\(before)", "soft": "\(after)", "hard": "\(DescriptorLimit.current.hard)"])
        if let warning = DescriptorLimit.warning(for: configuration, limit: after) {
            logger.warning("\(warning)")
        }
        // Before any thread exists, so every thread inherits the mask and no signal is lost.
        SignalWaiter.blockHandledSignals()
        // One event loop carries all client and server traffic, like PgBouncer: pool state needs no locks.
        let loop = try IOLoop(batchedSends: configuration.ioUring, logger: logger)
        if let reason = loop.batchUnavailable {
            logger.warning("io_uring is not available; sending with send(2), one call per socket", metadata: [LogKey.error: "\(reason)"])
        }
        self.loop = loop
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // Blocking libpq connects and cancels run here, never on the event loop.
        self.threadPool = NIOThreadPool(numberOfThreads: 8)
        self.threadPool.start()
        loop.start()
        self.runtime = try AgentRuntime(configuration: configuration, eventLoop: loop, threadPool: self.threadPool, logger: logger)
        self.stopped = loop.makePromise()
    }

    /// Binds everything, serves until a signal or `shutdown` stops it, then releases all resources.
    public func run() throws {
        signal(SIGPIPE, SIG_IGN)
        do {
            try self.bind()
        } catch {
            try? self.loop.submit { self.closeListeners() }.wait()
            self.markStopped()
            try? self.threadPool.syncShutdownGracefully()
            try? self.group.syncShutdownGracefully()
            try? self.loop.syncShutdownGracefully()
            throw error
        }
        self.installSignalHandlers()
        self.runtime.eventLoop.execute { self.runtime.start() }
        self.logger.info("poolagent \(PoolAgentVersion.current) ready", metadata: [
            "listen": "\(self.configuration.listen.map(\.description).joined(separator: ","))",
            "unix_socket": "\(self.unixSocketPath ?? "none")",
            "control_socket": "\(self.configuration.controlSocket)",
            "pools": "\(self.configuration.pools.keys.sorted().joined(separator: ","))",
            "sends": "\(self.loop.sendsInBatches ? "io_uring" : "send")",
        ])
        self.notifier.ready(status: self.status)
        self.notifier.startWatchdog(on: self.runtime.eventLoop)
        try? self.stopped.futureResult.wait()
        try? self.controlChannel?.close().wait()
        try? self.metricsChannel?.close().wait()
        unlink(self.configuration.controlSocket)
        if let path = self.unixSocketPath { unlink(path) }
        self.stopWorkers(within: .seconds(3))
        try? self.group.syncShutdownGracefully()
        try? self.loop.syncShutdownGracefully()
        self.logger.info("poolagent stopped")
    }

    /// Lets the worker threads finish what they run for up to `limit`: a libpq call stuck on a dead network
    /// (a DNS lookup, a connect that has not timed out yet) does not hold the exit; the process ends without it.
    private func stopWorkers(within limit: Duration) {
        let done = DispatchSemaphore(value: 0)
        self.threadPool.shutdownGracefully { _ in done.signal() }
        if done.wait(timeout: .now() + .milliseconds(Int(limit.seconds * 1000))) == .timedOut {
            self.logger.warning("worker threads still busy with a libpq call; stopping without waiting for them")
        }
    }

    var unixSocketPath: String? {
        self.configuration.unixSocketDirectory.map { "\($0)/.s.PGSQL.\(self.configuration.unixSocketPort)" }
    }

    // MARK: Binding

    private func bind() throws {
        let runtime = self.runtime
        let loop = self.loop
        let logger = self.logger
        func listen(host: String? = nil, port: Int = 0, path: String? = nil) throws {
            let listener = try Listener.open(host: host, port: port, path: path, backlog: 4096, loop: loop, logger: logger) { [unowned runtime] fd in
                runtime.accepted(fd, unix: path != nil)
            }
            listener.onDescriptorsExhausted = { [unowned runtime] in runtime.shedLoggingIn() }
            try loop.submit { try listener.start() }.wait()
            self.listeners.append(listener)
        }
        for address in self.configuration.listen {
            do {
                try listen(host: address.host, port: address.port)
            } catch {
                throw AgentStartError("cannot listen on \(address): \(error)")
            }
        }
        if let path = self.unixSocketPath {
            try UnixSocketPath.prepare(path, what: "Unix socket")
            do {
                try listen(path: path)
            } catch {
                throw AgentStartError("cannot listen on Unix socket \(path): \(error)")
            }
            chmod(path, 0o777)
        }
        if let address = self.configuration.metricsListen {
            do {
                self.metricsChannel = (try ServerBootstrap(group: self.group)
                    .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                    .childChannelInitializer { channel in
                        channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                            try channel.pipeline.syncOperations.addHandler(MetricsHandler(runtime: runtime))
                        }
                    }
                    .bind(host: address.host, port: address.port).wait())
            } catch {
                throw AgentStartError("cannot serve metrics on \(address): \(error)")
            }
        }
        let controlPath = self.configuration.controlSocket
        try UnixSocketPath.prepare(controlPath, what: "control socket")
        let control = ControlService(runtime: runtime, agent: self)
        runtime.control = control
        // The socket is created with the configured mode: no window where it is wider.
        let oldMask = umask(0o777 & ~mode_t(self.configuration.controlSocketMode))
        defer { umask(oldMask) }
        let allowedUIDs = self.configuration.controlAllowedUIDs
        do {
            self.controlChannel = try ServerBootstrap(group: self.group)
                .serverChannelOption(ChannelOptions.backlog, value: 1024)
                // Nothing is read before the peer's uid is checked.
                .childChannelOption(ChannelOptions.autoRead, value: false)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ControlConnectionHandler(service: control, allowedUIDs: allowedUIDs))
                    }
                }
                .bind(unixDomainSocketPath: controlPath).wait()
        } catch {
            throw AgentStartError("cannot listen on control socket \(controlPath): \(error)")
        }
    }

    /// Stops accepting clients; on the loop.
    private func closeListeners() {
        for listener in self.listeners { listener.close() }
        self.listeners.removeAll()
    }

    // MARK: Stopping

    private func installSignalHandlers() {
        SignalWaiter.start { [self] number in
            switch number {
            case SIGTERM:
                self.logger.notice("SIGTERM received: graceful shutdown")
                self.shutdown(.graceful)
            case SIGINT:
                self.logger.notice("SIGINT received: immediate shutdown")
                self.shutdown(.immediate)
            default:
                self.runtime.eventLoop.execute {
                    self.notifier.reloading()
                    self.runtime.reload().whenComplete { result in
                        switch result {
                        case .success(let outcome):
                            self.logger.notice("SIGHUP received: configuration reloaded", metadata: ["result": "\(outcome)"])
                            self.notifier.ready(status: self.status)
                        case .failure(let error):
                            self.logger.error("SIGHUP received: reload refused, nothing changed", metadata: [LogKey.reason: "\(error)"])
                            self.notifier.ready(status: "reload refused, nothing changed: \(error); " + self.status)
                        }
                    }
                }
            }
        }
    }

    enum ShutdownMode: String {
        case graceful, immediate
    }

    /// Graceful: stop accepting, let sessions end until `shutdown_timeout`, then terminate the rest.
    /// Immediate: terminate every client and server now.
    func shutdown(_ mode: ShutdownMode, deadline: Duration? = nil) {
        let loop = self.runtime.eventLoop
        loop.execute { [self] in
            if self.stopping && mode == .graceful { return }
            self.stopping = true
            self.notifier.stopping(status: "stopping (\(mode.rawValue))")
            self.closeListeners()
            self.runtime.onDrained = { [self] in self.markStopped() }
            switch mode {
            case .graceful:
                self.runtime.beginShutdown()
                loop.scheduleTask(in: (deadline ?? self.configuration.shutdownTimeout).timeAmount) { [self] in
                    self.runtime.terminateAll(reason: "shutting down")
                    self.finishSoon()
                }
            case .immediate:
                self.runtime.terminateAll(reason: "shutting down")
                self.finishSoon()
            }
        }
    }

    /// The one-line summary systemd shows (`systemctl status`).
    private var status: String {
        let pools = self.configuration.pools.count
        let listen = self.configuration.listen.map(\.description).joined(separator: ", ")
        return "serving \(pools) pool\(pools == 1 ? "" : "s") on \(listen.isEmpty ? "no TCP address" : listen)"
    }

    private func markStopped() {
        guard !self.stoppedMarked else { return }
        self.stoppedMarked = true
        self.stopped.succeed(())
    }

    /// Gives closing sockets a moment to flush their last FATAL, then stops regardless.
    private func finishSoon() {
        self.runtime.checkDrained()
        self.runtime.eventLoop.scheduleTask(in: .seconds(2)) { [self] in self.markStopped() }
    }
}
