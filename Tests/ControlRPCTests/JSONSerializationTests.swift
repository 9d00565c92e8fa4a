// Serialising JSONValue to one compact line, and reading it back unchanged.

import ControlRPC
import Testing

@Suite struct JSONSerializationTests {
    @Test func compactOutputKeepsKeyOrder() {
        let value: JSONValue = ["z": 1, "a": ["y": true, "b": [nil, "x", 1.5]], "m": [:]]
        #expect(value.serialized == #"{"z":1,"a":{"y":true,"b":[null,"x",1.5]},"m":{}}"#)
    }

    @Test func parsedTextSerialisesBackByteForByte() throws {
        let text = #"{"jsonrpc":"2.0","method":"list-servers","params":{"pool":"main","verbose":false},"id":7}"#
        #expect(try JSONValue.parse(text).serialized == text)
    }

    @Test(arguments: [
        JSONValue.null, true, false, 0, -1, .integer(Int64.max), .integer(Int64.min), "", "plain",
        "héllo ✓ 🐘 ключ", "line\nbreak\ttab \"quote\" back\\slash", "a\0b\0", "\u{01}\u{1F}\u{7F}",
        [], [:], [1, [2, [3, [4]]]], ["k": ["nested": ["deeper": "x"]], "l": [1, "two", nil, false]],
        ["ключ": "値", "🐘": 1],
    ])
    func roundTrips(value: JSONValue) throws {
        let parsed = try JSONValue.parse(value.serialized)
        #expect(parsed == value)
        #expect(parsed.serialized == value.serialized)
    }

    @Test(arguments: [
        0.1, -2.5, 1e300, -1e-300, Double.leastNonzeroMagnitude, Double.greatestFiniteMagnitude, 123_456.789, 1.0, -0.0,
    ])
    func floatsRoundTripExactlyAndStayReals(number: Double) throws {
        let parsed = try JSONValue.parse(JSONValue.number(number).serialized)
        guard case .number(let back) = parsed else {
            Issue.record("\(number) came back as \(parsed)")
            return
        }
        #expect(back == number)
        #expect(back.sign == number.sign)
    }

    @Test func nonFiniteNumbersBecomeNull() {
        #expect(JSONValue.number(.infinity).serialized == "null")
        #expect(JSONValue.number(-.infinity).serialized == "null")
        #expect(JSONValue.number(.nan).serialized == "null")
    }

    @Test func outputIsOneLine() {
        let value: JSONValue = ["text": "first\nsecond\r\nthird", "list": [1, 2]]
        #expect(!value.serialized.contains("\n"))
        #expect(!value.serialized.contains("\r"))
        #expect(value.serialized == #"{"text":"first\nsecond\r\nthird","list":[1,2]}"#)
    }

    @Test func unicodeIsWrittenAsUTF8AndNulAsAnEscape() {
        #expect(JSONValue.string("é🐘").serialized == "\"é🐘\"")
        #expect(JSONValue.string("a\0b").serialized == #""a\u0000b""#)
    }

    @Test func integersAndRealsAreWrittenDifferently() {
        #expect(JSONValue.integer(3).serialized == "3")
        #expect(JSONValue.number(3).serialized == "3.0")
    }

    @Test func anObjectKeyWithANulRoundTrips() {
        let value: JSONValue = ["a\0b": 1]
        withKnownIssue("a key with a NUL serialises as \"a\\u0000b\", which jansson refuses to parse") {
            let parsed = try JSONValue.parse(value.serialized)
            #expect(parsed == value)
        }
    }
}
