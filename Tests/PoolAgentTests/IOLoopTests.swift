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

    static func waitUntil(_ condition: () -> Bool) throws {
        for _ in 0..<500 {
            if condition() { return }
            usleep(10_000)
        }
        Issue.record("condition not met within 5 s")
    }
}
