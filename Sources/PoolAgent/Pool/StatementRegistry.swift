// The pool's shared statements: equal Parses share one server-side name, held while a client uses them, within a budget.

import PGWire

/// Gives each distinct (query, parameter types) that clients of a pool hold one id; the server-side name
/// derives from it. An entry lives while some client holds a name bound to it, and the texts held at once
/// stay within `budget` bytes. Ids are never reused, so a server statement left behind by a freed entry can
/// only go unused, never be mistaken for another.
final class StatementRegistry: @unchecked Sendable {  // Confined to the agent's event loop.
    private struct Key: Hashable {
        var query: [UInt8]
        var types: [UInt32]
    }

    private struct Entry {
        var key: Key
        var holders: Int
        var name: String
        /// What the text may do to a session, read once.
        var effects: SessionEffects
        var cost: Int { Self.cost(of: self.key) }

        static func cost(of key: Key) -> Int { key.query.count + 4 * key.types.count + 64 }
    }

    /// A per-agent random part of every server-side name, so no client can guess one of a statement the
    /// agent has yet to prepare.
    static let prefix: String = {
        var random = SystemRandomNumberGenerator()
        let digits = (0..<12).map { _ in String(Int.random(in: 0..<16, using: &random), radix: 16) }.joined()
        return "__pa_\(digits)_"
    }()

    var budget: Int
    private var ids: [Key: Int] = [:]
    private var entries: [Int: Entry] = [:]
    private var lastID = 0
    /// Bytes of the texts held now (with a fixed overhead per entry).
    private(set) var bytes = 0

    init(budget: Int) {
        self.budget = budget
    }

    var count: Int { self.entries.count }

    /// Holds the statement of `parse` for one more client name; nil when it is new and would take the
    /// registry past its budget.
    func retain(_ parse: ParseMessage) -> Int? {
        let key = Key(query: parse.queryBytes, types: parse.parameterTypes)
        if let id = self.ids[key] {
            self.entries[id]!.holders += 1
            return id
        }
        let cost = Entry.cost(of: key)
        guard self.bytes + cost <= self.budget else { return nil }
        self.lastID += 1
        self.ids[key] = self.lastID
        let effects = key.query.withUnsafeBytes { SessionEffects.scan($0) }
        self.entries[self.lastID] = Entry(key: key, holders: 1, name: Self.prefix + String(self.lastID), effects: effects)
        self.bytes += cost
        return self.lastID
    }

    /// One client name bound to `id` is gone; the last one frees it.
    func release(_ id: Int) {
        guard var entry = self.entries[id] else { return }
        entry.holders -= 1
        if entry.holders > 0 {
            self.entries[id] = entry
            return
        }
        self.entries.removeValue(forKey: id)
        self.ids.removeValue(forKey: entry.key)
        self.bytes -= entry.cost
    }

    func release(_ ids: [Int]) {
        for id in ids { self.release(id) }
    }

    /// The ids of the agent's statements named in `text` (a server's error message).
    static func statements(mentionedIn text: String) -> [Int] {
        var ids: [Int] = []
        var rest = Substring(text)
        while let range = rest.firstRange(of: Self.prefix) {
            let digits = rest[range.upperBound...].prefix { $0.isASCII && $0.isNumber }
            if let id = Int(digits) { ids.append(id) }
            rest = rest[range.upperBound...]
        }
        return ids
    }

    /// What statement `id` may do to a session when it runs.
    func effects(_ id: Int) -> SessionEffects {
        self.entries[id]?.effects ?? SessionEffects()
    }

    /// The server-side name of `id`.
    func serverName(_ id: Int) -> String {
        self.entries[id]?.name ?? Self.prefix + String(id)
    }

    /// The Parse that prepares `id` on a server, under its server-side name; nil once it is freed.
    func parse(_ id: Int) -> ParseMessage? {
        guard let entry = self.entries[id] else { return nil }
        return ParseMessage(statement: entry.name, queryBytes: entry.key.query, parameterTypes: entry.key.types)
    }
}

/// Small integers for sets of client settings, so comparing a client's settings with a server's is one test.
final class SettingsKeys: @unchecked Sendable {  // Confined to the agent's event loop.
    private var keys: [String: Int] = [:]
    private var lastKey = 0

    func key(for text: String) -> Int {
        if let key = self.keys[text] { return key }
        // Distinct settings sets are few; should clients invent many, start over. Keys are never reused,
        // so a forgotten set only costs a sync, never a wrong match.
        if self.keys.count >= 10_000 { self.keys.removeAll() }
        self.lastKey += 1
        self.keys[text] = self.lastKey
        return self.lastKey
    }
}
