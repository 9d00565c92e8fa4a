// What a statement text may do to a server's session state, read by a small lexer instead of an SQL parser.

/// The session state a client's SQL may create or drop, as far as its tokens tell.
///
/// The lexer knows strings (standard, `E''`, dollar-quoted), quoted identifiers, comments (nested block
/// comments too) and statement boundaries; it reads the first words of each statement and the names of the
/// functions called anywhere. It errs toward "look at the server": what it flags is confirmed or refuted by
/// the server's own state once the request is done, so a false alarm costs one query, never a wrong answer.
public struct SessionEffects: Equatable, Sendable {
    /// Session state that keeps a client on its server.
    public struct Pins: OptionSet, Hashable, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// `pg_advisory_lock` and its shared and `try` forms (session level; `_xact_` locks end with the transaction).
        public static let advisoryLock = Pins(rawValue: 1 << 0)
        /// `CREATE TEMP …`, `SELECT … INTO TEMP …`.
        public static let temporaryTable = Pins(rawValue: 1 << 1)
        /// `DECLARE … WITH HOLD`.
        public static let holdCursor = Pins(rawValue: 1 << 2)
        /// SQL-level `PREPARE`.
        public static let sqlPrepare = Pins(rawValue: 1 << 3)
        /// `SET ROLE`, `SET SESSION AUTHORIZATION`.
        public static let role = Pins(rawValue: 1 << 4)
        /// `LISTEN` held on the server itself (when the pool relays no notifications).
        public static let listen = Pins(rawValue: 1 << 5)

        /// Each reason with the name used in stats, metrics, events and errors.
        public static let named: [(Pins, String)] = [
            (.advisoryLock, "advisory_lock"), (.temporaryTable, "temporary_table"), (.holdCursor, "hold_cursor"),
            (.sqlPrepare, "sql_prepare"), (.role, "role"), (.listen, "listen"),
        ]

        public var names: [String] { Self.named.filter { self.contains($0.0) }.map(\.1) }
    }

    /// A change to what the client listens to.
    public enum ListenChange: Equatable, Sendable {
        case listen(String)
        case unlisten(String)
        case unlistenAll
    }

    /// State this text may create.
    public var pins: Pins = []
    /// The text may change settings or anything else the agent cannot see from its tags (`SET`, `RESET`,
    /// `DISCARD`, `set_config`, `DO`): the server's state is read once the request is done.
    public var changesSettings = false
    /// The text may drop state a pin waits for (unlock, `DISCARD`, `DEALLOCATE`, `CLOSE`, `DROP`, the end of
    /// a transaction, `RESET`, `UNLISTEN`): a pinned client's server is looked at again.
    public var mayRelease = false
    /// `LISTEN` and `UNLISTEN` in the order they come.
    public var listens: [ListenChange] = []

    public init() {}

    public var isEmpty: Bool { self.pins.isEmpty && !self.changesSettings && !self.mayRelease && self.listens.isEmpty }

    /// PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
    static let identifierLimit = 63

    /// Reads `text` (SQL in the client encoding; only ASCII matters to the lexer).
    public static func scan<Bytes: Collection<UInt8>>(_ text: Bytes) -> SessionEffects where Bytes.Index == Int {
        if Self.certainlyNone(text) { return SessionEffects() }
        return Self.lex(text)
    }

    /// The lexer's full reading, without the prefilter (`scan` is the same, only faster on most texts).
    public static func lex<Bytes: Collection<UInt8>>(_ text: Bytes) -> SessionEffects where Bytes.Index == Int {
        var lexer = Lexer(text: text)
        var effects = SessionEffects()
        var statement: [Token] = []
        statement.reserveCapacity(12)
        var depth = 0
        var previousWord: String? = nil
        while let token = lexer.next() {
            switch token {
            case .semicolon where depth == 0:
                effects.classify(statement)
                statement.removeAll(keepingCapacity: true)
                previousWord = nil
                continue
            case .open:
                if let word = previousWord { effects.function(word) }
                depth += 1
            case .close:
                depth = max(0, depth - 1)
            default:
                break
            }
            if case .word(let word) = token { previousWord = word } else { previousWord = nil }
            // A statement's first words decide its kind; past them only the words of WITH HOLD, INTO TEMP and
            // ON COMMIT DROP.
            if statement.count < 8 {
                statement.append(token)
            } else if case .word(let word) = token, Self.laterWords.contains(word) {
                statement.append(token)
            }
        }
        effects.classify(statement)
        return effects
    }

    /// Reads the query text of a Parse message's body (statement name, query, parameter types).
    public static func scan(parseBody body: UnsafeRawBufferPointer) -> SessionEffects {
        guard let nameEnd = body.firstIndex(of: 0) else { return SessionEffects() }
        let query = body[(nameEnd + 1)...]
        let end = query.firstIndex(of: 0) ?? body.endIndex
        return Self.scan(UnsafeRawBufferPointer(rebasing: body[(nameEnd + 1)..<end]))
    }

    private static let laterWords: Set<String> = ["with", "hold", "into", "temp", "temporary", "on", "commit", "drop"]

    /// The first words `classify` acts on: a text that starts with any other can only matter through a
    /// function name or INTO TEMP (or through a later statement).
    private static let firstWordList: [StaticString] = [
        "listen", "unlisten", "set", "reset", "discard", "deallocate", "close", "drop", "commit", "end", "rollback",
        "abort", "prepare", "declare", "create", "do",
    ]

    /// True only when the lexer would find nothing: one statement (a `;` at most at the very end) whose first
    /// word is none of `firstWordList`, with no `temp`, `advisory` or `set_config` anywhere (any case). One pass
    /// over the bytes, nothing allocated: the statements applications run all day (SELECT, INSERT, UPDATE,
    /// DELETE, WITH, BEGIN) skip the lexer. Anything else, comments and quoted first words included, is lexed.
    public static func certainlyNone<Bytes: Collection<UInt8>>(_ text: Bytes) -> Bool where Bytes.Index == Int {
        var index = text.startIndex
        let end = text.endIndex
        while index < end, Lexer<Bytes>.isSpace(text[index]) { index += 1 }
        guard index < end else { return true }
        guard Lexer<Bytes>.isIdentifierStart(text[index]) else { return false }
        // The first word, compared folded in place with those of the same length.
        let wordStart = index
        while index < end, Lexer<Bytes>.isIdentifierPart(text[index]) { index += 1 }
        let length = index - wordStart
        for candidate in Self.firstWordList where candidate.utf8CodeUnitCount == length {
            if Self.folded(text, at: wordStart, equals: candidate) { return false }
        }
        // The first word may itself be a function's name.
        index = wordStart
        while index < end {
            let byte = text[index]
            if byte == UInt8(ascii: ";") {
                // Only a final one: another statement may follow it.
                var rest = index + 1
                while rest < end, Lexer<Bytes>.isSpace(text[rest]) { rest += 1 }
                return rest == end
            }
            switch byte | 0x20 {
            case UInt8(ascii: "t"):
                if Self.folded(text, at: index, equals: "temp") { return false }
            case UInt8(ascii: "a"):
                if Self.folded(text, at: index, equals: "advisory") { return false }
            case UInt8(ascii: "s"):
                if Self.folded(text, at: index, equals: "set_config") { return false }
            default:
                break
            }
            index += 1
        }
        return true
    }

    /// The bytes at `index` are `word` (lower-case ASCII), ASCII letters compared without case.
    private static func folded<Bytes: Collection<UInt8>>(_ text: Bytes, at index: Int, equals word: StaticString) -> Bool where Bytes.Index == Int {
        guard index + word.utf8CodeUnitCount <= text.endIndex else { return false }
        let expected = word.utf8Start
        for offset in 0..<word.utf8CodeUnitCount {
            let byte = text[index + offset]
            let lowered = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
            if lowered != expected[offset] { return false }
        }
        return true
    }

    private mutating func function(_ name: String) {
        switch name {
        case "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared":
            self.pins.insert(.advisoryLock)
        case "pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all":
            self.mayRelease = true
        case "set_config":
            self.changesSettings = true
        default:
            break
        }
    }

    private mutating func classify(_ tokens: [Token]) {
        guard case .word(let first)? = tokens.first else { return }
        func word(_ index: Int) -> String? {
            guard index < tokens.count, case .word(let word) = tokens[index] else { return nil }
            return word
        }
        func contains(_ words: String...) -> Bool {
            var index = 0
            for token in tokens {
                if case .word(let word) = token, word == words[index] {
                    index += 1
                    if index == words.count { return true }
                } else {
                    index = 0
                }
            }
            return false
        }
        switch first {
        case "listen":
            if let channel = Self.identifier(tokens, at: 1) { self.listens.append(.listen(channel)) }
        case "unlisten":
            if tokens.count > 1, tokens[1] == .star {
                self.listens.append(.unlistenAll)
            } else if let channel = Self.identifier(tokens, at: 1) {
                self.listens.append(.unlisten(channel))
            }
            self.mayRelease = true
        case "set":
            switch word(1) {
            case "local", "transaction", "constraints":
                break  // ends with the transaction
            case "role":
                self.pins.insert(.role)
                self.mayRelease = true
            case "session" where word(2) == "authorization" || word(2) == "role":
                self.pins.insert(.role)
                self.mayRelease = true
            default:
                self.changesSettings = true
            }
        case "reset", "discard":
            self.changesSettings = true
            self.mayRelease = true
        case "deallocate", "close", "drop", "commit", "end", "rollback", "abort":
            self.mayRelease = true
        case "prepare":
            if word(1) != "transaction" { self.pins.insert(.sqlPrepare) }
        case "declare":
            if contains("with", "hold") { self.pins.insert(.holdCursor) }
        case "create":
            // ON COMMIT DROP: gone with its transaction.
            if (1...4).contains(where: { word($0) == "temp" || word($0) == "temporary" }), !contains("on", "commit", "drop") {
                self.pins.insert(.temporaryTable)
            }
        case "do":
            // A block can do anything a statement can, with no tag to show it.
            self.changesSettings = true
            self.mayRelease = true
        default:
            break
        }
        if contains("into", "temp") || contains("into", "temporary") { self.pins.insert(.temporaryTable) }
    }

    /// The identifier at `index`, as PostgreSQL names it: unquoted ones folded to lower case, both truncated.
    private static func identifier(_ tokens: [Token], at index: Int) -> String? {
        guard index < tokens.count else { return nil }
        switch tokens[index] {
        case .word(let name), .quoted(let name): return Self.truncated(name)
        default: return nil
        }
    }

    private static func truncated(_ name: String) -> String {
        var bytes = Array(name.utf8)
        guard bytes.count > Self.identifierLimit else { return name }
        var end = Self.identifierLimit
        // Never cut inside a UTF-8 sequence.
        while end > 0, bytes[end] & 0xC0 == 0x80 { end -= 1 }
        bytes.removeSubrange(end...)
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// What the lexer tells apart; everything else is `.other`.
enum Token: Equatable {
    /// An unquoted identifier or keyword, ASCII letters folded to lower case.
    case word(String)
    /// A double-quoted identifier, as written.
    case quoted(String)
    case semicolon, open, close, star, other
}

struct Lexer<Bytes: Collection<UInt8>> where Bytes.Index == Int {
    let text: Bytes
    var index: Int

    init(text: Bytes) {
        self.text = text
        self.index = text.startIndex
    }

    private func byte(_ offset: Int = 0) -> UInt8? {
        let at = self.index + offset
        return at < self.text.endIndex ? self.text[at] : nil
    }

    /// What separates tokens (a NUL too: the lexer reads up to the message's end, not a C string's).
    static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r")
            || byte == 0x0C || byte == 0
    }

    static func isIdentifierStart(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || byte == UInt8(ascii: "_") || byte >= 0x80
    }

    static func isIdentifierPart(_ byte: UInt8) -> Bool {
        Self.isIdentifierStart(byte) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "$")
    }

    mutating func next() -> Token? {
        while let byte = self.byte() {
            switch byte {
            case _ where Self.isSpace(byte):
                self.index += 1
            case UInt8(ascii: "-") where self.byte(1) == UInt8(ascii: "-"):
                while let next = self.byte(), next != UInt8(ascii: "\n") { self.index += 1 }
            case UInt8(ascii: "/") where self.byte(1) == UInt8(ascii: "*"):
                self.skipBlockComment()
            case UInt8(ascii: "'"):
                self.skipString(backslashes: false)
                return .other
            case UInt8(ascii: "\""):
                return .quoted(self.quotedIdentifier())
            case UInt8(ascii: "$"):
                if let tag = self.dollarTag() {
                    self.skipDollarQuoted(tag: tag)
                } else {
                    self.index += 1
                    while let next = self.byte(), next >= UInt8(ascii: "0") && next <= UInt8(ascii: "9") { self.index += 1 }
                }
                return .other
            case UInt8(ascii: ";"):
                self.index += 1
                return .semicolon
            case UInt8(ascii: "("):
                self.index += 1
                return .open
            case UInt8(ascii: ")"):
                self.index += 1
                return .close
            case UInt8(ascii: "*"):
                self.index += 1
                return .star
            default:
                if byte | 0x20 == UInt8(ascii: "e"), self.byte(1) == UInt8(ascii: "'") {
                    self.index += 1
                    self.skipString(backslashes: true)
                    return .other
                }
                if Self.isIdentifierStart(byte) { return .word(self.word()) }
                self.index += 1
                if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                    while let next = self.byte(), Self.isIdentifierPart(next) || next == UInt8(ascii: ".") { self.index += 1 }
                }
                return .other
            }
        }
        return nil
    }

    /// The word here, ASCII folded to lower case, built in place (no array: words up to 15 bytes stay inline).
    private mutating func word() -> String {
        let start = self.index
        while let byte = self.byte(), Self.isIdentifierPart(byte) { self.index += 1 }
        let text = self.text
        return String(unsafeUninitializedCapacity: self.index - start) { buffer in
            for offset in 0..<buffer.count {
                let byte = text[start + offset]
                buffer[offset] = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte + 32 : byte
            }
            return buffer.count
        }
    }

    private mutating func skipBlockComment() {
        self.index += 2
        var depth = 1
        while let byte = self.byte(), depth > 0 {
            if byte == UInt8(ascii: "/"), self.byte(1) == UInt8(ascii: "*") {
                depth += 1
                self.index += 2
            } else if byte == UInt8(ascii: "*"), self.byte(1) == UInt8(ascii: "/") {
                depth -= 1
                self.index += 2
            } else {
                self.index += 1
            }
        }
    }

    private mutating func skipString(backslashes: Bool) {
        self.index += 1
        while let byte = self.byte() {
            self.index += 1
            if backslashes, byte == UInt8(ascii: "\\") {
                self.index += 1
            } else if byte == UInt8(ascii: "'") {
                guard self.byte() == UInt8(ascii: "'") else { return }
                self.index += 1
            }
        }
    }

    private mutating func quotedIdentifier() -> String {
        self.index += 1
        var bytes: [UInt8] = []
        while let byte = self.byte() {
            self.index += 1
            if byte == UInt8(ascii: "\"") {
                guard self.byte() == UInt8(ascii: "\"") else { break }
                self.index += 1
            }
            bytes.append(byte)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The tag of a dollar quote starting here (`$$` or `$name$`), nil for a parameter like `$1`.
    private func dollarTag() -> [UInt8]? {
        var offset = 1
        var tag: [UInt8] = [UInt8(ascii: "$")]
        while let byte = self.byte(offset) {
            if byte == UInt8(ascii: "$") {
                tag.append(byte)
                return tag
            }
            guard Self.isIdentifierStart(byte) || (offset > 1 && Self.isIdentifierPart(byte)) else { return nil }
            tag.append(byte)
            offset += 1
        }
        return nil
    }

    private mutating func skipDollarQuoted(tag: [UInt8]) {
        self.index += tag.count
        while self.index < self.text.endIndex {
            if self.text[self.index] == UInt8(ascii: "$"), self.matches(tag) {
                self.index += tag.count
                return
            }
            self.index += 1
        }
    }

    private func matches(_ tag: [UInt8]) -> Bool {
        guard self.index + tag.count <= self.text.endIndex else { return false }
        for (offset, byte) in tag.enumerated() where self.text[self.index + offset] != byte { return false }
        return true
    }
}
