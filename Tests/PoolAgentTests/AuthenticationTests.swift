// Client authentication pieces: base64, SCRAM-SHA-256 against RFC 7677, malformed SASL input, md5, the auth file, rules.

import Crypto
import Testing
@testable import PoolAgent

@Suite struct Base64Tests {
    @Test(arguments: [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")])
    func roundTrip(plain: String, encoded: String) {
        #expect(Base64.encode(Array(plain.utf8)) == encoded)
        #expect(Base64.decode(encoded) == Array(plain.utf8))
    }

    @Test(arguments: ["Zg=", "Zg", "Z===", "Zm9v!A==", "Zg==Zg==", "=Zg=", "Zm 9v"])
    func rejectsNonCanonicalInput(_ text: String) {
        #expect(Base64.decode(text) == nil)
    }
}

@Suite struct ScramTests {
    // RFC 7677, section 3.
    static let salt = Base64.decode("W22ZaJ0SNY7soEsUEjb6gQ==")!
    static let clientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    static let serverNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    static let clientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="

    func exchange() -> ScramExchange {
        ScramExchange(secret: ScramSecret(password: "pencil", salt: Self.salt, iterations: 4096), serverNonce: Self.serverNonce)
    }

    @Test func rfc7677ExchangeSucceeds() throws {
        var scram = self.exchange()
        let serverFirst = try scram.receiveClientFirst(Array(Self.clientFirst.utf8))
        #expect(String(decoding: serverFirst, as: UTF8.self) == "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        let serverFinal = try scram.receiveClientFinal(Array(Self.clientFinal.utf8))
        #expect(String(decoding: serverFinal, as: UTF8.self) == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    }

    /// The client's side of the final message, for exchanges the RFC has no vector for.
    static func clientFinal(password: String, clientFirstBare: String, serverFirst: String, binding: [UInt8]) -> String {
        let fields = Dictionary(uniqueKeysWithValues: serverFirst.split(separator: ",").map { ($0.first!, String($0.dropFirst(2))) })
        let salted = ScramSecret.saltedPassword(Array(password.utf8), salt: Base64.decode(fields["s"]!)!, iterations: Int(fields["i"]!)!)
        let clientKey = ScramSecret.hmac(salted, Array("Client Key".utf8))
        let storedKey = Array(SHA256.hash(data: clientKey))
        let withoutProof = "c=\(Base64.encode(binding)),r=\(fields["r"]!)"
        let signature = ScramSecret.hmac(storedKey, Array("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8))
        return "\(withoutProof),p=\(Base64.encode(zip(clientKey, signature).map { $0 ^ $1 }))"
    }

    @Test func channelBindingWithTheServerEndPoint() throws {
        let endPoint = Array(SHA256.hash(data: Array("certificate".utf8)))
        let secret = ScramSecret(password: "pencil", salt: Self.salt)
        var scram = ScramExchange(secret: secret, serverNonce: Self.serverNonce, channelBinding: endPoint)
        #expect(scram.mechanisms == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
        let header = "p=tls-server-end-point,,"
        let serverFirst = String(decoding: try scram.receiveClientFirst(Array("\(header)n=,r=abc".utf8), mechanism: "SCRAM-SHA-256-PLUS"), as: UTF8.self)
        let final = Self.clientFinal(password: "pencil", clientFirstBare: "n=,r=abc", serverFirst: serverFirst, binding: Array(header.utf8) + endPoint)
        #expect(try scram.receiveClientFinal(Array(final.utf8)).starts(with: Array("v=".utf8)))

        // Another certificate's hash (a man in the middle) fails the binding check.
        var relayed = ScramExchange(secret: secret, serverNonce: Self.serverNonce, channelBinding: endPoint)
        let relayedFirst = String(decoding: try relayed.receiveClientFirst(Array("\(header)n=,r=abc".utf8), mechanism: "SCRAM-SHA-256-PLUS"), as: UTF8.self)
        let forged = Self.clientFinal(password: "pencil", clientFirstBare: "n=,r=abc", serverFirst: relayedFirst,
                                      binding: Array(header.utf8) + Array(SHA256.hash(data: Array("other".utf8))))
        #expect(throws: AuthFailure.malformed("SCRAM channel binding check failed")) { _ = try relayed.receiveClientFinal(Array(forged.utf8)) }
    }

    @Test(arguments: [
        ("y,,n=,r=abc", "SCRAM-SHA-256", true),  // downgrade: the agent did offer -PLUS
        ("n,,n=,r=abc", "SCRAM-SHA-256-PLUS", true),
        ("p=tls-server-end-point,,n=,r=abc", "SCRAM-SHA-256", true),
        ("p=tls-unique,,n=,r=abc", "SCRAM-SHA-256-PLUS", true),
        ("p=tls-server-end-point,,n=,r=abc", "SCRAM-SHA-256-PLUS", false),  // -PLUS was not offered
        ("n,,n=,r=abc", "SCRAM-SHA-1", false),
    ])
    func channelBindingNegotiationErrors(message: String, mechanism: String, offered: Bool) {
        var scram = ScramExchange(secret: ScramSecret(password: "pencil", salt: Self.salt), serverNonce: Self.serverNonce,
                                  channelBinding: offered ? [1, 2, 3] : nil)
        #expect {
            _ = try scram.receiveClientFirst(Array(message.utf8), mechanism: mechanism)
        } throws: { error in
            guard let failure = error as? AuthFailure, case .malformed = failure else { return false }
            return true
        }
    }

    @Test func derivedVerifierRoundTripsThroughItsText() throws {
        let secret = ScramSecret(password: "pencil", salt: Self.salt, iterations: 4096)
        #expect(ScramSecret(parsing: secret.text) == secret)
    }

    @Test func aUTF8UserNameInTheMessageIsIgnoredAsPostgreSQLDoes() throws {
        var scram = self.exchange()
        let serverFirst = String(decoding: try scram.receiveClientFirst(Array("n,,n=jürgen,r=abc".utf8)), as: UTF8.self)
        let final = Self.clientFinal(password: "pencil", clientFirstBare: "n=jürgen,r=abc", serverFirst: serverFirst, binding: Array("n,,".utf8))
        #expect(try scram.receiveClientFinal(Array(final.utf8)).starts(with: Array("v=".utf8)))
    }

    @Test func wrongProofIsRefusedNotMalformed() throws {
        var scram = self.exchange()
        _ = try scram.receiveClientFirst(Array(Self.clientFirst.utf8))
        let wrong = Self.clientFinal.replacingOccurrences("p=dHzb", with: "p=dHzc")
        #expect(throws: AuthFailure.refused("wrong password (SCRAM proof did not verify)")) {
            _ = try scram.receiveClientFinal(Array(wrong.utf8))
        }
    }

    @Test func unknownUserRunsToTheEndThenFails() throws {
        var scram = ScramExchange(doomedFor: "user", reason: "no such user", mockKey: Array(repeating: 7, count: 32), serverNonce: Self.serverNonce)
        let serverFirst = String(decoding: try scram.receiveClientFirst(Array(Self.clientFirst.utf8)), as: UTF8.self)
        #expect(serverFirst.hasSuffix(",i=4096"))
        // The same user always gets the same salt, so probing cannot tell a missing user by a changing salt.
        var again = ScramExchange(doomedFor: "user", reason: "no such user", mockKey: Array(repeating: 7, count: 32), serverNonce: Self.serverNonce)
        #expect(String(decoding: try again.receiveClientFirst(Array(Self.clientFirst.utf8)), as: UTF8.self) == serverFirst)
        #expect(throws: AuthFailure.refused("no such user")) { _ = try scram.receiveClientFinal(Array(Self.clientFinal.utf8)) }
    }

    @Test(arguments: [
        "", "n", "n,", "x,,n=user,r=abc", "p=tls-server-end-point,,n=,r=abc", "n,,", "n,,n=user", "n,,n=user,r=",
        "n,,n=user,r=a,b", "n,,r=abc", "n,,n=user,x=1,r=abc", "n,,n=user,r=abc,", "n,,n=user,r=abc,1=2", "n,,n=user,r=ab\u{7F}c",
        "n,,n=us\u{0}er,r=abc", "y,n=user,r=abc",
    ])
    func malformedClientFirstIsAProtocolViolation(_ message: String) {
        var scram = self.exchange()
        #expect {
            _ = try scram.receiveClientFirst(Array(message.utf8))
        } throws: { error in
            guard let failure = error as? AuthFailure, case .malformed = failure else { return false }
            return true
        }
    }

    @Test(arguments: ["n,a=admin,n=user,r=abc", "n,,m=ext,n=user,r=abc"])
    func unsupportedFeaturesAreRefused(_ message: String) {
        var scram = self.exchange()
        #expect {
            _ = try scram.receiveClientFirst(Array(message.utf8))
        } throws: { error in
            guard let failure = error as? AuthFailure, case .unsupported = failure else { return false }
            return true
        }
    }

    @Test(arguments: [
        "", "c=biws", "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgs",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=!!!!",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
        "c=b!ws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    ])
    func malformedClientFinalIsAProtocolViolation(_ message: String) throws {
        var scram = self.exchange()
        _ = try scram.receiveClientFirst(Array(Self.clientFirst.utf8))
        #expect {
            _ = try scram.receiveClientFinal(Array(message.utf8))
        } throws: { error in
            guard let failure = error as? AuthFailure, case .malformed = failure else { return false }
            return true
        }
    }

    @Test func messagesOutOfOrderAreRefused() throws {
        var scram = self.exchange()
        #expect(throws: AuthFailure.self) { _ = try scram.receiveClientFinal(Array(Self.clientFinal.utf8)) }
        var again = self.exchange()
        _ = try again.receiveClientFirst(Array(Self.clientFirst.utf8))
        #expect(throws: AuthFailure.self) { _ = try again.receiveClientFirst(Array(Self.clientFirst.utf8)) }
    }

    @Test(arguments: [
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=:dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=:dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$dHzb:dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "SCRAM-SHA-256$4096:$dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=:dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
        "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=:dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    ])
    func absurdVerifiersDoNotParse(_ text: String) {
        #expect(ScramSecret(parsing: text) == nil)
        #expect(throws: StoredSecret.SecretError.self) { try StoredSecret.parse(text)?.get() }
    }
}

@Suite struct PasswordSecretTests {
    @Test func md5MatchesPostgreSQL() {
        // md5('secret' || 'alice') and the salted response for salt 01 02 03 04, computed with Python's hashlib.
        #expect(MD5Password.stored(password: "secret", user: "alice") == "md54a0a68b43b6cd5cf266fa02f196e2371")
        #expect(String(decoding: MD5Password.expectedResponse(stored: "md54a0a68b43b6cd5cf266fa02f196e2371", salt: [1, 2, 3, 4]), as: UTF8.self)
            == "md598a0412b9c31436fc53776e863350083")
    }

    @Test func secretsAreClassified() throws {
        #expect(StoredSecret.parse("") == nil)
        #expect(try StoredSecret.parse("md54a0a68b43b6cd5cf266fa02f196e2371")?.get() == .md5("md54a0a68b43b6cd5cf266fa02f196e2371"))
        #expect(try StoredSecret.parse("md5 not a hash")?.get() == .plaintext("md5 not a hash"))
        #expect(try StoredSecret.parse("hunter2")?.get() == .plaintext("hunter2"))
    }

    @Test func userListReadsPgBouncerFormat() throws {
        let list = try UserList.parse(#"""
            ; a comment
            # another
            "alice" "md54a0a68b43b6cd5cf266fa02f196e2371"
              "bob" "pw with ""quotes""" "ignored"

            "carol" ""
            """#)
        #expect(list.secrets["alice"] == .md5("md54a0a68b43b6cd5cf266fa02f196e2371"))
        #expect(list.secrets["bob"] == .plaintext("pw with \"quotes\""))
        #expect(list.withoutPassword == ["carol"])
    }

    @Test func userListWithWindowsLineEnds() throws {
        let list = try UserList.parse("; comment\r\n\"alice\" \"a\"\r\n\"bob\" \"b\"\r\n")
        #expect(list.secrets == ["alice": .plaintext("a"), "bob": .plaintext("b")])
    }

    @Test(arguments: [
        ("alice secret", 1, "double quotes"), ("\"alice\"", 1, "quoted password"), ("\"alice\" \"open", 1, "quoted password"),
        ("\"a\" \"x\"\n\"a\" \"y\"", 2, "twice"), ("\"\" \"x\"", 1, "empty user"),
        ("\"a\" \"SCRAM-SHA-256$1:bad\"", 1, "malformed SCRAM"),
    ])
    func userListErrorsNameTheLine(text: String, line: Int, reason: String) {
        #expect {
            _ = try UserList.parse(text)
        } throws: { error in
            guard let error = error as? UserList.LineError else { return false }
            return error.line == line && error.description.contains(reason) && !error.description.contains("bad\"")
        }
    }
}

@Suite struct AuthRuleTests {
    @Test func addressRanges() throws {
        let net = try #require(AddressRange("10.1.0.0/16"))
        #expect(net.contains([10, 1, 200, 3]))
        #expect(!net.contains([10, 2, 0, 1]))
        #expect(net.contains([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 1, 0, 9]), "IPv4-mapped IPv6")
        let host = try #require(AddressRange("::1"))
        #expect(host.contains(Array(repeating: 0, count: 15) + [1]))
        #expect(!host.contains([127, 0, 0, 1]))
        #expect(AddressRange("10.0.0.0/33") == nil)
        #expect(AddressRange("example.com") == nil)
        #expect(try #require(AddressRange("0.0.0.0/0")).contains([192, 168, 1, 1]))
    }

    @Test func firstMatchingRuleWinsThenTheListenerDefault() {
        var settings = AuthSettings()
        settings.rules = [
            AuthRule(connection: "hostssl", databases: nil, users: ["alice"], address: nil, method: .trust),
            AuthRule(connection: "host", databases: ["app"], users: nil, address: AddressRange("10.0.0.0/8"), method: .md5),
            AuthRule(connection: nil, databases: nil, users: ["mallory"], address: nil, method: .reject),
        ]
        #expect(settings.method(kind: .hostssl, address: [10, 0, 0, 1], database: "app", user: "alice") == (.trust, 1))
        #expect(settings.method(kind: .hostnossl, address: [10, 0, 0, 1], database: "app", user: "alice") == (.md5, 2))
        #expect(settings.method(kind: .hostnossl, address: [11, 0, 0, 1], database: "app", user: "alice") == (.scramSHA256, nil))
        #expect(settings.method(kind: .local, address: nil, database: "app", user: "mallory") == (.reject, 3))
        #expect(settings.method(kind: .local, address: nil, database: "app", user: "alice") == (.peer, nil))
    }
}

extension String {
    func replacingOccurrences(_ target: String, with replacement: String) -> String {
        self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
