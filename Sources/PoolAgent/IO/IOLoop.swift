// The agent's data event loop: one thread, epoll, a timer heap and a task queue, conforming to NIO's EventLoop.

import CPoolIO
import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import PGWire
import PoolCore

#if canImport(Glibc)
import Glibc
#endif

/// A socket the loop watches; called on the loop thread with the EPOLL* bits that are ready.
protocol IOHandler: AnyObject {
    func ioReady(_ events: UInt32)
}

/// One thread that owns every client and server socket of the agent, like PgBouncer's single loop.
///
/// Sockets are level-triggered epoll registrations keyed by their descriptor; reads and writes are plain
/// system calls made by `Transport`, with no channel pipeline between them. The loop is a NIO `EventLoop`,
/// so futures, promises, scheduled tasks and `NIOThreadPool` results work on it as on any other loop.
final class IOLoop: EventLoop, @unchecked Sendable {  // Loop state is touched only on the loop thread; `remote` is locked.
    private let epollFD: Int32
    private let wakeFD: Int32
    private var thread: pthread_t?
    /// Tasks from other threads, whether the loop was already woken for them, whether its thread ended, and
    /// who waits for it to end.
    private let remote = NIOLockedValueBox<RemoteState>(RemoteState())
    /// Tasks the loop gave itself: no lock, no wake-up.
    private var local: [() -> Void] = []
    private var timers = TimerHeap()
    private var timerSequence: UInt64 = 0
    private var handlers: [(any IOHandler)?] = []
    /// The buffers this loop's transports read into.
    let readBuffers = IOReadBuffers()
    /// Transports with output to send at the end of this turn: servers, then clients.
    private var pendingServerFlushes: [Transport] = []
    private var pendingFlushes: [Transport] = []
    /// The end-of-turn sends go to the kernel together, in one system call, when it has io_uring: the peers
    /// they wake then preempt the loop once per turn, not once per send.
    private var sendBatch: OpaquePointer?
    private var batched: [Transport] = []
    private var batchResults: [Int32]
    private static let batchEntries = 256
    private let logger: Logger
    private var stopping = false
    /// The time the current event started being handled: one clock read per event for the whole data path.
    private(set) var time: Moment = .now

    private static let wakeToken = UInt64.max

    /// `batchedSends`: send each turn's output with io_uring where the kernel allows it.
    init(batchedSends: Bool = true, logger: Logger = Logger(label: "poolagent.io")) throws {
        self.logger = logger
        self.epollFD = cpoolio_epoll_create()
        guard self.epollFD >= 0 else { throw IOError(errnoCode: errno, reason: "epoll_create1") }
        self.wakeFD = cpoolio_eventfd()
        guard self.wakeFD >= 0 else {
            Glibc.close(self.epollFD)
            throw IOError(errnoCode: errno, reason: "eventfd")
        }
        guard cpoolio_epoll_ctl(self.epollFD, 0, self.wakeFD, UInt32(CPOOLIO_IN), Self.wakeToken) == 0 else {
            let code = errno
            Glibc.close(self.wakeFD)
            Glibc.close(self.epollFD)
            throw IOError(errnoCode: code, reason: "epoll_ctl")
        }
        self.batchResults = Array(repeating: 0, count: Self.batchEntries)
        if batchedSends {
            self.sendBatch = cpoolio_batch_create(UInt32(Self.batchEntries))
            if self.sendBatch == nil { self.batchUnavailable = String(cString: strerror(errno)) }
        }
    }

    /// Whether the loop sends each turn's output in one system call (io_uring), or with one per socket.
    var sendsInBatches: Bool { self.sendBatch != nil }
    /// Why batched sends were asked for and are not made: the kernel's refusal of io_uring.
    private(set) var batchUnavailable: String?
    /// Sends the kernel took from batches so far.
    private(set) var batchedSends = 0

    deinit {
        // A loop that never ran still owns its ring (`run` lets go of it when it ends).
        cpoolio_batch_destroy(self.sendBatch)
    }

    /// Starts the loop's thread; returns once the thread knows it is the loop's.
    func start() {
        let started = DispatchSemaphore(value: 0)
        let box = Unmanaged.passRetained(StartBox(loop: self, started: started))
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { argument in
            let box = Unmanaged<StartBox>.fromOpaque(argument!).takeRetainedValue()
            box.loop.thread = pthread_self()
            box.started.signal()
            box.loop.run()
            return nil
        }, box.toOpaque())
        precondition(status == 0, "cannot start the event loop thread: \(status)")
        started.wait()
    }

    private final class StartBox {
        let loop: IOLoop
        let started: DispatchSemaphore

        init(loop: IOLoop, started: DispatchSemaphore) {
            self.loop = loop
            self.started = started
        }
    }

    // MARK: Sockets

    func register(_ fd: Int32, handler: any IOHandler, events: UInt32) throws(IOError) {
        if Int(fd) >= self.handlers.count {
            self.handlers.append(contentsOf: repeatElement(nil, count: max(Int(fd) + 1 - self.handlers.count, self.handlers.count)))
        }
        self.handlers[Int(fd)] = handler
        guard cpoolio_epoll_ctl(self.epollFD, 0, fd, events, UInt64(fd)) == 0 else {
            self.handlers[Int(fd)] = nil
            throw IOError(errnoCode: errno, reason: "epoll_ctl(ADD)")
        }
    }

    func modify(_ fd: Int32, events: UInt32) {
        _ = cpoolio_epoll_ctl(self.epollFD, 1, fd, events, UInt64(fd))
    }

    /// Forgets `fd`; call before closing it.
    func deregister(_ fd: Int32) {
        _ = cpoolio_epoll_ctl(self.epollFD, 2, fd, 0, 0)
        if Int(fd) < self.handlers.count { self.handlers[Int(fd)] = nil }
    }

    // MARK: Running

    private func run() {
        var events = [cpoolio_event](repeating: cpoolio_event(), count: 256)
        while !self.stopping {
            let timeout: Int32
            if !self.local.isEmpty {
                timeout = 0
            } else if let next = self.timers.nextDeadline {
                let now = NIODeadline.now().uptimeNanoseconds
                timeout = next <= now ? 0 : Int32(clamping: (next - now + 999_999) / 1_000_000)
            } else {
                timeout = -1
            }
            let count = events.withUnsafeMutableBufferPointer { cpoolio_epoll_wait(self.epollFD, $0.baseAddress, Int32($0.count), timeout) }
            if count <= 0 { self.time = .now }
            // Other threads' tasks come with a wake-up: only then is their queue (and its lock) looked at.
            var woken = false
            if count > 0 {
                for index in 0..<Int(count) {
                    let event = events[index]
                    if event.token == Self.wakeToken {
                        cpoolio_eventfd_drain(self.wakeFD)
                        woken = true
                        continue
                    }
                    let fd = Int(event.token)
                    if fd < self.handlers.count, let handler = self.handlers[fd] {
                        self.time = .now
                        handler.ioReady(event.events)
                    }
                }
            }
            self.flushPending()
            self.runTimers()
            self.runTasks(remote: woken)
            self.flushPending()
            self.readBuffers.rewind()
        }
        // Shutting down: what was queued still runs, what was scheduled fails.
        self.runTasks()
        for entry in self.timers.removeAll() {
            entry.fail?()
        }
        self.runTasks()
        // From here on `execute` drops tasks and never touches the eventfd.
        let (last, callbacks) = self.remote.withLockedValue { state in
            state.finished = true
            defer {
                state.tasks.removeAll()
                state.stopCallbacks.removeAll()
            }
            return (state.tasks, state.stopCallbacks)
        }
        for task in last { task() }
        Glibc.close(self.wakeFD)
        Glibc.close(self.epollFD)
        cpoolio_batch_destroy(self.sendBatch)
        self.sendBatch = nil
        for (queue, callback) in callbacks { queue.async { callback(nil) } }
    }

    private func runTimers() {
        // NIODeadline and Moment both count CLOCK_MONOTONIC nanoseconds: the last event's time will do.
        guard let next = self.timers.nextDeadline, next <= UInt64(self.time.nanoseconds) else { return }
        let now = UInt64(self.time.nanoseconds)
        while let entry = self.timers.popExpired(now: now) {
            entry.fire()
        }
    }

    private func runTasks(remote drainRemote: Bool = true) {
        // Tasks may queue more tasks: those run in the next turn, after I/O.
        var remote: [@Sendable () -> Void] = []
        if drainRemote {
            self.remote.withLockedValue { state in
                state.woken = false
                if !state.tasks.isEmpty { swap(&remote, &state.tasks) }
            }
        }
        guard !remote.isEmpty || !self.local.isEmpty else { return }
        self.time = .now
        for task in remote { task() }
        if !self.local.isEmpty {
            var local: [() -> Void] = []
            swap(&local, &self.local)
            for task in local { task() }
        }
    }

    func flushLater(_ transport: Transport) {
        if transport.flushesFirst {
            self.pendingServerFlushes.append(transport)
        } else {
            self.pendingFlushes.append(transport)
        }
    }

    private func flushPending() {
        // Servers first: a query reaching its backend sooner overlaps with the replies still to send.
        // Flushing can queue more (a peer told its socket closed); the loop takes those too.
        while !self.pendingServerFlushes.isEmpty || !self.pendingFlushes.isEmpty {
            // A single socket's output gains nothing from a batch: it is sent directly.
            let batch = self.pendingServerFlushes.count + self.pendingFlushes.count > 1 ? self.sendBatch : nil
            var index = 0
            while index < self.pendingServerFlushes.count {
                self.send(self.pendingServerFlushes[index], in: batch)
                index += 1
            }
            self.pendingServerFlushes.removeAllKeepingStorage()
            index = 0
            while index < self.pendingFlushes.count {
                self.send(self.pendingFlushes[index], in: batch)
                index += 1
            }
            self.pendingFlushes.removeAllKeepingStorage()
            if let batch {
                self.submitBatch(batch)
                if self.batchUnavailable != nil {
                    cpoolio_batch_destroy(batch)
                    self.sendBatch = nil
                }
            }
        }
    }

    /// Sends the transport's output now, or adds it to `batch`.
    private func send(_ transport: Transport, in batch: OpaquePointer?) {
        guard let batch else {
            transport.flushNow()
            return
        }
        while true {
            // Once a submission failed, the rest of the turn is sent directly.
            guard self.batchUnavailable == nil else {
                transport.flushNow()
                return
            }
            switch transport.addSend(to: batch) {
            case .added:
                self.batched.append(transport)
                return
            case .nothingToSend:
                return
            case .batchFull:
                self.submitBatch(batch)
            case .refused:
                transport.flushNow()
                return
            }
        }
    }

    /// Makes the batch's sends and tells each transport what became of its own; a send the kernel did not
    /// take is made by its transport directly.
    private func submitBatch(_ batch: OpaquePointer) {
        guard !self.batched.isEmpty else { return }
        let submitted = self.batchResults.withUnsafeMutableBufferPointer { cpoolio_batch_submit(batch, $0.baseAddress) }
        if submitted > 0 { self.batchedSends += Int(submitted) }
        if submitted < 0 {
            // What the kernel did not take is sent directly below; later turns send directly too.
            self.batchUnavailable = String(cString: strerror(-submitted))
            self.logger.warning("io_uring submission failed; sending with send(2) from now on",
                                metadata: [LogKey.error: "\(self.batchUnavailable ?? "")"])
        }
        var index = 0
        while index < self.batched.count {
            self.batched[index].sentInBatch(self.batchResults[index])
            index += 1
        }
        // A reaction (writable again, a close) may write to another transport of the batch, or close it: by
        // now each knows what it already sent.
        index = 0
        while index < self.batched.count {
            self.batched[index].finishBatchedSend(self.batchResults[index])
            index += 1
        }
        self.batched.removeAllKeepingStorage()
    }

    // MARK: EventLoop

    var inEventLoop: Bool {
        guard let thread = self.thread else { return false }
        return pthread_equal(thread, pthread_self()) != 0
    }

    func execute(_ task: @escaping @Sendable () -> Void) {
        if self.inEventLoop {
            self.local.append(task)
            return
        }
        self.remote.withLockedValue { state in
            // As with NIO's own loops, a task given to a loop that has stopped is dropped.
            guard !state.finished else { return }
            state.tasks.append(task)
            if !state.woken {
                state.woken = true
                // Under the lock, so the eventfd cannot have been closed meanwhile.
                cpoolio_eventfd_signal(self.wakeFD)
            }
        }
    }

    /// Runs `task` on the loop after the current event, without the `Sendable` requirement: loop code only.
    func executeSoon(_ task: @escaping () -> Void) {
        self.preconditionInEventLoop()
        self.local.append(task)
    }

    func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise: EventLoopPromise<T> = self.makePromise()
        let entry = TimerEntry(
            deadline: deadline.uptimeNanoseconds,
            run: {
                do { promise.succeed(try task()) } catch { promise.fail(error) }
            },
            fail: { promise.fail(EventLoopError.shutdown) }
        )
        if self.inEventLoop {
            self.addTimer(entry)
        } else {
            self.execute { self.addTimer(entry) }
        }
        return Scheduled(promise: promise) { [self] in
            if self.inEventLoop {
                self.cancelTimer(entry, promise: promise)
            } else {
                self.execute { self.cancelTimer(entry, promise: promise) }
            }
        }
    }

    /// Timers waiting in the heap (loop thread only).
    var scheduledTimers: Int { self.timers.count }

    /// Takes a cancelled timer out of the heap at once, so what its task holds is released now, not when it
    /// would have fired.
    private func cancelTimer<T>(_ entry: TimerEntry, promise: EventLoopPromise<T>) {
        guard entry.cancel() else { return }
        self.timers.remove(entry)
        promise.fail(EventLoopError.cancelled)
    }

    func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        self.scheduleTask(deadline: .now() + delay, task)
    }

    private func addTimer(_ entry: TimerEntry) {
        guard entry.isPending else { return }  // cancelled before it reached the loop
        self.timerSequence += 1
        entry.sequence = self.timerSequence
        self.timers.insert(entry)
    }

    func preconditionInEventLoop(file: StaticString, line: UInt) {
        precondition(self.inEventLoop, "not on the agent's event loop", file: file, line: line)
    }

    func preconditionNotInEventLoop(file: StaticString, line: UInt) {
        precondition(!self.inEventLoop, "on the agent's event loop", file: file, line: line)
    }

    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        let running = self.remote.withLockedValue { state -> Bool in
            guard !state.finished, self.thread != nil else { return false }
            state.stopCallbacks.append((queue, callback))
            return true
        }
        guard running else {
            queue.async { callback(nil) }
            return
        }
        self.execute { self.stopping = true }
    }
}

/// What other threads share with the loop, under one lock.
private struct RemoteState {
    var tasks: [@Sendable () -> Void] = []
    var woken = false
    var finished = false
    var stopCallbacks: [(DispatchQueue, @Sendable ((any Error)?) -> Void)] = []
}

/// A task scheduled on the loop at an uptime in nanoseconds.
private final class TimerEntry: @unchecked Sendable {  // Touched only on the loop thread.
    let deadline: UInt64
    var sequence: UInt64 = 0
    /// Where the entry is in the heap; -1 once it left (fired, cancelled or failed).
    var index = -1
    /// The task and its failure; both dropped when the timer fires or is cancelled.
    private(set) var run: (() -> Void)?
    private(set) var fail: (() -> Void)?

    init(deadline: UInt64, run: @escaping () -> Void, fail: @escaping () -> Void) {
        self.deadline = deadline
        self.run = run
        self.fail = fail
    }

    var isPending: Bool { self.run != nil }

    /// Runs the task once.
    func fire() {
        let run = self.run
        self.run = nil
        self.fail = nil
        run?()
    }

    /// Drops the task; false when it already ran or was cancelled.
    func cancel() -> Bool {
        guard self.run != nil else { return false }
        self.run = nil
        self.fail = nil
        return true
    }

    func isEarlier(than other: TimerEntry) -> Bool {
        self.deadline != other.deadline ? self.deadline < other.deadline : self.sequence < other.sequence
    }
}

/// A binary min-heap of timers by deadline, then by the order they were scheduled; each entry knows its place,
/// so a cancelled one leaves at once.
private struct TimerHeap {
    private var entries: [TimerEntry] = []

    var nextDeadline: UInt64? { self.entries.first?.deadline }

    var count: Int { self.entries.count }

    mutating func insert(_ entry: TimerEntry) {
        entry.index = self.entries.count
        self.entries.append(entry)
        self.siftUp(entry.index)
    }

    mutating func popExpired(now: UInt64) -> TimerEntry? {
        guard let first = self.entries.first, first.deadline <= now else { return nil }
        self.remove(first)
        return first
    }

    mutating func remove(_ entry: TimerEntry) {
        let index = entry.index
        guard index >= 0, index < self.entries.count, self.entries[index] === entry else { return }
        entry.index = -1
        let last = self.entries.removeLast()
        guard index < self.entries.count else { return }
        self.entries[index] = last
        last.index = index
        self.siftDown(index)
        self.siftUp(last.index)
    }

    mutating func removeAll() -> [TimerEntry] {
        defer { self.entries.removeAll() }
        for entry in self.entries { entry.index = -1 }
        return self.entries
    }

    private mutating func swapEntries(_ a: Int, _ b: Int) {
        self.entries.swapAt(a, b)
        self.entries[a].index = a
        self.entries[b].index = b
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            guard self.entries[child].isEarlier(than: self.entries[parent]) else { break }
            self.swapEntries(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < self.entries.count, self.entries[left].isEarlier(than: self.entries[smallest]) { smallest = left }
            if right < self.entries.count, self.entries[right].isEarlier(than: self.entries[smallest]) { smallest = right }
            guard smallest != parent else { break }
            self.swapEntries(parent, smallest)
            parent = smallest
        }
    }
}
