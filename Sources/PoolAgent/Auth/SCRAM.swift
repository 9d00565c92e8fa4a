// Server-side SCRAM-SHA-256 (RFC 5802 and 7677) as PostgreSQL speaks it, with tls-server-end-point
// channel binding (SCRAM-SHA-256-PLUS, RFC 5929) on TLS connections.

import Crypto

/// A SCRAM-SHA-256 verifier as `pg_authid.rolpassword` stores it: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
struct ScramSecret: Equatable, Sendable {
    var iterations: Int
    var salt: [UInt8]
    var storedKey: [UInt8]
    var serverKey: [UInt8]

    static let prefix = "SCRAM-SHA-256$"
    /// PostgreSQL's default; used for verifiers the agent derives from plaintext passwords.
    static let defaultIterations = 4096
    /// Iteration counts outside this range are refused: zero is broken, and huge ones stall the client.
    static let iterationRange = 1...10_000_000

    /// Nil when `text` is not a well-formed verifier (wrong shape, bad base64, keys not 32 bytes, absurd iterations).
    init?(parsing text: String) {
        guard text.hasPrefix(Self.prefix) else { return nil }
        let parts = text.dropFirst(Self.prefix.count).split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let head = parts[0].split(separator: ":", omittingEmptySubsequences: false)
        let keys = parts[1].split(separator: ":", omittingEmptySubsequences: false)
        guard head.count == 2, keys.count == 2, head[0].count <= 9, let iterations = Int(head[0]),
            Self.iterationRange.contains(iterations),
            let salt = Base64.decode(head[1]), !salt.isEmpty,
            let storedKey = Base64.decode(keys[0]), storedKey.count == SHA256.byteCount,
            let serverKey = Base64.decode(keys[1]), serverKey.count == SHA256.byteCount
        else { return nil }
        self.init(iterations: iterations, salt: salt, storedKey: storedKey, serverKey: serverKey)
    }

    init(iterations: Int, salt: [UInt8], storedKey: [UInt8], serverKey: [UInt8]) {
        self.iterations = iterations
        self.salt = salt
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    /// Derives the verifier of `password` the way PostgreSQL's `scram_build_secret` does (without SASLprep).
    init(password: String, salt: [UInt8], iterations: Int = ScramSecret.defaultIterations) {
        let salted = Self.saltedPassword(Array(password.utf8), salt: salt, iterations: iterations)
        let clientKey = Self.hmac(salted, Array("Client Key".utf8))
        self.init(
            iterations: iterations,
            salt: salt,
            storedKey: Array(SHA256.hash(data: clientKey)),
            serverKey: Self.hmac(salted, Array("Server Key".utf8))
        )
    }

    var text: String {
        "\(Self.prefix)\(self.iterations):\(Base64.encode(self.salt))$\(Base64.encode(self.storedKey)):\(Base64.encode(self.serverKey))"
    }

    static func hmac(_ key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    /// Hi() of RFC 5802: PBKDF2 with HMAC-SHA-256, one block.
    static func saltedPassword(_ password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var block = Array(HMAC<SHA256>.authenticationCode(for: salt + [0, 0, 0, 1], using: key))
        var result = block
        for _ in 1..<max(iterations, 1) {
            block = Array(HMAC<SHA256>.authenticationCode(for: block, using: key))
            for index in result.indices { result[index] ^= block[index] }
        }
        return result
    }
}

/// Why an authentication exchange ended. `malformed` is a protocol violation (08P01); `refused` is a
/// failed login (28P01) whose reason goes to the log only; `unsupported` asks for a feature the agent lacks.
enum AuthFailure: Error, Equatable {
    case malformed(String)
    case unsupported(String)
    case refused(String)
}

/// One SCRAM-SHA-256 exchange on the server side. Feed it the client-first and client-final messages in
/// order; every malformed input ends it with `.malformed`, a wrong proof with `.refused`.
struct ScramExchange {
    enum Stage { case awaitingClientFirst, awaitingClientFinal, done }

    static let mechanism = "SCRAM-SHA-256"
    static let mechanismPlus = "SCRAM-SHA-256-PLUS"

    /// The certificate hash of this TLS connection: when set, SCRAM-SHA-256-PLUS is offered and a client
    /// that could bind but says the agent cannot ("y") is refused as a downgrade.
    private let channelBinding: [UInt8]?

    /// The mechanisms to offer, preferred first.
    var mechanisms: [String] { self.channelBinding == nil ? [Self.mechanism] : [Self.mechanismPlus, Self.mechanism] }

    private let secret: ScramSecret
    /// Set when the user is unknown or has no usable verifier: the exchange runs to the end, then fails,
    /// so a client cannot tell a missing user from a wrong password.
    private let doomed: String?
    private let serverNonce: String
    private(set) var stage = Stage.awaitingClientFirst
    private var clientFirstBare = ""
    private var serverFirst = ""
    private var gs2Header: [UInt8] = []
    private var nonce = ""

    /// `serverNonce`: printable characters other than `,`; the agent uses base64 of 18 random bytes.
    init(secret: ScramSecret, serverNonce: String, channelBinding: [UInt8]? = nil) {
        self.secret = secret
        self.doomed = nil
        self.serverNonce = serverNonce
        self.channelBinding = channelBinding
    }

    /// An exchange bound to fail after the proof: a stand-in verifier with a salt stable for `user`.
    init(doomedFor user: String, reason: String, mockKey: [UInt8], serverNonce: String, channelBinding: [UInt8]? = nil) {
        self.channelBinding = channelBinding
        let salt = Array(ScramSecret.hmac(mockKey, Array(user.utf8)).prefix(16))
        self.secret = ScramSecret(iterations: ScramSecret.defaultIterations, salt: salt, storedKey: mockKey, serverKey: mockKey)
        self.doomed = reason
        self.serverNonce = serverNonce
    }

    /// Reads client-first-message, sent with `mechanism`, and returns server-first-message.
    mutating func receiveClientFirst(_ message: [UInt8], mechanism: String = ScramExchange.mechanism) throws(AuthFailure) -> [UInt8] {
        guard self.stage == .awaitingClientFirst else { throw .malformed("unexpected SCRAM message") }
        self.stage = .done
        guard let text = Self.printable(message) else {
            throw .malformed("malformed SCRAM message: it contains non-printable or non-UTF-8 bytes")
        }
        let plus = mechanism == Self.mechanismPlus
        guard plus ? self.channelBinding != nil : mechanism == Self.mechanism else {
            throw .malformed("client selected an invalid SASL authentication mechanism")
        }
        var reader = AttributeReader(text)
        // gs2-header: channel-binding flag, then an optional authorization identity.
        switch reader.next() {
        case "n" where !plus:
            break
        case "y" where !plus:
            // The client could bind but thinks the agent cannot: true only when -PLUS was not offered.
            guard self.channelBinding == nil else {
                throw .malformed("SCRAM channel binding negotiation error: the client supports channel binding and thinks the server does not, but it does")
            }
        case "p" where plus:
            guard reader.next() == "=", reader.valueUntilComma() == "tls-server-end-point" else {
                throw .malformed("malformed SCRAM message: unsupported channel-binding type; expected tls-server-end-point")
            }
        case "p", "n", "y":
            throw .malformed("malformed SCRAM message: the channel-binding flag does not match the selected mechanism")
        default:
            throw .malformed("malformed SCRAM message: unexpected channel-binding flag")
        }
        guard reader.next() == "," else { throw .malformed("malformed SCRAM message: comma expected after the channel-binding flag") }
        if reader.peek() == "a" { throw .unsupported("client uses authorization identity, but it is not supported") }
        guard reader.next() == "," else { throw .malformed("malformed SCRAM message: comma expected after the GS2 header") }
        self.gs2Header = Array(text.utf8.prefix(reader.offset))
        self.clientFirstBare = String(text.dropFirst(reader.offset))
        // client-first-message-bare: n=<user>,r=<nonce>[,extensions]. The user name is ignored, as PostgreSQL does.
        if reader.peek() == "m" { throw .unsupported("client requires an unsupported SCRAM extension") }
        _ = try reader.attribute("n")
        guard reader.next() == "," else { throw .malformed("malformed SCRAM message: comma expected after the user name") }
        let clientNonce = try reader.attribute("r")
        guard !clientNonce.isEmpty, clientNonce.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E && $0 != UInt8(ascii: ",") }) else {
            throw .malformed("malformed SCRAM message: the client nonce is empty or has invalid characters")
        }
        try reader.skipExtensions()
        self.nonce = clientNonce + self.serverNonce
        self.serverFirst = "r=\(self.nonce),s=\(Base64.encode(self.secret.salt)),i=\(self.secret.iterations)"
        self.stage = .awaitingClientFinal
        return Array(self.serverFirst.utf8)
    }

    /// Reads client-final-message, checks the proof and returns server-final-message.
    mutating func receiveClientFinal(_ message: [UInt8]) throws(AuthFailure) -> [UInt8] {
        guard self.stage == .awaitingClientFinal else { throw .malformed("unexpected SCRAM message") }
        self.stage = .done
        guard let text = Self.printable(message) else {
            throw .malformed("malformed SCRAM message: it contains non-printable or non-UTF-8 bytes")
        }
        var reader = AttributeReader(text)
        guard let binding = Base64.decode(try reader.attribute("c")) else {
            throw .malformed("malformed SCRAM message: channel-binding data is not valid base64")
        }
        let expected = self.gs2Header.first == UInt8(ascii: "p") ? self.gs2Header + (self.channelBinding ?? []) : self.gs2Header
        guard constantTimeEquals(binding, expected) else {
            throw .malformed("SCRAM channel binding check failed")
        }
        guard reader.next() == "," else { throw .malformed("malformed SCRAM message: comma expected after the channel binding") }
        let nonce = try reader.attribute("r")
        guard constantTimeEquals(Array(nonce.utf8), Array(self.nonce.utf8)) else {
            throw .malformed("malformed SCRAM message: the nonce does not match")
        }
        // Extensions may follow; the proof comes last.
        var withoutProofEnd = reader.offset
        var proofText: Substring? = nil
        while reader.next() == "," {
            let name = reader.peek()
            let value = try reader.attribute(name ?? "?")
            if name == "p" {
                proofText = value
                break
            }
            withoutProofEnd = reader.offset
        }
        guard let proofText, reader.isAtEnd else { throw .malformed("malformed SCRAM message: the proof is missing or not last") }
        guard let proof = Base64.decode(proofText), proof.count == SHA256.byteCount else {
            throw .malformed("malformed SCRAM message: the proof is not 32 bytes of base64")
        }
        let withoutProof = String(text.utf8.prefix(withoutProofEnd))!
        let authMessage = Array("\(self.clientFirstBare),\(self.serverFirst),\(withoutProof)".utf8)
        let signature = ScramSecret.hmac(self.secret.storedKey, authMessage)
        var clientKey = proof
        for index in clientKey.indices { clientKey[index] ^= signature[index] }
        let matches = constantTimeEquals(Array(SHA256.hash(data: clientKey)), self.secret.storedKey)
        if let doomed { throw .refused(doomed) }
        guard matches else { throw .refused("wrong password (SCRAM proof did not verify)") }
        return Array("v=\(Base64.encode(ScramSecret.hmac(self.secret.serverKey, authMessage)))".utf8)
    }

    /// The message as text if it is valid UTF-8 without control characters (a user name in `n=` may be UTF-8;
    /// the nonce, base64 values and structure are checked for ASCII where they are read).
    private static func printable(_ bytes: [UInt8]) -> String? {
        guard bytes.allSatisfy({ $0 >= 0x20 && $0 != 0x7F }) else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// Walks `a=value,b=value` text one character or attribute at a time.
private struct AttributeReader {
    let text: Substring
    private var index: Substring.Index
    var offset: Int { self.text.utf8.distance(from: self.text.startIndex, to: self.index) }
    var isAtEnd: Bool { self.index == self.text.endIndex }

    init(_ text: String) {
        self.text = Substring(text)
        self.index = self.text.startIndex
    }

    func peek() -> Character? { self.isAtEnd ? nil : self.text[self.index] }

    mutating func next() -> Character? {
        guard !self.isAtEnd else { return nil }
        defer { self.index = self.text.index(after: self.index) }
        return self.text[self.index]
    }

    /// Reads `<name>=<value>` up to the next comma (not consumed).
    mutating func attribute(_ name: Character) throws(AuthFailure) -> Substring {
        guard self.next() == name, self.next() == "=" else {
            throw .malformed("malformed SCRAM message: attribute \"\(name)\" expected")
        }
        return self.valueUntilComma()
    }

    /// Reads up to the next comma (not consumed).
    mutating func valueUntilComma() -> Substring {
        let start = self.index
        while let character = self.peek(), character != "," { _ = self.next() }
        return self.text[start..<self.index]
    }

    /// Skips `,x=value` extensions to the end of the message.
    mutating func skipExtensions() throws(AuthFailure) {
        while !self.isAtEnd {
            guard self.next() == ",", let name = self.peek(), name.isLetter else {
                throw .malformed("malformed SCRAM message: garbage at the end of the message")
            }
            _ = try self.attribute(name)
        }
    }
}
