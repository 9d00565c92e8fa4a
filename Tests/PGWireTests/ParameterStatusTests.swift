// ParameterStatus: written by the agent at startup, read back from servers to track their settings.

import NIOCore
import PGWire
import Testing

@Suite struct ParameterStatusTests {
    @Test func writesTypeLengthAndTwoNullTerminatedStrings() {
        #expect(
            written { $0.writeParameterStatus(name: "client_encoding", value: "UTF8") }
                == [0x53] + int32(4 + 16 + 5) + cString("client_encoding") + cString("UTF8")
        )
    }

    @Test(arguments: [
        ParameterStatus(name: "TimeZone", value: "Europe/Zürich"),
        ParameterStatus(name: "application_name", value: ""),
        ParameterStatus(name: "search_path", value: "\"$user\", public"),
        ParameterStatus(name: "x", value: String(repeating: "🐘", count: 300)),
    ])
    func roundTrips(status: ParameterStatus) throws {
        var buffer = ByteBuffer()
        buffer.writeParameterStatus(name: status.name, value: status.value)
        var (type, body) = try #require(onlyMessage(in: buffer))
        #expect(type == BackendMessageID.parameterStatus)
        #expect(try ParameterStatus.decode(from: &body) == status)
    }

    @Test func decodingRefusesAMissingValue() {
        var body = ByteBuffer(bytes: cString("DateStyle"))
        #expect(throws: WireError.malformed("ParameterStatus is not two null-terminated strings")) {
            try ParameterStatus.decode(from: &body)
        }
    }

    @Test func decodingRefusesAnUnterminatedValue() {
        var body = ByteBuffer(bytes: cString("DateStyle") + Array("ISO".utf8))
        #expect(throws: WireError.malformed("ParameterStatus is not two null-terminated strings")) {
            try ParameterStatus.decode(from: &body)
        }
    }

    @Test func decodingRefusesTrailingBytes() {
        var body = ByteBuffer(bytes: cString("DateStyle") + cString("ISO, MDY") + [1, 2])
        #expect(throws: WireError.leftoverBytes(what: "ParameterStatus", count: 2)) {
            try ParameterStatus.decode(from: &body)
        }
    }
}
