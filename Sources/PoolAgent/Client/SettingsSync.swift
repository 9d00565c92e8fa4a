// Which settings to apply when a server is assigned, so a client sees its own values and never another's.

/// A plan of `set_config` calls that makes a server's settings match what one client expects.
struct SettingsPlan: Equatable {
    var sets: [(String, String)] = []
    /// Settings the agent applied for an earlier client that this client did not ask for: back to reset_val.
    var resets: [String] = []
    /// Lowercased names the server reports; the others are tracked in `applied`.
    private var reportedNames: Set<String> = []

    var isEmpty: Bool { self.sets.isEmpty && self.resets.isEmpty }

    static func == (lhs: SettingsPlan, rhs: SettingsPlan) -> Bool {
        lhs.sets.elementsEqual(rhs.sets) { $0 == $1 } && lhs.resets == rhs.resets
    }

    /// Reported parameters a client can change; the others describe the server and are the same on all.
    static let settableReported: Set<String> = [
        "application_name", "client_encoding", "datestyle", "intervalstyle", "timezone",
        "standard_conforming_strings", "search_path", "default_transaction_read_only",
    ]

    /// - Parameters:
    ///   - expected: the reported values the client has been told, or nil before its login completes
    ///   - startup: the client's startup settings (parameters and `options`)
    ///   - server: the server's current reported values
    ///   - applied: non-reported settings the agent applied on this server, by lowercased name
    ///   - session: the client's non-reported settings as a server last showed them (its startup ones and
    ///     its own SETs), by lowercased name; nil until the client changed one
    init(expected: [String: String]?, startup: [(String, String)], server: [String: String], applied: [String: String],
         session: [String: String]? = nil) {
        var serverByLower: [String: String] = [:]
        for (name, value) in server { serverByLower[name.lowercased()] = value }
        var wantedOthers = Set<String>()
        for (name, value) in StartupOptions.lastValues(startup) {
            let lower = name.lowercased()
            // Reported means reported by this server: search_path is, from PostgreSQL 18 on.
            if serverByLower[lower] != nil {
                if expected == nil, serverByLower[lower] != value { self.sets.append((name, value)) }
            } else if session == nil {
                wantedOthers.insert(lower)
                if applied[lower] != value { self.sets.append((name, value)) }
            }
        }
        for (name, value) in (session ?? [:]).sorted(by: { $0.key < $1.key }) where serverByLower[name] == nil {
            wantedOthers.insert(name)
            if applied[name] != value { self.sets.append((name, value)) }
        }
        if let expected {
            for (name, value) in expected.sorted(by: { $0.key < $1.key }) {
                let lower = name.lowercased()
                if Self.settableReported.contains(lower), serverByLower[lower] != value { self.sets.append((name, value)) }
            }
        }
        self.resets = applied.keys.filter { !wantedOthers.contains($0) }.sorted()
        self.reportedNames = Set(serverByLower.keys)
    }

    /// One simple query (one implicit transaction), so the changes apply together or not at all. Resets are
    /// `RESET`s, so a setting the client did not ask for is back at its default, not a copy of it.
    var query: String {
        var statements: [String] = []
        if !self.sets.isEmpty {
            statements.append("SELECT " + self.sets.map { "pg_catalog.set_config(\(Self.literal($0.0)), \(Self.literal($0.1)), false)" }.joined(separator: ", "))
        }
        statements += self.resets.map { "RESET " + Self.identifier($0) }
        return statements.joined(separator: "; ")
    }

    /// The non-reported settings in force on the server once this plan has run.
    func applied(after previous: [String: String]) -> [String: String] {
        var result = previous
        for name in self.resets { result.removeValue(forKey: name) }
        for (name, value) in self.sets where !self.reportedNames.contains(name.lowercased()) { result[name.lowercased()] = value }
        return result
    }

    /// A quoted SQL identifier.
    static func identifier(_ text: String) -> String {
        "\"" + text.replacingAll("\"", with: "\"\"") + "\""
    }

    /// A SQL string literal that is right whatever `standard_conforming_strings` says.
    static func literal(_ text: String) -> String {
        "E'" + text.replacingAll("\\", with: "\\\\").replacingAll("'", with: "''") + "'"
    }
}
