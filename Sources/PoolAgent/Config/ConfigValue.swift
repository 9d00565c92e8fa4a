// The configuration file as a plain tree, so validation never touches the TOML library's types.

import TOMLKit

indirect enum ConfigValue: Sendable, Equatable {
    case string(String)
    case integer(Int)
    case float(Double)
    case boolean(Bool)
    case array([ConfigValue])
    case table([(String, ConfigValue)])
    /// Dates and times: accepted by TOML, meaningless to the agent.
    case other(String)

    var typeName: String {
        switch self {
        case .string: "a string"
        case .integer: "an integer"
        case .float: "a float"
        case .boolean: "a boolean"
        case .array: "an array"
        case .table: "a table"
        case .other(let kind): kind
        }
    }

    static func == (lhs: ConfigValue, rhs: ConfigValue) -> Bool {
        switch (lhs, rhs) {
        case (.string(let a), .string(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.float(let a), .float(let b)): a == b
        case (.boolean(let a), .boolean(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.table(let a), .table(let b)): a.elementsEqual(b) { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.other(let a), .other(let b)): a == b
        default: false
        }
    }

    /// Parses TOML text; a syntax error becomes a ConfigError naming the line and column.
    static func parse(toml text: String, file: String) throws(ConfigError) -> [(String, ConfigValue)] {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError(
                file: file,
                key: "",
                reason: "TOML syntax error at line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)"
            )
        } catch {
            throw ConfigError(file: file, key: "", reason: "cannot parse TOML: \(error)")
        }
        return Self.convert(table)
    }

    private static func convert(_ table: TOMLTable) -> [(String, ConfigValue)] {
        table.keys.compactMap { key in table[key].map { (key, Self.convert($0)) } }
    }

    private static func convert(_ value: any TOMLValueConvertible) -> ConfigValue {
        switch value.type {
        case .string: return .string(value.string ?? "")
        case .int: return .integer(value.int ?? 0)
        case .double: return .float(value.double ?? 0)
        case .bool: return .boolean(value.bool ?? false)
        case .array: return .array((value.array ?? TOMLArray()).map { Self.convert($0) })
        case .table: return .table(Self.convert(value.table ?? TOMLTable()))
        default: return .other("a date or time")
        }
    }
}
