// Walks a stream of typed messages across reads without copying bodies, so buffers can be forwarded whole.

import NIOCore

/// Finds message boundaries in a byte stream that arrives in arbitrary pieces.
///
/// Bodies of ordinary messages are skipped, even when they span many reads, so a 1 GB DataRow streams
/// through. Messages whose type is in `captureTypes` are only reported once complete, with their body;
/// an incomplete header or captured message at the end of a read is held back and joined to the next one,
/// so the bytes before it can be forwarded at once.
public struct MessageScanner: Sendable {
    public enum Step: Sendable {
        /// A message starts at `start` (an index into the scanned buffer). `body` is set for captured types:
        /// where the whole body lies in the buffer, sliced only by a caller that reads it.
        case message(type: UInt8, start: Int, body: MessageBody?)
        /// No more messages in this buffer; bytes from the reader index up to `forwardableEnd` are complete
        /// or belong to a pass-through body; the rest is held back for the next read.
        case end(forwardableEnd: Int)
    }

    public var captureTypes: MessageTypeSet
    public let maxCaptureLength: Int
    public let maxMessageLength: Int
    @usableFromInline var skipRemaining: Int = 0
    @usableFromInline var heldBack: ByteBuffer? = nil

    public init(captureTypes: MessageTypeSet, maxCaptureLength: Int = 1 << 20, maxMessageLength: Int = 1 << 30) {
        self.captureTypes = captureTypes
        self.maxCaptureLength = maxCaptureLength
        self.maxMessageLength = maxMessageLength
    }

    /// True when the stream is at a message boundary with nothing held back.
    @inlinable
    public var isAtBoundary: Bool { self.skipRemaining == 0 && self.heldBack == nil }

    /// Joins `input` to whatever was held back from the previous read; scan the result from its reader index.
    public mutating func join(_ input: ByteBuffer) -> ByteBuffer {
        guard var held = self.heldBack else { return input }
        self.heldBack = nil
        held.writeImmutableBuffer(input)
        return held
    }

    /// Advances `cursor` (start it at `buffer.readerIndex`) past the next message or body piece.
    @inlinable
    public mutating func next(in buffer: ByteBuffer, cursor: inout Int) throws(WireError) -> Step {
        let end = buffer.writerIndex
        while true {
            if self.skipRemaining > 0 {
                let skipped = min(self.skipRemaining, end - cursor)
                cursor += skipped
                self.skipRemaining -= skipped
            }
            if cursor == end { return .end(forwardableEnd: end) }
            guard end - cursor >= 5 else { return self.holdBack(buffer, from: cursor) }
            // The header read straight from memory: this runs for every message the agent forwards.
            let offset = cursor - buffer.readerIndex
            let (type, length) = buffer.withUnsafeReadableBytes { raw in
                (raw[offset], Int(Int32(bigEndian: raw.loadUnaligned(fromByteOffset: offset + 1, as: Int32.self))))
            }
            guard length >= 4 else { throw .invalidLength(type: type, length: length) }
            guard length <= self.maxMessageLength else {
                throw .messageTooLarge(type: type, length: length, limit: self.maxMessageLength)
            }
            let total = length + 1
            let start = cursor
            if self.captureTypes.contains(type) {
                guard total <= self.maxCaptureLength else {
                    throw .messageTooLarge(type: type, length: length, limit: self.maxCaptureLength)
                }
                guard end - cursor >= total else { return self.holdBack(buffer, from: cursor) }
                cursor += total
                return .message(type: type, start: start, body: MessageBody(index: start + 5, length: length - 4))
            }
            let available = end - cursor
            if available >= total {
                cursor += total
            } else {
                self.skipRemaining = total - available
                cursor = end
            }
            return .message(type: type, start: start, body: nil)
        }
    }

    @usableFromInline
    mutating func holdBack(_ buffer: ByteBuffer, from index: Int) -> Step {
        self.heldBack = buffer.getSlice(at: index, length: buffer.writerIndex - index)?.compacted
        return .end(forwardableEnd: index)
    }
}

/// A complete message body inside the buffer being scanned.
public struct MessageBody: Sendable, Equatable {
    /// The index of the body's first byte (after the type and length).
    public var index: Int
    public var length: Int

    @inlinable
    public init(index: Int, length: Int) {
        self.index = index
        self.length = length
    }

    /// The body as a buffer of its own (a slice, no copy).
    @inlinable
    public func slice(of buffer: ByteBuffer) -> ByteBuffer {
        buffer.getSlice(at: self.index, length: self.length)!
    }

    /// Calls `body` with the body's bytes where they lie in `buffer`, without copying them.
    @inlinable
    public func withBytes<Result>(in buffer: ByteBuffer, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        buffer.withUnsafeReadableBytes { raw in
            let offset = self.index - buffer.readerIndex
            return body(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + self.length)]))
        }
    }

    /// The body's first byte, if it has one.
    @inlinable
    public func firstByte(in buffer: ByteBuffer) -> UInt8? {
        self.length > 0 ? buffer.getInteger(at: self.index, as: UInt8.self) : nil
    }
}

extension ByteBuffer {
    /// This buffer, or a copy of its readable bytes when they are a small part of a larger storage (a read
    /// buffer the agent reuses): what is kept beyond a read then does not keep the whole read buffer.
    public var compacted: ByteBuffer {
        guard self.storageCapacity > 2 * self.readableBytes + 1024 else { return self }
        var copy = ByteBufferAllocator().buffer(capacity: self.readableBytes)
        copy.writeImmutableBuffer(self)
        return copy
    }
}
