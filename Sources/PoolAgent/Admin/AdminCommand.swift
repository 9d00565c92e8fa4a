// The admin console's command language: PgBouncer's `SHOW x`, `PAUSE [db]` and friends, one per query.

/// One admin console command, parsed as PgBouncer parses it: one or two words (letters, digits, `_`, or a
/// double-quoted name), any case, an optional trailing semicolon.
enum AdminCommand: Equatable {
    case show(String)
    case pause(String?)
    case resume(String?)
    case reconnect(String?)
    case reload
    case killClient(Int)

    /// The SHOW subjects the console answers.
    static let subjects = ["clients", "config", "databases", "help", "lists", "pools", "servers", "stats", "stats_totals", "version"]

    /// Whether a stats user (not only an admin) may run it.
    var readOnly: Bool {
        if case .show = self { return true }
        return false
    }

    /// The CommandComplete tag.
    var tag: String {
        switch self {
        case .show: "SHOW"
        case .pause: "PAUSE"
        case .resume: "RESUME"
        case .reconnect: "RECONNECT"
        case .reload: "RELOAD"
        case .killClient: "KILL_CLIENT"
        }
    }

    /// Nil when the text is not a command the console knows.
    init?(parsing text: String) {
        guard let words = Self.words(text), let verb = words.first?.lowercased() else { return nil }
        let argument = words.count > 1 ? words[1] : nil
        switch (verb, words.count) {
        case ("show", 2):
            let subject = argument!.lowercased()
            guard Self.subjects.contains(subject) else { return nil }
            self = .show(subject)
        case ("pause", _): self = .pause(argument)
        case ("resume", _): self = .resume(argument)
        case ("reconnect", _): self = .reconnect(argument)
        case ("reload", 1): self = .reload
        case ("kill_client", 2):
            guard let id = Int(argument!), id > 0 else { return nil }
            self = .killClient(id)
        default: return nil
        }
    }

    /// At most two words, or nil when the text is anything else.
    private static func words(_ text: String) -> [String]? {
        var rest = Substring(text)
        func skipSpace() { rest = rest.drop(while: \.isWhitespace) }
        var words: [String] = []
        skipSpace()
        while let first = rest.first, first != ";" {
            guard words.count < 2 else { return nil }
            if first == "\"" {
                rest = rest.dropFirst()
                guard let close = rest.firstIndex(of: "\""), close != rest.startIndex else { return nil }
                words.append(String(rest[..<close]))
                rest = rest[rest.index(after: close)...]
            } else {
                let word = rest.prefix { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
                guard !word.isEmpty else { return nil }
                words.append(String(word))
                rest = rest.dropFirst(word.count)
            }
            guard let next = rest.first, next != ";" else { break }
            guard next.isWhitespace else { return nil }
            skipSpace()
        }
        if rest.first == ";" {
            rest = rest.dropFirst()
            skipSpace()
        }
        return rest.isEmpty && !words.isEmpty ? words : nil
    }
}
