// The untyped packets a client sends first: StartupMessage, SSLRequest, GSSENCRequest and CancelRequest.

import NIOCore
import PGWire
import Testing

@Suite struct StartupPacketTests {
    static let protocol30: [UInt8] = [0, 3, 0, 0]

    /// Decodes `bytes` as the front of a client stream, returning the packet and how many bytes it consumed.
    func decode(_ bytes: [UInt8]) throws(StartupError) -> (packet: StartupPacket?, consumed: Int) {
        var buffer = ByteBuffer(bytes: bytes)
        let packet = try StartupPacket.decode(from: &buffer)
        return (packet, bytes.count - buffer.readableBytes)
    }

    func error(decoding bytes: [UInt8]) -> StartupError? {
        do {
            _ = try self.decode(bytes)
            return nil
        } catch {
            return error
        }
    }

    func startupBytes(_ parameters: [(String, String)], protocol version: [UInt8] = protocol30) -> [UInt8] {
        untypedPacket(version + parameters.flatMap { cString($0.0) + cString($0.1) } + [0])
    }

    // MARK: StartupMessage

    @Test func decodesParametersInTheOrderSent() throws {
        let bytes = self.startupBytes([("user", "alice"), ("database", "shop"), ("application_name", "psql")])
        let (packet, consumed) = try self.decode(bytes)
        #expect(consumed == bytes.count)
        guard case .startup(let message) = try #require(packet) else {
            Issue.record("expected a StartupMessage, got \(String(describing: packet))")
            return
        }
        #expect(message.minorVersion == 0)
        #expect(message.parameters.map(\.0) == ["user", "database", "application_name"])
        #expect(message.parameters.map(\.1) == ["alice", "shop", "psql"])
        #expect(message.user == "alice")
        #expect(message.database == "shop")
        #expect(message["application_name"] == "psql")
        #expect(message["options"] == nil)
        #expect(message.protocolOptions.isEmpty)
    }

    @Test func databaseDefaultsToTheUser() {
        #expect(StartupMessage(parameters: [("user", "bob")]).database == "bob")
        #expect(StartupMessage(parameters: [("user", "bob"), ("database", "")]).database == "bob")
        #expect(StartupMessage(parameters: [("database", "shop")]).database == "shop")
        #expect(StartupMessage(parameters: []).database == nil)
    }

    @Test func protocolOptionsAreTheUnderscorePQParametersInOrder() throws {
        let bytes = self.startupBytes(
            [("_pq_.b", "1"), ("user", "u"), ("_pq_.a", "x"), ("pq_.c", "no")], protocol: [0, 3, 0, 2])
        let (packet, _) = try self.decode(bytes)
        guard case .startup(let message) = try #require(packet) else {
            Issue.record("expected a StartupMessage, got \(String(describing: packet))")
            return
        }
        #expect(message.minorVersion == 2)
        #expect(message.protocolOptions == ["_pq_.b", "_pq_.a"])
    }

    @Test func encodesTheExactBytesPostgreSQLExpects() {
        let message = StartupMessage(parameters: [("user", "bob"), ("database", "db")])
        let bytes = written { message.encode(into: &$0) }
        #expect(
            bytes == int32(30) + [0, 3, 0, 0] + cString("user") + cString("bob") + cString("database") + cString("db")
                + [0])
    }

    @Test(arguments: [
        StartupMessage(parameters: [("user", "alice")]),
        StartupMessage(
            minorVersion: 2, parameters: [("user", "ünï"), ("options", "-c search_path=x"), ("_pq_.y", "")]),
        StartupMessage(parameters: []),
    ])
    func roundTripsAndLeavesTheNextPacketUnread(message: StartupMessage) throws {
        var buffer = ByteBuffer()
        message.encode(into: &buffer)
        let length = buffer.readableBytes
        buffer.writeBytes([0x51, 0, 0, 0])
        #expect(try StartupPacket.decode(from: &buffer) == .startup(message))
        #expect(buffer.readerIndex == length)
        #expect(buffer.bytes == [0x51, 0, 0, 0])
    }

    @Test func decodesAtTheBufferReaderIndexNotAtZero() throws {
        var buffer = ByteBuffer(bytes: [9, 9, 9])
        buffer.moveReaderIndex(forwardBy: 3)
        StartupMessage(parameters: [("user", "u")]).encode(into: &buffer)
        #expect(try StartupPacket.decode(from: &buffer) == .startup(StartupMessage(parameters: [("user", "u")])))
        #expect(buffer.readableBytes == 0)
    }

    @Test func parametersCompareInOrder() {
        let ab = StartupMessage(parameters: [("a", "1"), ("b", "2")])
        #expect(ab == StartupMessage(parameters: [("a", "1"), ("b", "2")]))
        #expect(ab != StartupMessage(parameters: [("b", "2"), ("a", "1")]))
        #expect(ab != StartupMessage(minorVersion: 1, parameters: [("a", "1"), ("b", "2")]))
    }

    // MARK: SSLRequest, GSSENCRequest, CancelRequest

    @Test func decodesSSLRequest() throws {
        let (packet, consumed) = try self.decode([0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F])
        #expect(packet == .sslRequest)
        #expect(consumed == 8)
    }

    @Test func decodesGSSENCRequest() throws {
        let (packet, consumed) = try self.decode([0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30])
        #expect(packet == .gssEncRequest)
        #expect(consumed == 8)
    }

    @Test func decodesCancelRequest() throws {
        let (packet, consumed) = try self.decode([
            0, 0, 0, 16, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0x30, 0x39, 0xFF, 0xFF, 0xFF, 0xFF,
        ])
        #expect(packet == .cancelRequest(CancelRequest(processID: 12345, secretKey: -1)))
        #expect(consumed == 16)
    }

    @Test func cancelRequestEncodesTheExactBytesAndRoundTrips() throws {
        let key = CancelRequest(processID: 77, secretKey: Int32.min)
        let bytes = written { key.encode(into: &$0) }
        #expect(bytes == [0, 0, 0, 16, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0, 77, 0x80, 0, 0, 0])
        #expect(try self.decode(bytes).packet == .cancelRequest(key))
    }

    @Test(arguments: [StartupPacket.sslRequestCode, StartupPacket.gssEncRequestCode])
    func encryptionRequestWithABodyIsRefused(code: Int32) {
        #expect(self.error(decoding: untypedPacket(int32(code) + [0, 0, 0, 0])) == .invalidLength(12))
    }

    @Test(arguments: [[UInt8](), [0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]])
    func cancelRequestWithoutExactlyAKeyIsRefused(key: [UInt8]) {
        let bytes = untypedPacket(int32(StartupPacket.cancelRequestCode) + key)
        #expect(self.error(decoding: bytes) == .invalidLength(bytes.count))
    }

    // MARK: Incomplete input

    @Test(arguments: [
        [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F],
        [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30],
        [0, 0, 0, 16, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0, 1, 0, 0, 0, 2],
        untypedPacket([0, 3, 0, 0] + cString("user") + cString("alice") + cString("database") + cString("d") + [0]),
    ])
    func truncatedInputIsIncompleteAtEveryCutPoint(packet: [UInt8]) throws {
        for cut in 0..<packet.count {
            var buffer = ByteBuffer(bytes: packet[..<cut])
            #expect(try StartupPacket.decode(from: &buffer) == nil, "cut at \(cut) of \(packet.count)")
            #expect(buffer.readableBytes == cut, "a nil decode must consume nothing (cut at \(cut))")
        }
        #expect(try self.decode(packet).packet != nil)
    }

    // MARK: Refusals

    @Test(arguments: [10_005, 65_536, Int(Int32.max)])
    func oversizedLengthIsRefusedBeforeTheBodyArrives(length: Int) {
        #expect(self.error(decoding: int32(Int32(length))) == .tooLarge(length - 4), "the limit leaves out the length word")
    }

    @Test func aPacketOfExactlyTheMaximumLengthIsAccepted() throws {
        // PostgreSQL's limit leaves out the length word: 4 version + "user\0" + "u\0" + "big\0" + value + "\0" + "\0"
        let value = String(repeating: "v", count: StartupPacket.maximumLength - 4 - 5 - 2 - 4 - 1 - 1)
        let bytes = self.startupBytes([("user", "u"), ("big", value)])
        #expect(bytes.count == StartupPacket.maximumLength + 4)
        let (packet, consumed) = try self.decode(bytes)
        #expect(packet == .startup(StartupMessage(parameters: [("user", "u"), ("big", value)])))
        #expect(consumed == StartupPacket.maximumLength + 4)
    }

    @Test(arguments: [Int32.min, -1, 0, 4, 7])
    func tooShortLengthIsRefused(length: Int32) {
        #expect(self.error(decoding: int32(length) + [0, 3, 0, 0, 0]) == .invalidLength(Int(length)))
        #expect(self.error(decoding: int32(length)) == .invalidLength(Int(length)))
    }

    @Test(arguments: [(2, 0), (4, 0), (1, 0), (4, 1)])
    func otherProtocolVersionsAreRefusedAsFeatureNotSupported(major: Int, minor: Int) {
        let version = int32(Int32(major << 16 | minor))
        let refusal = self.error(decoding: self.startupBytes([("user", "u")], protocol: version))
        #expect(refusal == .unsupportedProtocol(major: major, minor: minor))
        #expect(refusal?.sqlState == "0A000")
        #expect(refusal?.description == "unsupported frontend protocol \(major).\(minor): server supports 3.0 to 3.0")
    }

    @Test func protocolTwoWithALongOldStyleBodyIsRefusedAsUnsupported() {
        // A 2.0 startup packet is fixed at 296 bytes; the version alone decides the answer.
        let bytes = untypedPacket([0, 2, 0, 0] + [UInt8](repeating: 0, count: 288))
        #expect(self.error(decoding: bytes) == .unsupportedProtocol(major: 2, minor: 0))
    }

    @Test func missingTerminatorIsMalformed() {
        let bytes = untypedPacket(Self.protocol30 + cString("user") + cString("alice"))
        let refusal = self.error(decoding: bytes)
        #expect(refusal == .malformed("startup packet parameters are not terminated"))
        #expect(refusal?.sqlState == "08P01")
    }

    @Test func emptyStartupBodyIsMalformed() {
        #expect(
            self.error(decoding: untypedPacket(Self.protocol30))
                == .malformed("startup packet parameters are not terminated"))
    }

    @Test func parameterWithoutValueIsMalformed() {
        let bytes = untypedPacket(Self.protocol30 + cString("user") + cString("alice") + cString("database"))
        #expect(self.error(decoding: bytes) == .malformed("startup packet parameter \"database\" has no value"))
    }

    @Test func bytesAfterTheTerminatorAreMalformed() {
        let bytes = untypedPacket(Self.protocol30 + cString("user") + cString("alice") + [0] + Array("junk".utf8))
        #expect(self.error(decoding: bytes) == .malformed("startup packet has 4 bytes after its terminator"))
    }

    @Test func refusalsOtherThanTheProtocolVersionAreProtocolViolations() {
        #expect(StartupError.invalidLength(3).sqlState == "08P01")
        #expect(StartupError.tooLarge(20_000).sqlState == "08P01")
        #expect(StartupError.malformed("x").sqlState == "08P01")
        #expect(StartupError.invalidLength(3).description == "invalid length of startup packet: 3 bytes")
        #expect(
            StartupError.tooLarge(20_000).description
                == "startup packet of 20000 bytes exceeds the limit of 10000 bytes"
        )
    }
}
