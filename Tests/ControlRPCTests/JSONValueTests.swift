// JSONValue as a Swift value: equality, accessors and literals.

import ControlRPC
import Testing

@Suite struct JSONValueTests {
    @Test func objectEqualityIgnoresKeyOrderButNotContent() {
        let value: JSONValue = ["a": 1, "b": [true]]
        #expect(value == ["b": [true], "a": 1])
        #expect(value != ["a": 1])
        #expect(value != ["a": 1, "b": [false]])
        #expect(value != ["a": 1, "c": [true]])
    }

    @Test func integersEqualRealsOfTheSameValue() {
        #expect(JSONValue.integer(2) == .number(2.0))
        #expect(JSONValue.number(2.0) == .integer(2))
        #expect(JSONValue.integer(2) != .number(2.5))
        #expect(JSONValue.string("1") != .integer(1))
        #expect(JSONValue.null != .bool(false))
        #expect(JSONValue.array([1, 2]) != .array([2, 1]))
    }

    @Test func accessorsReturnValuesOnlyForTheirOwnType() {
        let value: JSONValue = ["s": "text", "i": 5, "r": 5.0, "f": 5.5, "b": true, "a": [1], "o": ["k": nil]]
        #expect(value["s"]?.stringValue == "text")
        #expect(value["i"]?.stringValue == nil)
        #expect(value["i"]?.integerValue == 5)
        #expect(value["r"]?.integerValue == 5)
        #expect(value["f"]?.integerValue == nil)
        #expect(value["b"]?.boolValue == true)
        #expect(value["i"]?.boolValue == nil)
        #expect(value["a"]?.arrayValue == [1])
        #expect(value["o"]?.objectValue?.first?.0 == "k")
        #expect(value["o"]?["k"] == .null)
        #expect(value["missing"] == nil)
        #expect(value["a"]?["k"] == nil, "subscripting a non-object finds nothing")
    }

    @Test func realsTooLargeForExactIntegersHaveNoIntegerValue() {
        #expect(JSONValue.number(1e16).integerValue == nil)
        #expect(JSONValue.number(-8e15).integerValue == -8_000_000_000_000_000)
        #expect(JSONValue.number(.infinity).integerValue == nil)
        #expect(JSONValue.number(.nan).integerValue == nil)
    }

    @Test func literalsAndInitialisersBuildTheExpectedCases() {
        let fromLiteral: JSONValue = ["a": [1, 2.5, "s", true, nil]]
        #expect(fromLiteral == .object([("a", .array([.integer(1), .number(2.5), .string("s"), .bool(true), .null]))]))
        #expect(JSONValue(3) == .integer(3))
        #expect(JSONValue(3.5) == .number(3.5))
        #expect(JSONValue("x") == .string("x"))
    }

    @Test func equalityIsSymmetricForObjectsWithARepeatedKey() {
        // Parsing refuses repeated keys, but a value built in Swift can hold them.
        let repeated: JSONValue = .object([("a", 1), ("a", 1)])
        let distinct: JSONValue = .object([("a", 1), ("b", 2)])
        #expect(distinct != repeated)
        #expect(repeated != distinct)
    }

    @Test func equalityIsTransitiveAcrossIntegersAndReals() {
        let odd = JSONValue.integer(9_007_199_254_740_993)
        let even = JSONValue.integer(9_007_199_254_740_992)
        let real = JSONValue.number(9_007_199_254_740_992)
        #expect(odd != even)
        #expect(even == real)
        #expect(odd != real)
    }
}
