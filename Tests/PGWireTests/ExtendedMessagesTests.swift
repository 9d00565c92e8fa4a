// Parse, Bind, Describe and Close: the extended-protocol messages whose statement names the agent rewrites.

import NIOCore
import PGWire
import Testing

@Suite struct ExtendedMessagesTests {
    static let describeStatement = UInt8(ascii: "S")
    static let describePortal = UInt8(ascii: "P")

    /// The error `decode` throws for the message body `bytes`, or nil when it decodes them.
    func error<Message>(
        decoding bytes: [UInt8],
        with decode: (inout ByteBuffer) throws(WireError) -> Message
    ) -> WireError? {
        var body = ByteBuffer(bytes: bytes)
        do {
            _ = try decode(&body)
            return nil
        } catch {
            return error
        }
    }

    /// Encodes with `encode`, checks that exactly one message of `type` came out, and decodes its body.
    func roundTrip<Message>(
        _ type: Character,
        _ encode: (inout ByteBuffer) -> Void,
        decode: (inout ByteBuffer) throws(WireError) -> Message
    ) throws -> Message {
        var buffer = ByteBuffer()
        encode(&buffer)
        var (sent, body) = try #require(onlyMessage(in: buffer))
        #expect(sent == type.asciiValue)
        let message = try decode(&body)
        #expect(body.readableBytes == 0, "decoding left \(body.readableBytes) bytes unread")
        return message
    }

    // MARK: Parse

    @Test func parseEncodesNameQueryAndTypesExactly() {
        let parse = ParseMessage(statement: "s1", query: "SELECT $1", parameterTypes: [23])
        #expect(
            written { parse.encode(into: &$0) }
                == typedMessage("P", cString("s1") + cString("SELECT $1") + [0, 1] + int32(23)))
    }

    @Test func parseDecodesTheBodyALibpqClientSends() throws {
        var body = ByteBuffer(bytes: cString("") + cString("SELECT $1, $2") + [0, 2] + int32(25) + int32(0))
        let parse = try ParseMessage.decode(from: &body)
        #expect(parse == ParseMessage(statement: "", query: "SELECT $1, $2", parameterTypes: [25, 0]))
        #expect(body.readableBytes == 0)
    }

    @Test(arguments: [
        ParseMessage(statement: "", query: "SELECT 1", parameterTypes: []),
        ParseMessage(statement: "stmt_1", query: "INSERT INTO t VALUES ($1, $2, $3)", parameterTypes: [23, 0, 1043]),
        ParseMessage(statement: "ünï", query: "SELECT 'café 🐘' WHERE x = $1", parameterTypes: [UInt32.max]),
        ParseMessage(statement: "s", query: "", parameterTypes: [0, 0x8000_0000, 16, 3802]),
    ])
    func parseRoundTripsWithItsParameterTypes(parse: ParseMessage) throws {
        let decoded = try self.roundTrip("P", { parse.encode(into: &$0) }, decode: ParseMessage.decode(from:))
        #expect(decoded == parse)
        #expect(decoded.parameterTypes == parse.parameterTypes)
    }

    @Test func parseTypesStayInTheOrderSent() throws {
        let types: [UInt32] = (0..<300).map { UInt32(300 - $0) * 7 }
        let parse = ParseMessage(statement: "many", query: "SELECT", parameterTypes: types)
        let decoded = try self.roundTrip("P", { parse.encode(into: &$0) }, decode: ParseMessage.decode(from:))
        #expect(decoded.parameterTypes == types)
    }

    @Test(arguments: [
        // No NUL after the statement name, or after the query.
        cString("") + Array("SELECT 1".utf8),
        Array("s1".utf8),
        [],
        // No parameter count, or half of one.
        cString("s1") + cString("SELECT 1"),
        cString("s1") + cString("SELECT 1") + [0],
        // Fewer or more type OIDs than counted, or a partial one.
        cString("s1") + cString("SELECT $1") + [0, 2] + int32(23),
        cString("s1") + cString("SELECT $1") + [0, 1] + int32(23) + int32(25),
        cString("s1") + cString("SELECT $1") + [0, 1] + [0, 0, 23],
        cString("s1") + cString("SELECT 1") + [0, 0] + [9],
        // A negative count, with no types or with one.
        cString("s1") + cString("SELECT 1") + [0xFF, 0xFF],
        cString("s1") + cString("SELECT 1") + [0xFF, 0xFF] + int32(23),
    ])
    func malformedParseIsRefused(body: [UInt8]) {
        #expect(
            self.error(decoding: body, with: ParseMessage.decode(from:)) == .malformed("Parse message is malformed"))
    }

    /// libpq allows up to 65535 parameters (PQ_QUERY_PARAM_MAX_LIMIT) and PostgreSQL reads the count as unsigned.
    @Test func parseWithMoreThan32767ParameterTypesDecodes() {
        let types = [UInt32](repeating: 23, count: 40_000)
        var bytes = cString("bulk") + cString("INSERT") + [0x9C, 0x40]
        for type in types { bytes += int32(Int32(type)) }
        var body = ByteBuffer(bytes: bytes)
        let parse = try? ParseMessage.decode(from: &body)
        #expect(parse?.parameterTypes == types)
    }

    /// A client whose client_encoding is not UTF-8 (LATIN1 here) sends query bytes that are not valid UTF-8.
    @Test func parseCarriesQueryBytesThatAreNotUTF8Unchanged() throws {
        let query: [UInt8] = Array("SELECT 'caf".utf8) + [0xE9] + Array("'".utf8)
        let bytes = cString("s1") + query + [0] + [0, 0]
        var body = ByteBuffer(bytes: bytes)
        let parse = try ParseMessage.decode(from: &body)
        #expect(written { parse.encode(into: &$0) } == typedMessage("P", bytes))
    }

    // MARK: Bind

    /// The rest of a Bind with one binary parameter holding a NUL and 0xFF, one text parameter and one NULL.
    static let bindRest: [UInt8] =
        [0, 2, 0, 1, 0, 0]  // two format codes: binary, text
        + [0, 3]  // three parameters
        + int32(4) + [0x00, 0xFF, 0x00, 0x2A]
        + int32(2) + Array("hi".utf8)
        + int32(-1)
        + [0, 1, 0, 1]  // one result format: binary

    @Test func bindEncodesNamesThenTheRestExactly() {
        let bind = BindMessage(portal: "p1", statement: "s1", rest: ByteBuffer(bytes: Self.bindRest))
        #expect(written { bind.encode(into: &$0) } == typedMessage("B", cString("p1") + cString("s1") + Self.bindRest))
    }

    @Test func bindDecodeKeepsTheRestByteForByte() throws {
        var body = ByteBuffer(bytes: cString("") + cString("s1") + Self.bindRest)
        let bind = try BindMessage.decode(from: &body)
        #expect(bind.portal == "")
        #expect(bind.statement == "s1")
        #expect(bind.rest.bytes == Self.bindRest)
        #expect(body.readableBytes == 0)
    }

    @Test func bindWithARewrittenStatementNameKeepsTheRestByteForByte() throws {
        // The body sits behind other bytes in its buffer, as a slice of what the client sent.
        var buffer = ByteBuffer(bytes: [0x51, 0x00, 0xFF])
        buffer.writeBytes(typedMessage("B", cString("portal") + cString("client_name") + Self.bindRest))
        buffer.moveReaderIndex(forwardBy: 3)
        var (_, body) = try #require(onlyMessage(in: buffer))
        var bind = try BindMessage.decode(from: &body)
        bind.statement = "_pa_42"
        #expect(
            written { bind.encode(into: &$0) }
                == typedMessage("B", cString("portal") + cString("_pa_42") + Self.bindRest))
    }

    @Test(arguments: [
        BindMessage(portal: "", statement: "", rest: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0])),
        BindMessage(portal: "p", statement: "ünï", rest: ByteBuffer(bytes: ExtendedMessagesTests.bindRest)),
        BindMessage(portal: "p", statement: "s", rest: ByteBuffer()),
    ])
    func bindRoundTrips(bind: BindMessage) throws {
        #expect(try self.roundTrip("B", { bind.encode(into: &$0) }, decode: BindMessage.decode(from:)) == bind)
    }

    @Test func bindsWithDifferentRestsDiffer() {
        let one = BindMessage(portal: "", statement: "s", rest: ByteBuffer(bytes: [0, 0, 0, 1] + int32(1) + [1]))
        let two = BindMessage(portal: "", statement: "s", rest: ByteBuffer(bytes: [0, 0, 0, 1] + int32(1) + [2]))
        #expect(one != two)
        #expect(one == BindMessage(portal: "", statement: "s", rest: ByteBuffer(bytes: [0, 0, 0, 1] + int32(1) + [1])))
    }

    @Test(arguments: [
        [],
        Array("p1".utf8),
        cString("p1"),
        cString("p1") + Array("s1".utf8),
    ])
    func bindWithoutBothNamesIsRefused(body: [UInt8]) {
        #expect(self.error(decoding: body, with: BindMessage.decode(from:)) == .malformed("Bind message is malformed"))
    }

    // MARK: Describe and Close

    @Test func describeStatementEncodesExactly() {
        let describe = TargetMessage(kind: TargetMessage.statement, name: "s1")
        #expect(
            written { describe.encode(into: &$0, type: FrontendMessageID.describe) }
                == typedMessage("D", [Self.describeStatement] + cString("s1")))
        #expect(describe.isStatement)
    }

    @Test func closeUnnamedPortalEncodesExactly() {
        let close = TargetMessage(kind: TargetMessage.portal, name: "")
        #expect(written { close.encode(into: &$0, type: FrontendMessageID.close) } == [0x43, 0, 0, 0, 6, 0x50, 0])
        #expect(!close.isStatement)
    }

    @Test(arguments: [
        TargetMessage(kind: TargetMessage.statement, name: "s1"),
        TargetMessage(kind: TargetMessage.statement, name: ""),
        TargetMessage(kind: TargetMessage.portal, name: "cursor ünï"),
    ])
    func describeAndCloseRoundTrip(target: TargetMessage) throws {
        let described = try self.roundTrip(
            "D", { target.encode(into: &$0, type: FrontendMessageID.describe) }, decode: TargetMessage.decode(from:))
        #expect(described == target)
        let closed = try self.roundTrip(
            "C", { target.encode(into: &$0, type: FrontendMessageID.close) }, decode: TargetMessage.decode(from:))
        #expect(closed == target)
    }

    @Test(arguments: [
        [],
        // A kind other than S or P.
        [UInt8(ascii: "X")] + cString("s1"),
        [UInt8(ascii: "s")] + cString("s1"),
        [0] + cString("s1"),
        // No NUL after the name.
        [ExtendedMessagesTests.describeStatement],
        [ExtendedMessagesTests.describeStatement] + Array("s1".utf8),
        // Bytes after the name.
        [ExtendedMessagesTests.describeStatement] + cString("s1") + [0],
        [ExtendedMessagesTests.describePortal] + cString("") + cString("extra"),
    ])
    func malformedDescribeOrCloseIsRefused(body: [UInt8]) {
        #expect(
            self.error(decoding: body, with: TargetMessage.decode(from:))
                == .malformed("Describe or Close message is malformed"))
    }
}
