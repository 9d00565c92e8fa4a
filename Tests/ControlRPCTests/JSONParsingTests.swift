// Parsing JSON text into JSONValue through jansson: types, numbers, strings, and every way input can be wrong.

import ControlRPC
import Testing

@Suite struct JSONParsingTests {
    func parseError(_ bytes: [UInt8]) -> JSONParseError? {
        do {
            _ = try JSONValue.parse(bytes)
            return nil
        } catch {
            return error
        }
    }

    func parseError(_ text: String) -> JSONParseError? {
        self.parseError(Array(text.utf8))
    }

    @Test func scalarsAtTopLevel() throws {
        #expect(try JSONValue.parse("null") == .null)
        #expect(try JSONValue.parse("true") == .bool(true))
        #expect(try JSONValue.parse(" false\n") == .bool(false))
        #expect(try JSONValue.parse("\"text\"") == .string("text"))
        #expect(try JSONValue.parse("[]") == .array([]))
        #expect(try JSONValue.parse("{}") == .object([]))
    }

    @Test func integersAndRealsStayDistinct() throws {
        guard case .integer(let integer) = try JSONValue.parse("42") else {
            Issue.record("42 did not parse as an integer")
            return
        }
        #expect(integer == 42)
        for text in ["42.0", "4.2e1", "1E2", "-0.5"] {
            guard case .number = try JSONValue.parse(text) else {
                Issue.record("\(text) did not parse as a real")
                continue
            }
        }
        #expect(try JSONValue.parse("4.2e1") == .number(42))
    }

    @Test func sixtyFourBitIntegerExtremesParseExactly() throws {
        #expect(try JSONValue.parse("9223372036854775807") == .integer(Int64.max))
        #expect(try JSONValue.parse("-9223372036854775808") == .integer(Int64.min))
        #expect(try JSONValue.parse("9007199254740993") == .integer(9_007_199_254_740_993))
    }

    @Test(arguments: ["9223372036854775808", "-9223372036854775809", "123456789012345678901234567890"])
    func integersBeyondSixtyFourBitsAreRefused(text: String) {
        #expect(self.parseError(text) != nil)
    }

    @Test func nestedObjectsKeepTheirKeyOrder() throws {
        let value = try JSONValue.parse(#"{"zeta":1,"alpha":{"yak":2,"bee":[{"k":1,"c":2}]},"mid":null}"#)
        #expect(value.objectValue?.map(\.0) == ["zeta", "alpha", "mid"])
        #expect(value["alpha"]?.objectValue?.map(\.0) == ["yak", "bee"])
        #expect(value["alpha"]?["bee"]?.arrayValue?.first?.objectValue?.map(\.0) == ["k", "c"])
        #expect(value["alpha"]?["yak"] == .integer(2))
    }

    @Test func unicodeArrivesAsRawUTF8OrAsEscapes() throws {
        #expect(try JSONValue.parse(#""héllo ✓ 🐘""#) == .string("héllo ✓ 🐘"))
        #expect(try JSONValue.parse(#""h\u00e9llo \u2713 \ud83d\udc18""#) == .string("héllo ✓ 🐘"))
        #expect(try JSONValue.parse(#"{"ключ":"値"}"#) == ["ключ": "値"])
    }

    @Test func escapesAreDecoded() throws {
        #expect(try JSONValue.parse(#""a\"b\\c\/d\n\t\r\b\f""#) == .string("a\"b\\c/d\n\t\r\u{08}\u{0C}"))
    }

    @Test func anEmbeddedNulSurvivesInAString() throws {
        let value = try JSONValue.parse(#"["a\u0000b"]"#)
        let text = try #require(value.arrayValue?.first?.stringValue)
        #expect(Array(text.utf8) == [0x61, 0x00, 0x62])
    }

    @Test func aSliceOfALargerBufferParses() throws {
        let buffer = Array("{\"id\":1}\n{\"id\":2}\n".utf8)
        let newline = try #require(buffer.firstIndex(of: 0x0A))
        #expect(try JSONValue.parse(buffer[(newline + 1)...]) == ["id": 2])
        #expect(try JSONValue.parse(buffer[..<newline]) == ["id": 1])
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "[1 2]", "{'a':1}", "{\"a\" 1}", "{\"a\":}", "tru", "nul", "1 2", "\"open",
        "NaN", "Infinity", "01", "1.", ".5", "+1", "[\"\t\"]", "/* c */ 1", "{\"a\":1,}",
    ])
    func invalidJSONThrows(text: String) {
        let error = self.parseError(text)
        #expect(error != nil, "\(text.debugDescription) parsed")
        #expect(error?.message.isEmpty == false)
    }

    @Test func theErrorSaysWhere() throws {
        let error = try #require(self.parseError("[1,\n 2,\n x]"))
        #expect(error.line == 3)
        #expect(error.column >= 1)
        #expect(error.description.hasSuffix("(line 3, column \(error.column))"))
    }

    @Test(
        arguments: [
            [0x22, 0xFF, 0x22],  // a byte that never occurs in UTF-8
            [0x22, 0xC3, 0x22],  // a lead byte without its continuation
            [0x22, 0xC0, 0xAF, 0x22],  // an overlong encoding of "/"
            [0x22, 0xED, 0xA0, 0x80, 0x22],  // a UTF-16 surrogate encoded as UTF-8
            [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // beyond U+10FFFF
            [0x7B, 0x22, 0x80, 0x22, 0x3A, 0x31, 0x7D],  // a lone continuation byte in a key
        ] as [[UInt8]])
    func invalidUTF8Throws(bytes: [UInt8]) {
        #expect(self.parseError(bytes) != nil)
    }

    @Test func aLoneSurrogateEscapeThrows() {
        #expect(self.parseError(#""\ud800""#) != nil)
        #expect(self.parseError(#""\udc00x""#) != nil)
    }

    @Test func duplicateKeysAreRefused() {
        #expect(self.parseError(#"{"a":1,"a":2}"#) != nil)
        #expect(self.parseError(#"{"outer":{"k":1,"k":1}}"#) != nil)
        #expect(self.parseError(#"[{"a":1},{"a":2}]"#) == nil, "the same key in sibling objects is fine")
    }

    @Test func aRawNulByteInsideTheTextThrows() {
        #expect(self.parseError([0x5B, 0x31, 0x2C, 0x00, 0x32, 0x5D]) != nil)
        #expect(self.parseError([0x22, 0x61, 0x00, 0x22]) != nil, "a raw NUL inside a string is a control character")
        #expect(self.parseError(Array(#"{"a":1}"#.utf8) + [0x00] + Array("junk".utf8)) != nil)
    }

    @Test func aNulInsideAnObjectKeyThrows() {
        #expect(self.parseError(#"{"a\u0000b":1}"#) != nil)
    }
}
