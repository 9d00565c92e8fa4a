// ErrorResponse and NoticeResponse: the refusals the agent writes and the errors it reads back from servers.

import NIOCore
import PGWire
import Testing

@Suite struct ErrorResponseTests {
    @Test func encodesSeverityTwiceThenCodeAndMessage() {
        let error = ErrorResponse.fatal("28P01", "password authentication failed")
        let fields =
            [UInt8(ascii: "S")] + cString("FATAL")
            + [UInt8(ascii: "V")] + cString("FATAL")
            + [UInt8(ascii: "C")] + cString("28P01")
            + [UInt8(ascii: "M")] + cString("password authentication failed")
            + [0]
        #expect(written { error.encode(into: &$0) } == typedMessage("E", fields))
    }

    @Test func encodesDetailAndHintAfterTheMessage() {
        let error = ErrorResponse(.error, sqlState: "53300", message: "too many", detail: "pool is full", hint: "wait")
        let fields =
            [UInt8(ascii: "S")] + cString("ERROR")
            + [UInt8(ascii: "V")] + cString("ERROR")
            + [UInt8(ascii: "C")] + cString("53300")
            + [UInt8(ascii: "M")] + cString("too many")
            + [UInt8(ascii: "D")] + cString("pool is full")
            + [UInt8(ascii: "H")] + cString("wait")
            + [0]
        #expect(written { error.encode(into: &$0) } == typedMessage("E", fields))
    }

    @Test func noticeUsesTheNoticeResponseType() throws {
        var buffer = ByteBuffer()
        ErrorResponse(.notice, sqlState: "00000", message: "hello").encode(into: &buffer, notice: true)
        let (type, _) = try #require(onlyMessage(in: buffer))
        #expect(type == BackendMessageID.noticeResponse)
    }

    @Test(arguments: [
        ErrorResponse.fatal("08P01", "invalid startup packet"),
        ErrorResponse(.error, sqlState: "57014", message: "canceling statement", detail: "by user", hint: "retry"),
        ErrorResponse(.warning, sqlState: "01000", message: "über-warning ⚠︎", hint: "none"),
        ErrorResponse(.notice, sqlState: "00000", message: "", detail: ""),
    ])
    func roundTrips(error: ErrorResponse) throws {
        for notice in [false, true] {
            var buffer = ByteBuffer()
            error.encode(into: &buffer, notice: notice)
            var (_, body) = try #require(onlyMessage(in: buffer))
            #expect(try ErrorResponse.decode(from: &body) == error)
        }
    }

    @Test func aNulInsideAFieldIsDroppedSoItCannotCutTheFieldShort() throws {
        var buffer = ByteBuffer()
        ErrorResponse.fatal("08P01", "bad\0name", detail: "\0x\0").encode(into: &buffer)
        var (_, body) = try #require(onlyMessage(in: buffer))
        #expect(try ErrorResponse.decode(from: &body) == .fatal("08P01", "badname", detail: "x"))
    }

    @Test func decodingSkipsFieldsItDoesNotKnow() throws {
        var body = ByteBuffer(
            bytes: [UInt8(ascii: "S")] + cString("ERROR")
                + [UInt8(ascii: "V")] + cString("ERROR")
                + [UInt8(ascii: "C")] + cString("42P01")
                + [UInt8(ascii: "M")] + cString("relation \"t\" does not exist")
                + [UInt8(ascii: "P")] + cString("15")
                + [UInt8(ascii: "F")] + cString("parse_relation.c")
                + [UInt8(ascii: "L")] + cString("1392")
                + [UInt8(ascii: "R")] + cString("parserOpenTable")
                + [0]
        )
        #expect(
            try ErrorResponse.decode(from: &body)
                == ErrorResponse(.error, sqlState: "42P01", message: "relation \"t\" does not exist")
        )
    }

    @Test func decodingPrefersTheUntranslatedSeverity() throws {
        var body = ByteBuffer(
            bytes: [UInt8(ascii: "S")] + cString("FATAL")
                + [UInt8(ascii: "V")] + cString("ERROR")
                + [UInt8(ascii: "C")] + cString("XX000") + [UInt8(ascii: "M")] + cString("m") + [0]
        )
        #expect(try ErrorResponse.decode(from: &body).severity == .error)
    }

    @Test func decodingFallsBackToTheLocalisedSeverityFromOldServers() throws {
        var body = ByteBuffer(
            bytes: [UInt8(ascii: "S")] + cString("FATAL")
                + [UInt8(ascii: "C")] + cString("57P01") + [UInt8(ascii: "M")] + cString("shutdown") + [0]
        )
        #expect(try ErrorResponse.decode(from: &body) == .fatal("57P01", "shutdown"))
    }

    @Test func decodingFillsDefaultsForMissingOrUnknownFields() throws {
        var body = ByteBuffer(bytes: [UInt8(ascii: "V")] + cString("BOGUS") + [0])
        #expect(try ErrorResponse.decode(from: &body) == ErrorResponse(.error, sqlState: "XX000", message: ""))
    }

    @Test func panicIsItsOwnSeverity() throws {
        // A PANIC ends the server's connection like a FATAL does; the agent must not take it for an ERROR.
        var body = ByteBuffer(bytes: [UInt8(ascii: "V")] + cString("PANIC") + [0])
        #expect(try ErrorResponse.decode(from: &body).severity == .panic)
    }

    @Test func renamingReplacesTheWholeNameInTheMessageOnly() throws {
        let fields: [(Character, String)] = [
            ("S", "ERROR"), ("C", "42P05"), ("M", "prepared statement \"__pa_1\" already exists"), ("D", "__pa_1 stays"),
        ]
        var bytes: [UInt8] = []
        for (code, value) in fields { bytes += [UInt8(ascii: code.unicodeScalars.first!)] + cString(value) }
        var renamed = try #require(ErrorResponse.renaming("__pa_1", to: "mine", inBody: ByteBuffer(bytes: bytes + [0])))
        let error = try ErrorResponse.decode(from: &renamed)
        #expect(error.message == "prepared statement \"mine\" already exists")
        #expect(error.detail == "__pa_1 stays")
        #expect(error.sqlState == "42P05")
        let longer = ByteBuffer(bytes: [UInt8(ascii: "M")] + cString("prepared statement \"__pa_12\" already exists") + [0])
        var untouched = try #require(ErrorResponse.renaming("__pa_1", to: "mine", inBody: longer))
        #expect(try ErrorResponse.decode(from: &untouched).message == "prepared statement \"__pa_12\" already exists")
    }

    @Test func decodingRefusesAnEmptyBody() {
        var body = ByteBuffer()
        #expect(throws: WireError.malformed("ErrorResponse is not terminated")) {
            try ErrorResponse.decode(from: &body)
        }
    }

    @Test func decodingRefusesAMissingFinalTerminator() {
        var body = ByteBuffer(bytes: [UInt8(ascii: "S")] + cString("ERROR"))
        #expect(throws: WireError.malformed("ErrorResponse is not terminated")) {
            try ErrorResponse.decode(from: &body)
        }
    }

    @Test func decodingRefusesAnUnterminatedField() {
        var body = ByteBuffer(bytes: [UInt8(ascii: "S")] + Array("ERROR".utf8))
        #expect(throws: WireError.malformed("ErrorResponse field is not terminated")) {
            try ErrorResponse.decode(from: &body)
        }
    }

    @Test func decodingRefusesTrailingBytes() {
        var body = ByteBuffer(bytes: [UInt8(ascii: "M")] + cString("m") + [0, 0x41, 0x42, 0x43])
        #expect(throws: WireError.leftoverBytes(what: "ErrorResponse", count: 3)) {
            try ErrorResponse.decode(from: &body)
        }
    }

    @Test func descriptionNamesSeverityCodeAndMessage() {
        #expect(
            ErrorResponse.fatal("53300", "sorry, too many clients").description
                == "FATAL 53300: sorry, too many clients")
    }
}
