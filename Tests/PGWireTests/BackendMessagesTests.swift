// AuthenticationOk, BackendKeyData and NegotiateProtocolVersion as the agent writes them, and the framing beneath.

import NIOCore
import PGWire
import Testing

@Suite struct BackendMessagesTests {
    @Test func authenticationOkIsTheExactEightByteMessage() {
        #expect(written { $0.writeAuthenticationOk() } == [0x52, 0, 0, 0, 8, 0, 0, 0, 0])
    }

    @Test func backendKeyDataCarriesProcessIDAndSecretBigEndian() {
        let key = CancelRequest(processID: 0x0102_0304, secretKey: -2)
        #expect(
            written { $0.writeBackendKeyData(key) }
                == [0x4B, 0, 0, 0, 12, 0x01, 0x02, 0x03, 0x04, 0xFF, 0xFF, 0xFF, 0xFE]
        )
    }

    @Test(arguments: [
        CancelRequest(processID: 0, secretKey: 0),
        CancelRequest(processID: 4242, secretKey: Int32.min),
        CancelRequest(processID: Int32.max, secretKey: -1),
    ])
    func backendKeyDataGivesTheKeyACancelRequestPresentsBack(key: CancelRequest) throws {
        var message = ByteBuffer()
        message.writeBackendKeyData(key)
        let (type, body) = try #require(onlyMessage(in: message))
        #expect(type == BackendMessageID.backendKeyData)

        // A client copies the eight key bytes into its CancelRequest.
        var cancel = ByteBuffer(bytes: untypedPacket(int32(StartupPacket.cancelRequestCode) + body.bytes))
        #expect(try StartupPacket.decode(from: &cancel) == .cancelRequest(key))
    }

    @Test func negotiateProtocolVersionWithoutOptions() {
        #expect(
            written { $0.writeNegotiateProtocolVersion(minorVersion: 0, unsupportedOptions: []) }
                == [0x76, 0, 0, 0, 12, 0, 3, 0, 0, 0, 0, 0, 0]
        )
    }

    @Test func negotiateProtocolVersionListsTheIgnoredOptionsInOrder() {
        let expected: [UInt8] =
            [0x76] + int32(4 + 4 + 4 + 11 + 9)
            + [0, 3, 0, 0] + int32(2)
            + cString("_pq_.alpha") + cString("_pq_.zed")
        #expect(
            written {
                $0.writeNegotiateProtocolVersion(minorVersion: 0, unsupportedOptions: ["_pq_.alpha", "_pq_.zed"])
            }
                == expected
        )
    }

    @Test func negotiateProtocolVersionCarriesTheMinorVersion() {
        let bytes = written { $0.writeNegotiateProtocolVersion(minorVersion: 2, unsupportedOptions: []) }
        #expect(Array(bytes[5..<9]) == [0, 3, 0, 2])
    }

    @Test func messagesWrittenBackToBackEachCarryTheirOwnLength() throws {
        var buffer = ByteBuffer()
        buffer.writeAuthenticationOk()
        buffer.writeParameterStatus(name: "server_version", value: "17.0")
        buffer.writeBackendKeyData(CancelRequest(processID: 7, secretKey: 9))
        buffer.writeReadyForQuery(.idle)

        let messages = try #require(typedMessages(in: buffer))
        #expect(messages.map(\.type) == [0x52, 0x53, 0x4B, 0x5A])
        #expect(messages.map(\.body.readableBytes) == [4, 15 + 5, 8, 1])
    }

    @Test func writeMessageWithAnEmptyBodyHasLengthFour() {
        #expect(written { $0.writeMessage(0x31) { _ in } } == [0x31, 0, 0, 0, 4])
    }
}
