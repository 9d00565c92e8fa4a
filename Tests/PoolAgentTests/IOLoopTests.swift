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

    @Test func timersStillPendingFailWhenTheLoopStops() throws {
        let loop = try IOLoop()
        loop.start()
        let never = loop.scheduleTask(in: .seconds(3600)) {}
        let outcome = NIOLockedValueBox<(any Error)?>(nil)
        never.futureResult.whenFailure { error in outcome.withLockedValue { $0 = error } }
        try loop.syncShutdownGracefully()
        #expect(outcome.withLockedValue { $0 as? EventLoopError } == .shutdown)
    }

    @Test(arguments: [true, false])
    func transportReadsWritesAndReportsThePeersClose(batchedSends: Bool) throws {
        let (loop, transport, peer, recorder) = try Self.connectedPair(batchedSends: batchedSends)
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

    @Test(arguments: [true, false])
    func transportStopsBeingWritableUntilTheSlowPeerCatchesUp(batchedSends: Bool) throws {
        let (loop, transport, peer, recorder) = try Self.connectedPair(batchedSends: batchedSends)
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

    @Test(arguments: [true, false])
    func closeAfterFlushSendsEverythingFirst(batchedSends: Bool) throws {
        let (loop, transport, peer, recorder) = try Self.connectedPair(batchedSends: batchedSends)
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

    @Test func sendsAreBatchedWhereTheKernelAllowsIoUring() throws {
        let loop = try IOLoop()
        defer { try? loop.syncShutdownGracefully() }
        loop.start()
        // /proc/sys/kernel/io_uring_disabled: 0 lets every process use io_uring (kernel 6.6 and later).
        let setting = Self.contents(of: "/proc/sys/kernel/io_uring_disabled")
        if setting == "0" {
            #expect(loop.sendsInBatches, "io_uring is allowed here, yet: \(loop.batchUnavailable ?? "?")")
        }
        let plain = try IOLoop(batchedSends: false)
        plain.start()
        defer { try? plain.syncShutdownGracefully() }
        #expect(!plain.sendsInBatches)
        #expect(plain.batchUnavailable == nil, "not asked for, so not missing")
    }

    @Test(arguments: [true, false])
    func oneTurnSendsToMoreSocketsThanABatchHolds(batchedSends: Bool) throws {
        let loop = try IOLoop(batchedSends: batchedSends)
        loop.start()
        defer { try? loop.syncShutdownGracefully() }
        let count = 300  // the batch holds 256 sends
        var peers: [Int32] = []
        var transports: [Transport] = []
        defer { for peer in peers { close(peer) } }
        for _ in 0..<count {
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw IOError(errnoCode: errno, reason: "socketpair") }
            transports.append(try loop.submit { try Transport.start(fd: fds[0], loop: loop, noDelay: false, delegate: Recorder()) }.wait())
            peers.append(fds[1])
        }
        try loop.submit {
            for (index, transport) in transports.enumerated() {
                transport.write(ByteBuffer(string: "socket \(index);"))
                transport.flush()
            }
        }.wait()
        for (index, peer) in peers.enumerated() {
            let expected = Array("socket \(index);".utf8)
            #expect(Self.read(peer, count: expected.count) == expected)
        }
    }

    @Test(arguments: [true, false])
    func moreBuffersThanOneSendTakesGoOutInOrder(batchedSends: Bool) throws {
        let (loop, transport, peer, _) = try Self.connectedPair(batchedSends: batchedSends)
        defer {
            close(peer)
            try? loop.syncShutdownGracefully()
        }
        let parts = (0..<150).map { "part \($0)," }
        try loop.submit {
            for part in parts { transport.write(ByteBuffer(string: part)) }
            transport.flush()
        }.wait()
        let expected = Array(parts.joined().utf8)
        #expect(Self.read(peer, count: expected.count) == expected)
    }

    @Test(arguments: [true, false])
    func aPeerThatStoppedReadingFailsTheSendWithItsError(batchedSends: Bool) throws {
        let (loop, transport, peer, recorder) = try Self.connectedPair(batchedSends: batchedSends)
        defer {
            close(peer)
            try? loop.syncShutdownGracefully()
        }
        // The peer can still send, so the transport sees no end of file: only the send fails.
        #expect(shutdown(peer, Int32(SHUT_RD)) == 0)
        try loop.submit { transport.writeAndFlush(ByteBuffer(string: "lost")) }.wait()
        try Self.waitUntil { recorder.closed.withLockedValue { $0 } != nil }
        #expect(recorder.closed.withLockedValue { $0 } == .some(String(cString: strerror(EPIPE))))
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
        }

        func transportClosed(error: String?) {
            self.closed.withLockedValue { $0 = .some(error) }
        }
    }

    /// A loop, a transport on one end of a Unix socket pair, the other end (blocking) and the delegate.
    static func connectedPair(batchedSends: Bool = true) throws -> (IOLoop, Transport, Int32, Recorder) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw IOError(errnoCode: errno, reason: "socketpair") }
        let loop = try IOLoop(batchedSends: batchedSends)
        loop.start()
        let recorder = Recorder()
        let transport = try loop.submit {
            try Transport.start(fd: fds[0], loop: loop, noDelay: false, delegate: recorder)
        }.wait()
        return (loop, transport, fds[1], recorder)
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
