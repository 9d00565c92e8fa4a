// Query and Terminate, the frontend messages the agent itself sends to servers.

import NIOCore
import PGWire
import Testing

@Suite struct FrontendMessagesTests {
    @Test func queryIsTypeLengthAndNullTerminatedSQL() {
        #expect(
            written { $0.writeQuery("SELECT 1") }
                == [0x51, 0, 0, 0, 13, 0x53, 0x45, 0x4C, 0x45, 0x43, 0x54, 0x20, 0x31, 0]
        )
    }

    @Test func queryLengthCountsUTF8BytesNotCharacters() {
        let sql = "SET application_name = 'café 🐘'"
        let bytes = written { $0.writeQuery(sql) }
        #expect(bytes == typedMessage("Q", cString(sql)))
        #expect(bytes.count == 5 + sql.utf8.count + 1)
    }

    @Test func queryRoundTripsThroughItsBody() throws {
        let sql = "DISCARD ALL"
        var buffer = ByteBuffer()
        buffer.writeQuery(sql)
        var (type, body) = try #require(onlyMessage(in: buffer))
        #expect(type == FrontendMessageID.query)
        #expect(body.readNullTerminatedString() == sql)
        #expect(body.readableBytes == 0)
    }

    @Test func terminateIsTheExactFiveByteMessage() {
        #expect(written { $0.writeTerminate() } == [0x58, 0, 0, 0, 4])
    }
}
