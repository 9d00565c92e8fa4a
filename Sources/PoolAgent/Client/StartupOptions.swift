// The settings a client asks for at startup: plain parameters and `-c name=value` inside `options`.

import PGWire

enum StartupOptions {
    /// Startup parameters that are not run-time settings.
    static let notSettings: Set<String> = ["user", "database", "options", "replication"]

    /// The settings to apply on the client's server; `options` switches expanded. A setting given twice
    /// keeps its last value (as PostgreSQL applies them in order), at the place of its first mention.
    static func settings(of startup: StartupMessage) throws(StartupOptionsError) -> [(String, String)] {
        var settings: [(String, String)] = []
        for (name, value) in startup.parameters {
            if name == "options" {
                settings += try self.parseOptions(value)
            } else if !self.notSettings.contains(name) && !name.hasPrefix("_pq_.") {
                settings.append((name, value))
            }
        }
        return self.lastValues(settings)
    }

    /// One entry per setting (names compared case-insensitively), holding its last value.
    static func lastValues(_ settings: [(String, String)]) -> [(String, String)] {
        var result: [(String, String)] = []
        var positions: [String: Int] = [:]
        for (name, value) in settings {
            if let position = positions[name.lowercased()] {
                result[position].1 = value
            } else {
                positions[name.lowercased()] = result.count
                result.append((name, value))
            }
        }
        return result
    }

    /// Splits libpq's `options` string (whitespace-separated, backslash escapes) into `-c` settings.
    static func parseOptions(_ text: String) throws(StartupOptionsError) -> [(String, String)] {
        var words: [String] = []
        var current = ""
        var escaped = false
        for character in text {
            if escaped {
                current.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character.isWhitespace {
                if !current.isEmpty { words.append(current) }
                current = ""
            } else {
                current.append(character)
            }
        }
        if !current.isEmpty { words.append(current) }

        var settings: [(String, String)] = []
        var index = 0
        while index < words.count {
            let word = words[index]
            var assignment: String
            if word == "-c" {
                index += 1
                guard index < words.count else { throw .missingValue(word) }
                assignment = words[index]
            } else if word.hasPrefix("-c") {
                assignment = String(word.dropFirst(2))
            } else if word.hasPrefix("--") {
                assignment = String(word.dropFirst(2))
            } else {
                throw .unsupported(word)
            }
            guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else {
                throw .missingValue(assignment)
            }
            let name = String(assignment[..<equals]).replacingAll("-", with: "_")
            assignment = String(assignment[assignment.index(after: equals)...])
            settings.append((name, assignment))
            index += 1
        }
        return settings
    }
}

enum StartupOptionsError: Error, Equatable {
    case unsupported(String)
    case missingValue(String)

    var message: String {
        switch self {
        case .unsupported(let word):
            "unsupported startup option \"\(word)\"; only -c name=value and --name=value are accepted"
        case .missingValue(let word):
            "invalid startup option \"\(word)\": expected name=value"
        }
    }
}
