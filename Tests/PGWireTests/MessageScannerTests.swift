// MessageScanner: message boundaries found across arbitrary reads, with nothing lost, duplicated or held too long.

import NIOCore
import PGWire
import Testing

@Suite struct MessageScannerTests {
    /// What the scanner reported for one message: its type, its offset in the whole stream, its captured body.
    struct Scanned: Equatable, CustomStringConvertible {
        var type: UInt8
        var offset: Int
        var body: [UInt8]?

        var description: String {
            "\(Character(Unicode.Scalar(self.type)))@\(self.offset)\(self.body.map { " body \($0.count)" } ?? "")"
        }
    }

    /// Drives a scanner the way a connection does: join, scan from the reader index, forward up to the end.
    struct Feed {
        var scanner: MessageScanner
        var messages: [Scanned] = []
        var forwarded: [UInt8] = []
        var fed = 0

        mutating func receive(_ piece: [UInt8]) throws(WireError) {
            // A read buffer whose reader index is not zero, so the scanner must honour it.
            var input = ByteBuffer(bytes: [0xEE, 0xEE, 0xEE] + piece)
            input.moveReaderIndex(forwardBy: 3)
            self.fed += piece.count
            let buffer = self.scanner.join(input)
            // Held-back bytes come first in the joined buffer and were never forwarded.
            let streamOffsetOfReaderIndex = self.forwarded.count
            var cursor = buffer.readerIndex
            while true {
                switch try self.scanner.next(in: buffer, cursor: &cursor) {
                case .message(let type, let start, let body):
                    let offset = streamOffsetOfReaderIndex + start - buffer.readerIndex
                    self.messages.append(Scanned(type: type, offset: offset, body: body.map { $0.slice(of: buffer).bytes }))
                case .end(let forwardableEnd):
                    self.forwarded += buffer.getBytes(
                        at: buffer.readerIndex, length: forwardableEnd - buffer.readerIndex)!
                    return
                }
            }
        }
    }

    /// A stream of server messages: pass-through bodies (including an empty one) between captured types.
    struct Stream {
        static let captureTypes = MessageTypeSet([
            BackendMessageID.parameterStatus, BackendMessageID.errorResponse, BackendMessageID.readyForQuery,
        ])

        var bytes: [UInt8] = []
        var expected: [Scanned] = []

        init(_ messages: [(Character, [UInt8])]) {
            for (type, body) in messages {
                let typeByte = type.asciiValue!
                let captured = Self.captureTypes.contains(typeByte)
                self.expected.append(Scanned(type: typeByte, offset: self.bytes.count, body: captured ? body : nil))
                self.bytes += typedMessage(type, body)
            }
        }

        static let mixed = Stream([
            ("T", Array(0..<10)),
            ("S", cString("client_encoding") + cString("UTF8")),
            ("D", []),
            ("E", [UInt8(ascii: "S")] + cString("ERROR") + [UInt8(ascii: "C")] + cString("42601") + [0]),
            ("C", cString("SELECT 1")),
            ("Z", [UInt8(ascii: "I")]),
            ("D", (0..<300).map { UInt8(truncatingIfNeeded: $0) }),
            ("Z", [UInt8(ascii: "T")]),
        ])

        /// Bytes after the last forwardable byte once `fed` bytes have arrived: an incomplete header, or an
        /// incomplete captured message. Pass-through bodies are forwarded as they come.
        func heldBackTail(afterFeeding fed: Int) -> Int {
            guard let message = self.expected.last(where: { $0.offset < fed }) else { return 0 }
            let end = message.offset + 5 + (message.body?.count ?? self.bodyLength(at: message.offset))
            guard fed < end else { return 0 }
            let partial = fed - message.offset
            return partial < 5 || message.body != nil ? partial : 0
        }

        func bodyLength(at offset: Int) -> Int {
            let length = self.bytes[(offset + 1)..<(offset + 5)].reduce(0) { $0 << 8 | Int($1) }
            return length - 4
        }

        func isBoundary(_ offset: Int) -> Bool {
            offset == self.bytes.count || self.expected.contains { $0.offset == offset }
        }

        /// Checks what a feed has forwarded and holds after `feed.fed` bytes of this stream.
        func check(_ feed: Feed, _ context: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let tail = self.heldBackTail(afterFeeding: feed.fed)
            #expect(
                feed.forwarded == Array(self.bytes[..<(feed.fed - tail)]),
                "forwarded bytes after \(feed.fed) bytes (\(context))",
                sourceLocation: sourceLocation
            )
            #expect(
                feed.scanner.isAtBoundary == self.isBoundary(feed.fed),
                "isAtBoundary after \(feed.fed) bytes (\(context))",
                sourceLocation: sourceLocation
            )
        }
    }

    func makeScanner() -> MessageScanner {
        MessageScanner(captureTypes: Stream.captureTypes)
    }

    // MARK: Splitting

    @Test func wholeStreamInOneRead() throws {
        let stream = Stream.mixed
        var feed = Feed(scanner: self.makeScanner())
        try feed.receive(stream.bytes)
        #expect(feed.messages == stream.expected)
        #expect(feed.forwarded == stream.bytes)
        #expect(feed.scanner.isAtBoundary)
    }

    @Test func streamSplitInTwoAtEveryByteBoundary() throws {
        let stream = Stream.mixed
        for cut in 0...stream.bytes.count {
            var feed = Feed(scanner: self.makeScanner())
            try feed.receive(Array(stream.bytes[..<cut]))
            stream.check(feed, "first piece of a cut at \(cut)")
            try feed.receive(Array(stream.bytes[cut...]))
            stream.check(feed, "second piece of a cut at \(cut)")
            #expect(feed.messages == stream.expected, "cut at \(cut)")
            #expect(feed.forwarded == stream.bytes, "cut at \(cut)")
        }
    }

    @Test func streamFedOneByteAtATime() throws {
        let stream = Stream.mixed
        var feed = Feed(scanner: self.makeScanner())
        for byte in stream.bytes {
            try feed.receive([byte])
            stream.check(feed, "byte by byte")
        }
        #expect(feed.messages == stream.expected)
        #expect(feed.forwarded == stream.bytes)
    }

    @Test func emptyReadsChangeNothing() throws {
        let stream = Stream.mixed
        var feed = Feed(scanner: self.makeScanner())
        try feed.receive([])
        try feed.receive(Array(stream.bytes[..<3]))
        try feed.receive([])
        stream.check(feed, "after an empty read")
        try feed.receive(Array(stream.bytes[3...]))
        try feed.receive([])
        #expect(feed.messages == stream.expected)
        #expect(feed.forwarded == stream.bytes)
    }

    // MARK: Large bodies

    @Test func oneMegabyteBodyStreamsThroughWithoutBeingHeldBack() throws {
        let body = [UInt8](repeating: 0xAB, count: 1 << 20)
        let stream = Stream([("D", body), ("Z", [UInt8(ascii: "I")])])
        var feed = Feed(scanner: MessageScanner(captureTypes: Stream.captureTypes, maxCaptureLength: 4096))
        var offset = 0
        while offset < stream.bytes.count {
            let end = min(offset + 65_536, stream.bytes.count)
            try feed.receive(Array(stream.bytes[offset..<end]))
            offset = end
            if offset < stream.expected[1].offset {
                #expect(feed.forwarded.count == offset, "everything received so far is forwarded at once")
                #expect(!feed.scanner.isAtBoundary)
            }
        }
        #expect(feed.messages == stream.expected)
        #expect(feed.forwarded == stream.bytes)
        #expect(feed.scanner.isAtBoundary)
    }

    @Test func capturedMessageLargerThanTheLimitThrowsOnceItsHeaderIsSeen() {
        var scanner = MessageScanner(captureTypes: Stream.captureTypes, maxCaptureLength: 64)
        let message = typedMessage("S", [UInt8](repeating: 0x41, count: 100))
        let buffer = scanner.join(ByteBuffer(bytes: message[..<5]))
        var cursor = buffer.readerIndex
        #expect(throws: WireError.messageTooLarge(type: UInt8(ascii: "S"), length: 104, limit: 64)) {
            try scanner.next(in: buffer, cursor: &cursor)
        }
    }

    @Test func capturedMessageExactlyAtTheLimitIsCaptured() throws {
        let body = [UInt8](repeating: 0x41, count: 59)
        var feed = Feed(scanner: MessageScanner(captureTypes: Stream.captureTypes, maxCaptureLength: 64))
        try feed.receive(typedMessage("S", body))
        #expect(feed.messages == [Scanned(type: UInt8(ascii: "S"), offset: 0, body: body)])

        var over = Feed(scanner: MessageScanner(captureTypes: Stream.captureTypes, maxCaptureLength: 64))
        #expect(throws: WireError.messageTooLarge(type: UInt8(ascii: "S"), length: 64, limit: 64)) {
            try over.receive(typedMessage("S", body + [0x41]))
        }
    }

    @Test func messageLongerThanTheMessageLimitThrows() {
        var feed = Feed(scanner: MessageScanner(captureTypes: MessageTypeSet(), maxMessageLength: 1000))
        #expect(throws: WireError.messageTooLarge(type: UInt8(ascii: "D"), length: 1001, limit: 1000)) {
            try feed.receive([UInt8(ascii: "D")] + int32(1001))
        }
    }

    @Test(arguments: [Int32(3), 0, -1, Int32.min])
    func lengthBelowFourThrowsInvalidLength(length: Int32) throws {
        var feed = Feed(scanner: self.makeScanner())
        // A valid message first: the error is raised on the bad one, after the good one was reported.
        let valid = typedMessage("C", cString("SELECT 1"))
        #expect(throws: WireError.invalidLength(type: UInt8(ascii: "D"), length: Int(length))) {
            try feed.receive(valid + [UInt8(ascii: "D")] + int32(length) + [0, 0, 0, 0])
        }
        #expect(feed.messages == [Scanned(type: UInt8(ascii: "C"), offset: 0, body: nil)])
    }

    // MARK: Boundaries

    @Test func isAtBoundaryFollowsHeldBackHeadersAndSkippedBodies() throws {
        var feed = Feed(scanner: self.makeScanner())
        #expect(feed.scanner.isAtBoundary)

        let readyForQuery = typedMessage("Z", [UInt8(ascii: "I")])
        try feed.receive(Array(readyForQuery[..<3]))
        #expect(!feed.scanner.isAtBoundary, "a partial header is held back")
        #expect(feed.forwarded.isEmpty)
        try feed.receive(Array(readyForQuery[3...]))
        #expect(feed.scanner.isAtBoundary)
        #expect(feed.forwarded == readyForQuery)

        let dataRow = typedMessage("D", [1, 2, 3, 4, 5, 6])
        try feed.receive(Array(dataRow[..<7]))
        #expect(!feed.scanner.isAtBoundary, "a pass-through body is being skipped")
        #expect(feed.forwarded.count == readyForQuery.count + 7)
        try feed.receive(Array(dataRow[7...]))
        #expect(feed.scanner.isAtBoundary)
        #expect(feed.forwarded == readyForQuery + dataRow)

        let parameterStatus = typedMessage("S", cString("a") + cString("b"))
        try feed.receive(Array(parameterStatus[..<6]))
        #expect(!feed.scanner.isAtBoundary, "a partial captured message is held back")
        #expect(feed.forwarded == readyForQuery + dataRow)
    }

    @Test func captureTypesCanChangeBetweenReads() throws {
        var feed = Feed(scanner: MessageScanner(captureTypes: MessageTypeSet()))
        try feed.receive(typedMessage("Z", [UInt8(ascii: "I")]))
        feed.scanner.captureTypes.insert(BackendMessageID.readyForQuery)
        try feed.receive(typedMessage("Z", [UInt8(ascii: "T")]))
        #expect(
            feed.messages == [
                Scanned(type: UInt8(ascii: "Z"), offset: 0, body: nil),
                Scanned(type: UInt8(ascii: "Z"), offset: 6, body: [UInt8(ascii: "T")]),
            ]
        )
    }
}
