// What the agent knows of a user's password: a SCRAM verifier, an md5 hash, or the plaintext itself.

import Crypto

enum StoredSecret: Equatable, Sendable {
    case scram(ScramSecret)
    /// `md5` followed by 32 hex digits: md5(password || user).
    case md5(String)
    case plaintext(String)

    /// Classifies a secret the way PostgreSQL and PgBouncer do; nil for an empty secret (no password).
    /// A string that starts like a SCRAM verifier but does not parse is an error, not a plaintext password.
    static func parse(_ text: String) -> Result<StoredSecret, SecretError>? {
        if text.isEmpty { return nil }
        if text.hasPrefix(ScramSecret.prefix) {
            guard let secret = ScramSecret(parsing: text) else { return .failure(.invalidScram) }
            return .success(.scram(secret))
        }
        if text.utf8.count == 35, text.hasPrefix("md5"), text.utf8.dropFirst(3).allSatisfy(Self.isLowerHex) {
            return .success(.md5(text))
        }
        return .success(.plaintext(text))
    }

    enum SecretError: Error, CustomStringConvertible {
        case invalidScram
        var description: String {
            "malformed SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, 32-byte keys, iterations 1 to \(ScramSecret.iterationRange.upperBound))"
        }
    }

    private static func isLowerHex(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }
}

enum MD5Password {
    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var output: [UInt8] = []
        for byte in bytes {
            output.append(digits[Int(byte >> 4)])
            output.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: output, as: UTF8.self)
    }

    static func md5Hex(_ bytes: [UInt8]) -> String {
        self.hex(Insecure.MD5.hash(data: bytes))
    }

    /// The stored form: `md5` + md5(password || user).
    static func stored(password: String, user: String) -> String {
        "md5" + self.md5Hex(Array(password.utf8) + Array(user.utf8))
    }

    /// What a client must send for `stored` and `salt`: `md5` + md5(hex-of-stored || salt).
    static func expectedResponse(stored: String, salt: [UInt8]) -> [UInt8] {
        Array(("md5" + self.md5Hex(Array(stored.utf8.dropFirst(3)) + salt)).utf8)
    }
}

/// An auth file in PgBouncer's userlist.txt format: one `"user" "secret"` pair per line, `""` for a quote
/// inside a field, blank lines and lines starting with `;` or `#` ignored. Later fields on a line are ignored.
struct UserList: Sendable, Equatable {
    var secrets: [String: StoredSecret] = [:]
    /// Users listed with an empty secret: known, but no password can match.
    var withoutPassword: Set<String> = []

    struct LineError: Error, CustomStringConvertible {
        var line: Int
        var reason: String
        var description: String { "line \(self.line): \(self.reason)" }
    }

    static func parse(_ text: String) throws(LineError) -> UserList {
        var list = UserList()
        // isNewline splits "\n", "\r\n" (one Character in Swift) and "\r" alike.
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let number = index + 1
            let line = rawLine.drop { $0 == " " || $0 == "\t" }
            if line.isEmpty || line.hasPrefix(";") || line.hasPrefix("#") { continue }
            var rest = Substring(line)
            guard let user = Self.quoted(&rest) else {
                throw LineError(line: number, reason: "expected \"user\" \"password\" with both fields in double quotes")
            }
            rest = rest.drop { $0 == " " || $0 == "\t" }
            guard let secretText = Self.quoted(&rest) else {
                throw LineError(line: number, reason: "expected a quoted password after user \"\(user)\"")
            }
            guard !user.isEmpty else { throw LineError(line: number, reason: "empty user name") }
            guard list.secrets[user] == nil, !list.withoutPassword.contains(user) else {
                throw LineError(line: number, reason: "user \"\(user)\" is listed twice")
            }
            switch StoredSecret.parse(secretText) {
            case nil: list.withoutPassword.insert(user)
            case .success(let secret)?: list.secrets[user] = secret
            case .failure(let error)?: throw LineError(line: number, reason: "user \"\(user)\": \(error)")
            }
        }
        return list
    }

    /// Reads one double-quoted field, where `""` stands for a quote; nil if the field is not well formed.
    private static func quoted(_ text: inout Substring) -> String? {
        guard text.first == "\"" else { return nil }
        var value = ""
        var index = text.index(after: text.startIndex)
        while index < text.endIndex {
            let character = text[index]
            index = text.index(after: index)
            if character == "\"" {
                if index < text.endIndex, text[index] == "\"" {
                    value.append("\"")
                    index = text.index(after: index)
                    continue
                }
                text = text[index...]
                return value
            }
            value.append(character)
        }
        return nil
    }
}
