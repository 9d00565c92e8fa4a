// ReadyForQuery and its transaction status byte: the point where pooling decisions are made.

import NIOCore
import PGWire
import Testing

@Suite struct ReadyForQueryTests {
    @Test(arguments: [
        (TransactionStatus.idle, UInt8(ascii: "I")),
        (.inTransaction, UInt8(ascii: "T")),
        (.failedTransaction, UInt8(ascii: "E")),
    ])
    func writesTheExactFiveByteMessage(status: TransactionStatus, byte: UInt8) {
        #expect(written { $0.writeReadyForQuery(status) } == [0x5A, 0, 0, 0, 5, byte])
    }

    @Test(arguments: [TransactionStatus.idle, .inTransaction, .failedTransaction])
    func roundTrips(status: TransactionStatus) throws {
        var buffer = ByteBuffer()
        buffer.writeReadyForQuery(status)
        var (type, body) = try #require(onlyMessage(in: buffer))
        #expect(type == BackendMessageID.readyForQuery)
        #expect(try TransactionStatus.decode(from: &body) == status)
    }

    @Test(arguments: [[], [UInt8(ascii: "X")], [0], [UInt8(ascii: "I"), UInt8(ascii: "I")]])
    func decodingRefusesAnythingButOneKnownStatusByte(body bytes: [UInt8]) {
        var body = ByteBuffer(bytes: bytes)
        #expect(throws: WireError.malformed("ReadyForQuery carries no valid transaction status")) {
            try TransactionStatus.decode(from: &body)
        }
    }

    @Test func decodesABodyWhereItLiesInTheScannedBuffer() throws {
        // Two messages; the scanner reports where the second one's body is.
        var buffer = ByteBuffer()
        buffer.writeReadyForQuery(.idle)
        buffer.writeReadyForQuery(.inTransaction)
        #expect(try TransactionStatus.decode(MessageBody(index: 11, length: 1), in: buffer) == .inTransaction)
        #expect(throws: WireError.malformed("ReadyForQuery carries no valid transaction status")) {
            try TransactionStatus.decode(MessageBody(index: 10, length: 1), in: buffer)  // the length word, not a status
        }
        #expect(throws: WireError.malformed("ReadyForQuery carries no valid transaction status")) {
            try TransactionStatus.decode(MessageBody(index: 11, length: 0), in: buffer)
        }
    }

    @Test func statusDescriptionsReadAsPostgreSQLDescribesThem() {
        #expect(TransactionStatus.idle.description == "idle")
        #expect(TransactionStatus.inTransaction.description == "in transaction")
        #expect(TransactionStatus.failedTransaction.description == "in failed transaction")
    }
}
