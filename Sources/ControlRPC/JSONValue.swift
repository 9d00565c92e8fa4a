// A JSON value as a Swift type; jansson parses and prints it, and no json_t leaves this file.

import CJansson
import CJanssonShim

#if canImport(Glibc)
import Glibc
#endif

public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    /// Keys in the order they were written or parsed.
    case object([(String, JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let a), .bool(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.number(let a), .number(let b)): a == b
        case (.integer(let a), .number(let b)), (.number(let b), .integer(let a)): Int64(exactly: b) == a
        case (.string(let a), .string(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.object(let a), .object(let b)):
            // Key order does not matter; a key repeated in one object must be repeated in the other.
            a.count == b.count
                && zip(a.sorted { $0.0 < $1.0 }, b.sorted { $0.0 < $1.0 }).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: false
        }
    }

    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    public var integerValue: Int64? {
        switch self {
        case .integer(let number): number
        case .number(let number) where number.rounded() == number && abs(number) < 9e15: Int64(number)
        default: nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let flag) = self { return flag }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }

    public var objectValue: [(String, JSONValue)]? {
        if case .object(let members) = self { return members }
        return nil
    }

    // MARK: Parsing

    /// Parses one JSON text (any value at top level). Invalid UTF-8 is a parse error.
    public static func parse<Bytes: Collection>(_ bytes: Bytes) throws(JSONParseError) -> JSONValue where Bytes.Element == UInt8 {
        var error = json_error_t()
        let root: UnsafeMutablePointer<json_t>? = Array(bytes).withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { cjansson_loadb($0.baseAddress, $0.count, &error) }
        }
        guard let root else {
            let text = withUnsafeBytes(of: error.text) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            throw JSONParseError(message: text, line: Int(error.line), column: Int(error.column))
        }
        defer { cjansson_decref(root) }
        return Self.convert(root)
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try self.parse(Array(text.utf8))
    }

    private static func convert(_ json: UnsafeMutablePointer<json_t>) -> JSONValue {
        switch cjansson_typeof(json) {
        case JSON_OBJECT:
            var members: [(String, JSONValue)] = []
            var iterator = json_object_iter(json)
            while let current = iterator {
                let key = String(cString: json_object_iter_key(current))
                if let value = json_object_iter_value(current) {
                    members.append((key, Self.convert(value)))
                }
                iterator = json_object_iter_next(json, current)
            }
            return .object(members)
        case JSON_ARRAY:
            return .array((0..<json_array_size(json)).compactMap { json_array_get(json, $0).map(Self.convert) })
        case JSON_STRING:
            let length = json_string_length(json)
            let pointer = json_string_value(json)!
            return .string(pointer.withMemoryRebound(to: UInt8.self, capacity: length) {
                String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
            })
        case JSON_INTEGER:
            return .integer(Int64(json_integer_value(json)))
        case JSON_REAL:
            return .number(json_real_value(json))
        case JSON_TRUE:
            return .bool(true)
        case JSON_FALSE:
            return .bool(false)
        default:
            return .null
        }
    }

    // MARK: Serialising

    /// Compact JSON text on one line (newlines inside strings are escaped).
    public var serialized: String {
        let json = self.makeJSON()
        defer { cjansson_decref(json) }
        guard let text = cjansson_dumps(json) else { return "null" }
        defer { free(text) }
        return String(cString: text)
    }

    private func makeJSON() -> UnsafeMutablePointer<json_t> {
        switch self {
        case .null: return json_null()
        case .bool(let flag): return flag ? json_true() : json_false()
        case .integer(let number): return json_integer(json_int_t(number))
        case .number(let number): return number.isFinite ? json_real(number) : json_null()
        case .string(let text):
            return Self.withCString(text) { json_stringn_nocheck($0, $1) }
        case .array(let items):
            let array = json_array()!
            for item in items { json_array_append_new(array, item.makeJSON()) }
            return array
        case .object(let members):
            let object = json_object()!
            for (key, value) in members {
                Self.withCString(key) { _ = json_object_setn_new_nocheck(object, $0, $1, value.makeJSON()) }
            }
            return object
        }
    }
}

extension JSONValue {
    /// Passes the UTF-8 bytes of `text` with their length, so embedded NULs survive.
    fileprivate static func withCString<R>(_ text: String, _ body: (UnsafePointer<CChar>, Int) -> R) -> R {
        var bytes = Array(text.utf8)
        let count = bytes.count
        bytes.append(0)
        return bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { body($0.baseAddress!, count) }
        }
    }
}

public struct JSONParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public var line: Int
    public var column: Int
    public var description: String { "\(self.message) (line \(self.line), column \(self.column))" }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(elements) }
    public init(nilLiteral: ()) { self = .null }
    public init(floatLiteral value: Double) { self = .number(value) }
}

extension JSONValue {
    public init(_ number: Int) { self = .integer(Int64(number)) }
    public init(_ number: Double) { self = .number(number) }
    public init(_ text: String) { self = .string(text) }
}
