// The data path's event loop and socket transport, on a real loop thread and a real socket pair.

import Glibc
import NIOConcurrencyHelpers
import NIOCore
import Testing
@testable import PoolAgent

@Suite struct IOLoopTests {
    @Test func tasksRunFirstThenTimersByDeadlineAndACancelledTimerNever() throws {
        let loop = try IOLoop()
        loop.start()
        defer { try? loop.syncShutdownGracefully() }
        let log = NIOLockedValueBox<[String]>([])
        let late = loop.scheduleTask(in: .milliseconds(60)) { log.withLockedValue { $0.append("60 ms") } }
        let early = loop.scheduleTask(in: .milliseconds(20)) { log.withLockedValue { $0.append("20 ms") } }
        let cancelled = loop.scheduleTask(in: .milliseconds(40)) { log.withLockedValue { $0.append("cancelled") } }
        cancelled.cancel()
        loop.execute { log.withLockedValue { $0.append("task") } }
        try late.futureResult.wait()
        try early.futureResult.wait()
        #expect(throws: EventLoopError.cancelled) { try cancelled.futureResult.wait() }
        #expect(log.withLockedValue { $0 } == ["task", "20 ms", "60 ms"])
        #expect(try loop.submit { loop.inEventLoop }.wait())
        #expect(!loop.inEventLoop)
    }

    @Test func aCancelledTimerLeavesAtOnceAndReleasesWhatItsTaskHolds() throws {
        let loop = try IOLoop()
        loop.start()
        defer { try? loop.syncShutdownGracefully() }
        final class Held: Sendable {}
        weak var watched: Held?
        let (scheduled, waiting) = try loop.submit { () -> ([Scheduled<Void>], Int) in
            var scheduled: [Scheduled<Void>] = []
            for index in 0..<1000 {
                let held = Held()
                if index == 500 { watched = held }
                scheduled.append(loop.scheduleTask(in: .seconds(60 + Int64(index % 7))) { _ = held })
            }
            return (scheduled, loop.scheduledTimers)
        }.wait()
        #expect(waiting == 1000)
        #expect(watched != nil)
        // Cancelled from the loop (as sessions do) and from another thread.
        try loop.submit { for timer in scheduled[0..<500] { timer.cancel() } }.wait()
        for timer in scheduled[500...] { timer.cancel() }
        #expect(try loop.submit { loop.scheduledTimers }.wait() == 0)
        #expect(watched == nil, "the cancelled task's captures are freed now, not in a minute")
        // The heap still orders what is left after removals from its middle.
        let log = NIOLockedValueBox<[Int]>([])
        let timers = try loop.submit { () -> [Scheduled<Void>] in
            (0..<20).map { index in loop.scheduleTask(in: .milliseconds(Int64(10 + (index * 7) % 20 * 5))) { log.withLockedValue { $0.append(index) } } }
        }.wait()
        for index in stride(from: 1, to: 20, by: 3) { timers[index].cancel() }
        for (index, timer) in timers.enumerated() where (index - 1) % 3 != 0 { try timer.futureResult.wait() }
        let fired = log.withLockedValue { $0 }
        let expected = (0..<20).filter { ($0 - 1) % 3 != 0 }.sorted { (($0 * 7) % 20, $0) < (($1 * 7) % 20, $1) }
        #expect(fired == expected)
    }

    @Test func timersStillPendingFailWhenTheLoopStops() throws {
        let loop = try IOLoop()
        loop.start()
        let never = loop.scheduleTask(in: .seconds(3600)) {}
        let outcome = NIOLockedValueBox<(any Error)?>(nil)
        never.futureResult.whenFailure { error in outcome.withLockedValue { $0 = error } }
        try loop.syncShutdownGracefully()
        #expect(outcome.withLockedValue { $0 as? EventLoopError } == .shutdown)
    }

    @Test func transportReadsWritesAndReportsThePeersClose() throws {
        let (loop, transport, peer, recorder) = try Self.connectedPair()
        defer { try? loop.syncShutdownGracefully() }
        #expect(Glibc.write(peer, "hello", 5) == 5)
        try Self.waitUntil { recorder.received.withLockedValue { $0 } == Array("hello".utf8) }
        try loop.submit {
            transport.write(ByteBuffer(string: "wor"))
            transport.write(ByteBuffer(string: "ld"))
            transport.flush()
        }.wait()
        #expect(Self.read(peer, count: 5) == Array("world".utf8))
        close(peer)
        try Self.waitUntil { recorder.closed.withLockedValue { $0 } != nil }
        #expect(recorder.closed.withLockedValue { $0 } == .some(nil), "a clean close reports no error")
        #expect(try loop.submit { transport.isOpen }.wait() == false)
    }

    @Test func transportStopsBeingWritableUntilTheSlowPeerCatchesUp() throws {
        let (loop, transport, peer, recorder) = try Self.connectedPair()
        defer {
            close(peer)
            try? loop.syncShutdownGracefully()
        }
        let size = 2 << 20
        try loop.submit {
            transport.write(ByteBuffer(repeating: 7, count: size))
            transport.flush()
        }.wait()
        // The kernel takes a few hundred KiB at most; the rest waits in the transport.
        #expect(try loop.submit { transport.isWritable }.wait() == false)
        #expect(recorder.writable.withLockedValue { $0 } == 0)
        #expect(Self.read(peer, count: size).count == size)
        try Self.waitUntil { recorder.writable.withLockedValue { $0 } == 1 }
        #expect(try loop.submit { transport.isWritable }.wait())
    }

    @Test func closeAfterFlushSendsEverythingFirst() throws {
        let (loop, transport, peer, recorder) = try Self.connectedPair()
        defer {
            close(peer)
            try? loop.syncShutdownGracefully()
        }
        let size = 1 << 20
        try loop.submit {
            transport.write(ByteBuffer(repeating: 1, count: size))
            transport.closeAfterFlush()
        }.wait()
        #expect(Self.read(peer, count: size + 1).count == size, "every byte, then end of file")
        try Self.waitUntil { recorder.closed.withLockedValue { $0 } != nil }
    }

    // MARK: Batched sends

    // A turn with one socket to flush sends directly; these tests flush several in one turn, so that with
    // `batchedSends` the batch carries them.

    @Test func sendsAreBatchedWhereTheKernelAllowsIoUring() throws {
        let loop = try IOLoop()
        defer { try? loop.syncShutdownGracefully() }
        loop.start()
        // /proc/sys/kernel/io_uring_disabled: 0 lets every process use io_uring (kernel 6.6 and later). CI
        // runs where it is allowed, so there the batched cases below must really be batched.
        let setting = Self.contents(of: "/proc/sys/kernel/io_uring_disabled")
        if setting == "0" || getenv("CI").map({ String(cString: $0) }) == "true" {
            #expect(loop.sendsInBatches, "io_uring should be usable here, yet: \(loop.batchUnavailable ?? "?")")
        }
        let plain = try IOLoop(batchedSends: false)
        plain.start()
        defer { try? plain.syncShutdownGracefully() }
        #expect(!plain.sendsInBatches)
        #expect(plain.batchUnavailable == nil, "not asked for, so not missing")
    }

    @Test(arguments: [true, false])
    func oneTurnSendsToMoreSocketsThanABatchHolds(batchedSends: Bool) throws {
        let (loop, pairs) = try Self.connectedPairs(300, batchedSends: batchedSends)  // a batch holds 256 sends
        defer { Self.stop(loop, pairs) }
        try loop.submit {
            for (index, pair) in pairs.enumerated() {
                pair.transport.write(ByteBuffer(string: "socket \(index);"))
                pair.transport.flush()
            }
        }.wait()
        for (index, pair) in pairs.enumerated() {
            let expected = Array("socket \(index);".utf8)
            #expect(Self.read(pair.peer, count: expected.count) == expected)
        }
        usleep(50_000)
        for (index, pair) in pairs.enumerated() {
            #expect(Self.nothingMore(pair.peer, after: 0), "socket \(index) got more than it was sent")
        }
        try Self.expectBatched(loop, atLeast: batchedSends ? 300 : 0)
    }

    @Test(arguments: [true, false])
    func moreBuffersThanOneSendTakesGoOutInOrder(batchedSends: Bool) throws {
        let (loop, pairs) = try Self.connectedPairs(2, batchedSends: batchedSends)
        defer { Self.stop(loop, pairs) }
        let parts = (0..<150).map { "part \($0)," }
        try loop.submit {
            for part in parts { pairs[0].transport.write(ByteBuffer(string: part)) }
            pairs[0].transport.flush()
            pairs[1].transport.writeAndFlush(ByteBuffer(string: "other"))
        }.wait()
        let expected = Array(parts.joined().utf8)
        #expect(Self.read(pairs[0].peer, count: expected.count) == expected)
        #expect(Self.nothingMore(pairs[0].peer))
        #expect(Self.read(pairs[1].peer, count: 5) == Array("other".utf8))
        try Self.expectBatched(loop, atLeast: batchedSends ? 2 : 0)
    }

    @Test(arguments: [true, false])
    func aPeerThatStoppedReadingFailsOnlyItsOwnSend(batchedSends: Bool) throws {
        let (loop, pairs) = try Self.connectedPairs(2, batchedSends: batchedSends)
        defer { Self.stop(loop, pairs) }
        // The peer can still send, so the transport sees no end of file: only the send fails.
        #expect(shutdown(pairs[0].peer, Int32(SHUT_RD)) == 0)
        try loop.submit {
            pairs[0].transport.writeAndFlush(ByteBuffer(string: "lost"))
            pairs[1].transport.writeAndFlush(ByteBuffer(string: "kept"))
        }.wait()
        try Self.waitUntil { pairs[0].recorder.closed.withLockedValue { $0 } != nil }
        #expect(pairs[0].recorder.closed.withLockedValue { $0 } == .some(String(cString: strerror(EPIPE))))
        #expect(Self.read(pairs[1].peer, count: 4) == Array("kept".utf8))
        #expect(pairs[1].recorder.closed.withLockedValue { $0 } == nil)
        try Self.expectBatched(loop, atLeast: batchedSends ? 2 : 0)
    }

    @Test(arguments: [true, false])
    func aFullSocketWaitsWhileTheOthersOfItsTurnGoOut(batchedSends: Bool) throws {
        let (loop, pairs) = try Self.connectedPairs(2, batchedSends: batchedSends)
        defer { Self.stop(loop, pairs) }
        let size = 2 << 20
        try loop.submit {
            pairs[0].transport.writeAndFlush(ByteBuffer(repeating: 7, count: size))
            pairs[1].transport.writeAndFlush(ByteBuffer(string: "small"))
        }.wait()
        #expect(Self.read(pairs[1].peer, count: 5) == Array("small".utf8))
        #expect(try loop.submit { pairs[0].transport.isWritable }.wait() == false)
        #expect(Self.read(pairs[0].peer, count: size) == [UInt8](repeating: 7, count: size))
        try Self.waitUntil { pairs[0].recorder.writable.withLockedValue { $0 } == 1 }
        #expect(Self.nothingMore(pairs[0].peer))
        try Self.expectBatched(loop, atLeast: batchedSends ? 2 : 0)
    }

    /// A transport's reaction to its own send (writable again) closes another transport of the same batch
    /// after a flush: what the batch already sent for that one is not sent a second time.
    @Test(arguments: [true, false])
    func aReactionInsideTheBatchDoesNotResendWhatTheBatchSent(batchedSends: Bool) throws {
        let (loop, pairs) = try Self.connectedPairs(2, batchedSends: batchedSends)
        defer { Self.stop(loop, pairs) }
        // Room in the kernel for all of the first transport's output, which is over the high watermark:
        // it reports itself not writable, and writable again as soon as its send completes.
        var room: Int32 = 8 << 20
        guard setsockopt(pairs[0].transport.fd, SOL_SOCKET, SO_SNDBUFFORCE, &room, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            Issue.record("SO_SNDBUFFORCE: \(String(cString: strerror(errno)))")
            return
        }
        let size = Transport.highWatermark + 1024
        pairs[0].recorder.onWritable = { pairs[1].transport.closeAfterFlush() }
        try loop.submit {
            pairs[0].transport.writeAndFlush(ByteBuffer(repeating: 1, count: size))
            pairs[1].transport.writeAndFlush(ByteBuffer(string: "once"))
        }.wait()
        #expect(Self.read(pairs[1].peer, count: 100) == Array("once".utf8), "every byte once, then end of file")
        #expect(Self.read(pairs[0].peer, count: size).count == size)
        #expect(pairs[0].recorder.writable.withLockedValue { $0 } == 1)
        try Self.expectBatched(loop, atLeast: batchedSends ? 2 : 0)
    }

    // MARK: Helpers

    final class Recorder: TransportDelegate, Sendable {
        let received = NIOLockedValueBox<[UInt8]>([])
        let writable = NIOLockedValueBox(0)
        let closed = NIOLockedValueBox<String??>(nil)

        func transportRead(_ buffer: ByteBuffer) {
            self.received.withLockedValue { $0 += buffer.readableBytesView }
        }

        func transportWritable() {
            self.writable.withLockedValue { $0 += 1 }
            self.onWritable?()
        }

        /// Run on the loop when the transport is writable again.
        var onWritable: (@Sendable () -> Void)? {
            get { self.writableAction.withLockedValue { $0 } }
            set { self.writableAction.withLockedValue { $0 = newValue } }
        }
        private let writableAction = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)

        func transportClosed(error: String?) {
            self.closed.withLockedValue { $0 = .some(error) }
        }
    }

    /// A loop, a transport on one end of a Unix socket pair, the other end (blocking) and the delegate.
    static func connectedPair() throws -> (IOLoop, Transport, Int32, Recorder) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw IOError(errnoCode: errno, reason: "socketpair") }
        let loop = try IOLoop()
        loop.start()
        let recorder = Recorder()
        let transport = try loop.submit {
            try Transport.start(fd: fds[0], loop: loop, noDelay: false, delegate: recorder)
        }.wait()
        return (loop, transport, fds[1], recorder)
    }

    struct Pair {
        let transport: Transport
        let peer: Int32
        let recorder: Recorder
    }

    /// A loop and `count` transports on Unix socket pairs.
    static func connectedPairs(_ count: Int, batchedSends: Bool) throws -> (IOLoop, [Pair]) {
        let loop = try IOLoop(batchedSends: batchedSends)
        loop.start()
        var pairs: [Pair] = []
        for _ in 0..<count {
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
                Self.stop(loop, pairs)
                throw IOError(errnoCode: errno, reason: "socketpair")
            }
            // A read that waits in vain fails the test instead of hanging it.
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fds[1], SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let recorder = Recorder()
            let transport = try loop.submit { try Transport.start(fd: fds[0], loop: loop, noDelay: false, delegate: recorder) }.wait()
            pairs.append(Pair(transport: transport, peer: fds[1], recorder: recorder))
        }
        return (loop, pairs)
    }

    static func stop(_ loop: IOLoop, _ pairs: [Pair]) {
        for pair in pairs { close(pair.peer) }
        try? loop.syncShutdownGracefully()
    }

    /// With batched sends, the loop's batches took at least `count` sends; without, none.
    static func expectBatched(_ loop: IOLoop, atLeast count: Int) throws {
        let batched = try loop.submit { loop.batchedSends }.wait()
        if count == 0 {
            #expect(batched == 0)
        } else if try loop.submit({ loop.sendsInBatches }).wait() {
            #expect(batched >= count)
        }
    }

    /// Whether nothing more arrives on `fd` within `microseconds` (end of file counts as nothing more).
    static func nothingMore(_ fd: Int32, after microseconds: UInt32 = 50_000) -> Bool {
        usleep(microseconds)
        var byte: UInt8 = 0
        let got = recv(fd, &byte, 1, Int32(MSG_DONTWAIT))
        return got == 0 || got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
    }

    /// Reads until `count` bytes or end of file.
    static func read(_ fd: Int32, count: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while bytes.count < count {
            let got = Glibc.read(fd, &chunk, min(chunk.count, count - bytes.count))
            if got <= 0 { break }
            bytes += chunk[0..<got]
        }
        return bytes
    }

    /// A small file's first line, or nil when it cannot be read.
    static func contents(of path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, Int32(line.count), file) != nil else { return nil }
        return String(cString: line).split(separator: "\n").first.map(String.init) ?? ""
    }

    static func waitUntil(_ condition: () -> Bool) throws {
        for _ in 0..<500 {
            if condition() { return }
            usleep(10_000)
        }
        Issue.record("condition not met within 5 s")
    }
}
