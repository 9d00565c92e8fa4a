// Names for prepared statements on pooled servers: equal statements share one name, names never clash.

import PGWire

/// Gives each distinct (query, parameter types) of a pool one id; the server-side name derives from it.
final class StatementRegistry: @unchecked Sendable {  // Confined to the agent's event loop.
    private struct Key: Hashable {
        var query: [UInt8]
        var types: [UInt32]
    }

    /// Above this many distinct statements the table starts over; later Parses get fresh ids, which
    /// costs a duplicate server-side statement at worst, never a wrong one.
    static let capacity = 100_000

    private var ids: [Key: Int] = [:]
    private var nextID = 0

    func id(for parse: ParseMessage) -> Int {
        let key = Key(query: parse.queryBytes, types: parse.parameterTypes)
        if let id = self.ids[key] { return id }
        if self.ids.count >= Self.capacity { self.ids.removeAll() }
        self.nextID += 1
        self.ids[key] = self.nextID
        return self.nextID
    }

    static func serverName(_ id: Int) -> String { "__poolagent_\(id)" }
}

/// A named statement as one client knows it.
struct ClientStatement {
    var id: Int
    /// The Parse to send, under the server-side name, to a server that lacks it.
    var parse: ParseMessage
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
