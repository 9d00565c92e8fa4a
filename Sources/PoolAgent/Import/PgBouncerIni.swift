// PgBouncer's configuration files as PgBouncer reads them: pgbouncer.ini with %include, its connection strings,
// and the auth file's quoting. For `poolagent import-pgbouncer`; no I/O beyond reading the files named.

/// Where a setting was read, for the import report: `file:line`.
public struct IniLocation: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var description: String { "\(self.file):\(self.line)" }
}

public struct IniError: Error, Sendable, Equatable, CustomStringConvertible {
    public var location: IniLocation?
    public var reason: String
    public var description: String { self.location.map { "\($0): \(self.reason)" } ?? self.reason }
}

/// The three sections of a pgbouncer.ini, after includes, as PgBouncer holds them.
public struct PgBouncerIni: Sendable {
    public struct Entry: Sendable {
        public var key: String
        public var value: String
        public var location: IniLocation
    }

    /// `[pgbouncer]`: the last value of each key. PgBouncer resets every key to its default at each
    /// `[pgbouncer]` header; so does this reader (and it says so in `notes`).
    public private(set) var settings: [String: Entry] = [:]
    /// `[databases]` and `[users]`, the last definition of each name.
    public private(set) var databases: [Entry] = []
    public private(set) var users: [Entry] = []
    /// What the reader did that PgBouncer would also do but an operator may not expect.
    public private(set) var notes: [String] = []

    static let maximumIncludeDepth = 10

    /// Reads `path`; a relative `%include` is found from `workingDirectory` as PgBouncer does (its own
    /// working directory), else next to the including file.
    public init(path: String, workingDirectory: String, read: (String) throws -> String) throws(IniError) {
        var section: String? = nil
        try self.read(path, depth: 0, section: &section, workingDirectory: workingDirectory, readFile: read)
        if section == nil && self.settings.isEmpty && self.databases.isEmpty {
            throw IniError(location: nil, reason: "\(path): no [pgbouncer] or [databases] section")
        }
    }

    private mutating func read(
        _ path: String, depth: Int, section: inout String?, workingDirectory: String, readFile: (String) throws -> String
    ) throws(IniError) {
        let text: String
        do {
            text = try readFile(path)
        } catch {
            throw IniError(location: nil, reason: "cannot read \(path): \(error)")
        }
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let location = IniLocation(file: path, line: index + 1)
            let line = rawLine.drop { $0 == " " || $0 == "\t" }.trimmingTrailing()
            if line.isEmpty || line.hasPrefix(";") || line.hasPrefix("#") { continue }
            if line.hasPrefix("%include") {
                let rest = line.dropFirst("%include".count)
                guard rest.first == " " || rest.first == "\t" else {
                    throw IniError(location: location, reason: "expected \"%include FILE\"")
                }
                guard depth + 1 <= Self.maximumIncludeDepth else {
                    throw IniError(location: location, reason: "%include nested deeper than \(Self.maximumIncludeDepth)")
                }
                let name = String(rest.drop { $0 == " " || $0 == "\t" })
                let included = self.resolve(name, from: path, workingDirectory: workingDirectory, location: location)
                try self.read(included, depth: depth + 1, section: &section, workingDirectory: workingDirectory, readFile: readFile)
                continue
            }
            if line.hasPrefix("[") {
                // A comment may follow the header, as PgBouncer allows.
                guard let close = line.firstIndex(of: "]"),
                    line[line.index(after: close)...].drop(while: { $0 == " " || $0 == "\t" }).first.map({ $0 == ";" || $0 == "#" }) ?? true
                else { throw IniError(location: location, reason: "expected a section header such as [databases]") }
                let name = String(line[line.index(after: line.startIndex)..<close])
                guard ["pgbouncer", "databases", "users", "peers"].contains(name) else {
                    throw IniError(location: location, reason: "unknown section [\(name)]; PgBouncer knows [pgbouncer], [databases], [users] and [peers]")
                }
                if name == "pgbouncer" && !self.settings.isEmpty {
                    self.notes.append("\(location): a second [pgbouncer] header: PgBouncer resets every [pgbouncer] setting read before it to its default, and so does the import (\(self.settings.keys.sorted().joined(separator: ", ")) forgotten)")
                    self.settings = [:]
                }
                section = name
                continue
            }
            let (key, value) = try Self.keyValue(line, location: location)
            let entry = Entry(key: key, value: value, location: location)
            switch section {
            case "pgbouncer"?: self.settings[key] = entry
            case "databases"?: Self.replace(&self.databases, entry, kind: "database", notes: &self.notes)
            case "users"?: Self.replace(&self.users, entry, kind: "user", notes: &self.notes)
            case "peers"?: self.notes.append("\(location): [peers] \(key): the agent has no peers (cancel forwarding between processes); dropped")
            default: throw IniError(location: location, reason: "a setting before any section")
            }
        }
    }

    private static func replace(_ entries: inout [Entry], _ entry: Entry, kind: String, notes: inout [String]) {
        if let index = entries.firstIndex(where: { $0.key == entry.key }) {
            notes.append("\(entry.location): \(kind) \(entry.key) defined again: the later line replaces \(entries[index].location) whole, as in PgBouncer")
            entries.remove(at: index)
        }
        entries.append(entry)
    }

    private mutating func resolve(_ name: String, from including: String, workingDirectory: String, location: IniLocation) -> String {
        guard !name.hasPrefix("/") else { return name }
        let fromWorkingDirectory = workingDirectory + "/" + name
        if access(fromWorkingDirectory, F_OK) == 0 { return fromWorkingDirectory }
        let directory = including.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let besideFile = (directory.isEmpty ? "." : directory) + "/" + name
        self.notes.append("\(location): %include \(name) is not in the working directory \(workingDirectory) (where PgBouncer looks); read \(besideFile)")
        return besideFile
    }

    /// `key = value`: the value is the rest of the line (no inline comments); a key may be SQL-quoted.
    static func keyValue(_ line: Substring, location: IniLocation) throws(IniError) -> (String, String) {
        var rest = line
        var key = ""
        if rest.first == "\"" {
            rest = rest.dropFirst()
            while let character = rest.first {
                rest = rest.dropFirst()
                if character == "\"" {
                    guard rest.first == "\"" else { break }
                    rest = rest.dropFirst()
                }
                key.append(character)
            }
        } else {
            let name = rest.prefix { $0.isASCII && ($0.isLetter || $0.isNumber || "_.*-".contains($0)) }
            key = String(name)
            rest = rest.dropFirst(name.count)
        }
        rest = rest.drop { $0 == " " || $0 == "\t" }
        guard !key.isEmpty, rest.first == "=" else {
            throw IniError(location: location, reason: "expected \"key = value\"")
        }
        return (key, String(rest.dropFirst().drop { $0 == " " || $0 == "\t" }))
    }

    /// A `[databases]` or `[users]` value: `key=value` pairs separated by spaces, a value bare or in single
    /// quotes with `''` for a quote. Empty values are refused, as PgBouncer refuses them.
    public static func connectionString(_ text: String, location: IniLocation) throws(IniError) -> [(String, String)] {
        var pairs: [(String, String)] = []
        var rest = Substring(text)
        while true {
            rest = rest.drop { $0 == " " }
            guard !rest.isEmpty else { return pairs }
            let key = rest.prefix { $0 != "=" && $0 != " " }
            rest = rest.dropFirst(key.count).drop { $0 == " " }
            guard !key.isEmpty, rest.first == "=" else {
                throw IniError(location: location, reason: "expected key=value in \"\(text)\"")
            }
            // PgBouncer allows spaces around the '='.
            rest = rest.dropFirst().drop { $0 == " " }
            var value = ""
            if rest.first == "'" {
                rest = rest.dropFirst()
                var closed = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if character == "'" {
                        if rest.first == "'" {
                            rest = rest.dropFirst()
                        } else {
                            closed = true
                            break
                        }
                    }
                    value.append(character)
                }
                guard closed else { throw IniError(location: location, reason: "unterminated quote in \"\(text)\"") }
            } else {
                let bare = rest.prefix { $0 != " " }
                value = String(bare)
                rest = rest.dropFirst(bare.count)
            }
            guard !value.isEmpty else { throw IniError(location: location, reason: "empty value for \(key)") }
            pairs.append((String(key), value))
        }
    }
}

extension Substring {
    func trimmingTrailing() -> Substring {
        var text = self
        while let last = text.last, last == " " || last == "\t" || last == "\r" { text = text.dropLast() }
        return text
    }
}

#if canImport(Glibc)
import Glibc
#endif
