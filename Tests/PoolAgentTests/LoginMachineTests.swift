// The login machine fed a client's bytes and the agent's decisions, without sockets.

import NIOCore
import PGWire
import Testing
@testable import PoolAgent

/// What an action list comes to, in words a test can compare.
private enum Did: Equatable {
    case answer(Bool)
    case cancel
    case decide(user: String, database: String)
    case lookUp(AuthMethod)
    case checkPeer
    case write(UInt8, code: Int32?)
    case authorized(pending: [UInt8])
    case fail(String, note: LoginMachine.Note?)
    case close

    init(_ action: LoginMachine.Action) {
        switch action {
        case .answerEncryption(let accept): self = .answer(accept)
        case .cancel: self = .cancel
        case .decide(let startup): self = .decide(user: startup.user, database: startup.database)
        case .lookUpSecret(_, let method): self = .lookUp(method)
        case .checkPeer: self = .checkPeer
        case .write(let buffer):
            let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self)!
            let code = type == BackendMessageID.authentication ? buffer.getInteger(at: buffer.readerIndex + 5, as: Int32.self) : nil
            self = .write(type, code: code)
        case .authorized(_, let pending): self = .authorized(pending: pending.map { Array($0.readableBytesView) } ?? [])
        case .fail(let error, let note): self = .fail(error.sqlState, note: note)
        case .close: self = .close
        }
    }
}

private func startupBytes(_ parameters: [(String, String)], minor: Int32 = 0) -> [UInt8] {
    var body: [UInt8] = []
    withUnsafeBytes(of: (3 << 16 | minor).bigEndian) { body += $0 }
    for (key, value) in parameters { body += Array(key.utf8) + [0] + Array(value.utf8) + [0] }
    body.append(0)
    var packet: [UInt8] = []
    withUnsafeBytes(of: Int32(body.count + 4).bigEndian) { packet += $0 }
    return packet + body
}

private let sslRequest: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]
private let gssRequest: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30]
private let aliceStartup = startupBytes([("user", "alice"), ("database", "app")])

private func passwordMessage(_ body: [UInt8]) -> [UInt8] {
    var message: [UInt8] = [FrontendMessageID.passwordMessage]
    withUnsafeBytes(of: Int32(body.count + 4).bigEndian) { message += $0 }
    return message + body
}

extension LoginMachine {
    fileprivate mutating func feed(_ bytes: [UInt8]) -> [Did] {
        self.received(ByteBuffer(bytes: bytes)).map(Did.init)
    }
}

private func material(_ outcome: AuthQueryOutcome, scram: ScramSecret? = nil) -> LoginMachine.SecretMaterial {
    LoginMachine.SecretMaterial(
        outcome: outcome, scram: scram, mockKey: Array(repeating: 9, count: 32), nonce: ScramTests.serverNonce,
        md5Salt: [1, 2, 3, 4], channelBinding: nil
    )
}

@Suite struct LoginMachineTests {
    @Test func encryptionRequestsAreAnsweredOnceEach() {
        var login = LoginMachine(tlsOffered: true, tlsRequired: false)
        #expect(login.feed(gssRequest) == [.answer(false)])
        #expect(login.feed(sslRequest) == [.answer(true)])
        #expect(login.tlsActive)
        #expect(login.feed(sslRequest) == [.fail("08P01", note: nil)])
    }

    @Test func sslIsRefusedWithoutACertificate() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        #expect(login.feed(sslRequest) == [.answer(false)])
        #expect(!login.tlsActive)
        #expect(login.feed(aliceStartup) == [.decide(user: "alice", database: "app")])
    }

    @Test(arguments: [true, false])
    func bytesPipelinedBehindAnEncryptionRequestAreRefused(tlsOffered: Bool) {
        // Whatever the answer would be (S or N), as PostgreSQL does.
        var login = LoginMachine(tlsOffered: tlsOffered, tlsRequired: false)
        #expect(login.feed(sslRequest + aliceStartup) == [.fail("08P01", note: nil)])
        var gss = LoginMachine(tlsOffered: tlsOffered, tlsRequired: false)
        #expect(gss.feed(gssRequest + aliceStartup) == [.fail("08P01", note: nil)])
    }

    @Test func aCancelRequestIsForwarded() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        #expect(login.feed([0, 0, 0, 16, 0x04, 0xD2, 0x16, 0x2E, 0, 0, 0, 1, 0, 0, 0, 2]) == [.cancel])
        if case .ended = login.state {} else { Issue.record("the login goes on after a cancel request") }
    }

    @Test func aStartupPacketArrivingInPiecesIsDecidedOnce() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        #expect(login.feed(Array(aliceStartup[..<7])) == [])
        #expect(login.feed(Array(aliceStartup[7...])) == [.decide(user: "alice", database: "app")])
    }

    @Test func theStartupPacketIsChecked() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        #expect(login.feed(startupBytes([("database", "app")])) == [.fail("28000", note: nil)])
        login = LoginMachine(tlsOffered: false, tlsRequired: false)
        #expect(login.feed(startupBytes([("user", "u"), ("replication", "database")])) == [.fail("0A000", note: nil)])
        login = LoginMachine(tlsOffered: false, tlsRequired: false)
        #expect(login.feed(startupBytes([("user", "u")])) == [.decide(user: "u", database: "u")], "the database defaults to the user")
    }

    @Test func trustHandsOverWhatTheClientSentBehindItsStartup() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        let query: [UInt8] = [UInt8(ascii: "Q"), 0, 0, 0, 5, 0]
        #expect(login.feed(aliceStartup + query) == [.decide(user: "alice", database: "app")])
        #expect(login.decided(.trust, peerHost: "x").map(Did.init) == [.authorized(pending: query)])
    }

    @Test func aNewerProtocolGetsNegotiateProtocolVersionFirst() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        _ = login.feed(startupBytes([("user", "u"), ("_pq_.thing", "on")], minor: 2))
        #expect(login.decided(.trust, peerHost: "x").map(Did.init) == [.write(BackendMessageID.negotiateProtocolVersion, code: nil), .authorized(pending: [])])
    }

    @Test func tlsRequiredRefusesAPlainConnection() {
        var login = LoginMachine(tlsOffered: true, tlsRequired: true)
        _ = login.feed(aliceStartup)
        #expect(login.decided(.trust, peerHost: "x").map(Did.init) == [.fail("28000", note: nil)])
    }

    @Test func aRefusalFromTheAgentEndsTheLogin() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        _ = login.feed(aliceStartup)
        #expect(login.decided(.refuse(.fatal("3D000", "no such pool")), peerHost: "x").map(Did.init) == [.fail("3D000", note: nil)])
    }

    @Test func peerAuthenticationComparesTheOSUser() {
        for (osUser, expected) in [("alice", Did.authorized(pending: [])), ("mallory", .fail("28000", note: .peerRefused(user: "alice", osUser: "mallory")))] {
            var login = LoginMachine(tlsOffered: false, tlsRequired: false)
            _ = login.feed(aliceStartup)
            #expect(login.decided(.peer, peerHost: "x").map(Did.init) == [.checkPeer])
            #expect(login.peerChecked(osUser: osUser).map(Did.init) == [expected])
        }
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        _ = login.feed(aliceStartup)
        _ = login.decided(.peer, peerHost: "x")
        #expect(login.peerChecked(osUser: nil).map(Did.init) == [.fail("28000", note: nil)])
    }

    @Test func md5WithTheRightAndTheWrongResponse() {
        let stored = MD5Password.stored(password: "secret", user: "alice")
        let right = MD5Password.expectedResponse(stored: stored, salt: [1, 2, 3, 4]) + [0]
        for (response, expected) in [(right, Did.authorized(pending: [])), (Array("md5nope".utf8) + [0], .fail("28P01", note: .passwordRefused(user: "alice", reason: "wrong password (md5 response did not match)")))] {
            var login = LoginMachine(tlsOffered: false, tlsRequired: false)
            _ = login.feed(aliceStartup)
            #expect(login.decided(.password(.md5), peerHost: "x").map(Did.init) == [.lookUp(.md5)])
            #expect(login.secretFound(material(.secret(.plaintext("secret")))).map(Did.init) == [.write(BackendMessageID.authentication, code: 5)])
            #expect(login.feed(passwordMessage(response)) == [expected])
        }
    }

    @Test func scramRunsTheRFCExchangeWithMessagesSentAheadOfTheChallenge() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        _ = login.feed(aliceStartup)
        _ = login.decided(.password(.scramSHA256), peerHost: "x")
        var initial = Array("SCRAM-SHA-256".utf8) + [0]
        withUnsafeBytes(of: Int32(ScramTests.clientFirst.utf8.count).bigEndian) { initial += $0 }
        initial += Array(ScramTests.clientFirst.utf8)
        // The client's first SASL message, sent before the agent asked: held until the challenge is out.
        #expect(login.feed(passwordMessage(initial)) == [])
        let secret = ScramSecret(password: "pencil", salt: ScramTests.salt, iterations: 4096)
        #expect(login.secretFound(material(.secret(.plaintext("pencil")), scram: secret)).map(Did.init) == [
            .write(BackendMessageID.authentication, code: 10), .write(BackendMessageID.authentication, code: 11),
        ])
        let query: [UInt8] = [UInt8(ascii: "Q"), 0, 0, 0, 5, 0]
        #expect(login.feed(passwordMessage(Array(ScramTests.clientFinal.utf8)) + query) == [
            .write(BackendMessageID.authentication, code: 12), .authorized(pending: query),
        ])
    }

    @Test func anUnknownUserGetsAChallengeAndFailsAtTheEnd() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        _ = login.feed(aliceStartup)
        _ = login.decided(.password(.md5), peerHost: "x")
        #expect(login.secretFound(material(.refused("no such role"))).map(Did.init) == [.write(BackendMessageID.authentication, code: 10)])
    }

    @Test func aFailedLookupIsAnError() {
        var login = LoginMachine(tlsOffered: false, tlsRequired: false)
        _ = login.feed(aliceStartup)
        _ = login.decided(.password(.scramSHA256), peerHost: "x")
        #expect(login.secretFound(material(.failed("connection refused"))).map(Did.init) == [
            .fail("08006", note: .lookupFailed(user: "alice", reason: "connection refused")),
        ])
    }

    @Test func whatIsNotAPasswordMessageEndsTheLogin() {
        func challenged() -> LoginMachine {
            var login = LoginMachine(tlsOffered: false, tlsRequired: false)
            _ = login.feed(aliceStartup)
            _ = login.decided(.password(.md5), peerHost: "x")
            _ = login.secretFound(material(.secret(.plaintext("secret"))))
            return login
        }
        var login = challenged()
        #expect(login.feed([FrontendMessageID.terminate, 0, 0, 0, 4]) == [.close])
        login = challenged()
        #expect(login.feed([UInt8(ascii: "Q"), 0, 0, 0, 5, 0]) == [.fail("08P01", note: nil)])
        login = challenged()
        #expect(login.feed([FrontendMessageID.passwordMessage, 0, 1, 0, 0]) == [.fail("08P01", note: nil)], "longer than PostgreSQL allows")
        login = challenged()
        #expect(login.feed(Array(repeating: 0, count: LoginMachine.maximumAuthMessage * 2 + 1)) == [.fail("08P01", note: nil)])
    }
}
