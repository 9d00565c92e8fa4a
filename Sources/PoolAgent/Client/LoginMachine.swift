// A client's login as a value: encryption requests, the startup packet, the method, the password exchange.

import NIOCore
import PGWire

/// Everything a client does before it is logged in, fed the client's bytes and the agent's decisions and
/// answering with actions. It holds no socket and looks nothing up: `ClientSession` runs the actions (write,
/// start TLS, find the pool and method, look up the secret, read the peer's credentials) and reports back.
/// Each state carries what it needs, and nothing else.
struct LoginMachine {
    /// A startup packet that passed the checks every login gets.
    struct Startup {
        var message: StartupMessage
        var user: String
        /// The database asked for, which names the pool.
        var database: String
    }

    /// What the agent decided for a startup: how the client proves who it is, or why it may not log in.
    enum Decision {
        case trust
        case peer
        /// SCRAM-SHA-256 or md5: the secret is looked up first.
        case password(AuthMethod)
        case refuse(ErrorResponse)
    }

    /// What a password exchange is built from: the secret (or why there is none) and the random parts.
    struct SecretMaterial {
        var outcome: AuthQueryOutcome
        /// The SCRAM verifier of the secret, when it has one (derived from a plaintext password).
        var scram: ScramSecret?
        /// Salts stand-in verifiers for users without one, so the exchange does not tell who exists.
        var mockKey: [UInt8]
        var nonce: String
        var md5Salt: [UInt8]
        /// The TLS certificate hash, for SCRAM-SHA-256-PLUS.
        var channelBinding: [UInt8]?
    }

    /// Why a login failed, for the operator's log (the client gets only the error).
    enum Note: Equatable {
        case lookupFailed(user: String, reason: String)
        case passwordRefused(user: String, reason: String)
        case peerRefused(user: String, osUser: String)
    }

    enum State {
        /// Before the startup packet: which encryption requests came already.
        case negotiating(sslRequested: Bool, gssRequested: Bool)
        /// The startup packet passed its checks; the agent picks the pool and the method.
        case deciding(Startup)
        /// The secret is being looked up; nothing has been asked of the client yet.
        case lookingUp(Startup, AuthMethod)
        /// The peer's OS user is being read.
        case checkingPeer(Startup)
        case scramInitial(Startup, ScramExchange)
        case scramFinal(Startup, ScramExchange)
        /// md5: the response that proves the password.
        case md5(Startup, expected: [UInt8])
        case authorized(Startup)
        case ended
    }

    enum Action {
        /// Answer an encryption request with one byte: `S` (then start TLS) or `N`.
        case answerEncryption(accept: Bool)
        /// Forward a CancelRequest, then close.
        case cancel(CancelRequest)
        /// Pick the pool and the method of this startup; answer with `decided`.
        case decide(Startup)
        /// Look up the user's secret; answer with `secretFound`.
        case lookUpSecret(Startup, AuthMethod)
        /// Read the peer's OS user; answer with `peerChecked`.
        case checkPeer(Startup)
        /// Write these bytes to the client.
        case write(ByteBuffer)
        /// The client is who it says: join `startup`'s pool. `pending` holds the requests sent behind the login.
        case authorized(Startup, pending: ByteBuffer?)
        /// End the login with this error.
        case fail(ErrorResponse, note: Note?)
        /// End the login without an error.
        case close(String)
    }

    /// PostgreSQL's limit for one authentication message.
    static let maximumAuthMessage = 65535

    private(set) var state = State.negotiating(sslRequested: false, gssRequested: false)
    /// Bytes received and not used yet: part of a packet, or messages sent ahead.
    private var held: ByteBuffer?
    /// TLS can be started on this connection (TCP, a certificate, TLS not disabled).
    let tlsOffered: Bool
    /// Only TLS connections may log in over TCP.
    let tlsRequired: Bool
    private(set) var tlsActive = false

    init(tlsOffered: Bool, tlsRequired: Bool) {
        self.tlsOffered = tlsOffered
        self.tlsRequired = tlsRequired
    }

    var isAuthenticating: Bool {
        switch self.state {
        case .negotiating, .deciding, .authorized, .ended: false
        case .lookingUp, .checkingPeer, .scramInitial, .scramFinal, .md5: true
        }
    }

    var startup: Startup? {
        switch self.state {
        case .deciding(let startup), .lookingUp(let startup, _), .checkingPeer(let startup), .scramInitial(let startup, _),
            .scramFinal(let startup, _), .md5(let startup, _), .authorized(let startup):
            startup
        case .negotiating, .ended:
            nil
        }
    }

    // MARK: Bytes from the client

    /// Bytes from the client; returns what to do, in order.
    mutating func received(_ input: ByteBuffer) -> [Action] {
        var buffer = input
        if var held = self.held {
            held.writeImmutableBuffer(input)
            buffer = held
        }
        self.held = nil
        switch self.state {
        case .negotiating:
            return self.startupPackets(&buffer)
        case .scramInitial, .scramFinal, .md5:
            return self.passwordMessages(&buffer)
        case .deciding, .lookingUp, .checkingPeer:
            // Read once the agent asked for them.
            return self.hold(buffer)
        case .authorized, .ended:
            return []
        }
    }

    private mutating func hold(_ buffer: ByteBuffer) -> [Action] {
        // Past twice the largest message the client has nothing legitimate to say before it is asked.
        guard buffer.readableBytes <= Self.maximumAuthMessage * 2 else {
            return self.fail(.fatal("08P01", "too much data sent during authentication"))
        }
        if buffer.readableBytes > 0 { self.held = buffer.compacted }
        return []
    }

    private mutating func startupPackets(_ buffer: inout ByteBuffer) -> [Action] {
        var actions: [Action] = []
        while case .negotiating(let ssl, let gss) = self.state {
            let packet: StartupPacket?
            do {
                packet = try StartupPacket.decode(from: &buffer)
            } catch {
                return actions + self.fail(.fatal(error.sqlState, error.description))
            }
            guard let packet else {
                if buffer.readableBytes > 0 { self.held = buffer.compacted }
                return actions
            }
            switch packet {
            case .sslRequest, .gssEncRequest:
                // Each may come once, in either order, as PostgreSQL allows (libpq tries GSS, then SSL).
                let isSSL = packet == .sslRequest
                guard isSSL ? !ssl : !gss else {
                    return actions + self.fail(.fatal("08P01", "\(isSSL ? "SSL" : "GSSAPI") encryption was already negotiated on this connection"))
                }
                // Bytes sent before the answer could be injected by anyone on the path (CVE-2021-23214);
                // PostgreSQL refuses them whatever it answers.
                guard buffer.readableBytes == 0 else {
                    return actions + self.fail(.fatal("08P01", "received unencrypted data after \(isSSL ? "SSL" : "GSSAPI encryption") request"))
                }
                self.state = .negotiating(sslRequested: ssl || isSSL, gssRequested: gss || !isSSL)
                let accept = isSSL && self.tlsOffered
                if accept { self.tlsActive = true }
                actions.append(.answerEncryption(accept: accept))
            case .cancelRequest(let key):
                self.state = .ended
                return actions + [.cancel(key)]
            case .startup(let message):
                if buffer.readableBytes > 0 { self.held = buffer.compacted }
                return actions + self.startupReceived(message)
            }
        }
        return actions
    }

    private mutating func startupReceived(_ message: StartupMessage) -> [Action] {
        guard let user = message.user, !user.isEmpty else {
            return self.fail(.fatal("28000", "no PostgreSQL user name specified in startup packet"))
        }
        if let replication = message["replication"], !["false", "off", "no", "0"].contains(replication.lowercased()) {
            return self.fail(.fatal("0A000", "replication connections are not supported by poolagent"))
        }
        let startup = Startup(message: message, user: user, database: message.database ?? user)
        self.state = .deciding(startup)
        return [.decide(startup)]
    }

    // MARK: The agent's answers

    /// The agent picked a method for the startup (or refused it); `peerHost` names the client in errors.
    mutating func decided(_ decision: Decision, peerHost: String) -> [Action] {
        guard case .deciding(let startup) = self.state else { return [] }
        var actions: [Action] = []
        if startup.message.minorVersion > 0 || !startup.message.protocolOptions.isEmpty {
            // As PostgreSQL does: right after the startup packet, before any authentication request.
            var buffer = ByteBuffer()
            buffer.writeNegotiateProtocolVersion(minorVersion: 0, unsupportedOptions: startup.message.protocolOptions)
            actions.append(.write(buffer))
        }
        if self.tlsRequired && !self.tlsActive {
            return actions + self.fail(.fatal("28000", "TLS is required: this agent refuses unencrypted connections from \(peerHost)",
                                              detail: "Connect with sslmode=require (client_tls = require)."))
        }
        switch decision {
        case .refuse(let error):
            return actions + self.fail(error)
        case .trust:
            return actions + self.authorize(startup)
        case .peer:
            self.state = .checkingPeer(startup)
            return actions + [.checkPeer(startup)]
        case .password(let method):
            self.state = .lookingUp(startup, method)
            return actions + [.lookUpSecret(startup, method)]
        }
    }

    /// The peer's OS user, or nil when it cannot be read.
    mutating func peerChecked(osUser: String?) -> [Action] {
        guard case .checkingPeer(let startup) = self.state else { return [] }
        guard let osUser else {
            return self.fail(.fatal("28000", "peer authentication failed for user \"\(startup.user)\"", detail: "Cannot map the peer's uid to a user name."))
        }
        guard osUser == startup.user else {
            return self.fail(
                .fatal("28000", "peer authentication failed for user \"\(startup.user)\"", detail: "The connecting process runs as OS user \"\(osUser)\"."),
                note: .peerRefused(user: startup.user, osUser: osUser)
            )
        }
        return self.authorize(startup)
    }

    /// The secret lookup ended: the challenge goes out, and messages the client sent ahead are read.
    mutating func secretFound(_ material: SecretMaterial) -> [Action] {
        guard case .lookingUp(let startup, let method) = self.state else { return [] }
        var secret: StoredSecret? = nil
        var refusal = "no password"
        switch material.outcome {
        case .secret(let found): secret = found
        case .refused(let reason): refusal = reason
        case .failed(let reason):
            // The detail (upstream errors, the query's result) is for the operator, not an unauthenticated client.
            return self.fail(.fatal("08006", "cannot look up the password of user \"\(startup.user)\"; the agent's log says why"),
                             note: .lookupFailed(user: startup.user, reason: reason))
        }
        // As in PostgreSQL: md5 with a SCRAM verifier runs SCRAM; SCRAM with an md5 hash cannot succeed. A user
        // without a secret gets SCRAM too, so the first request does not tell who exists.
        var md5Stored: String? = nil
        switch secret {
        case .md5(let stored)? where method == .md5: md5Stored = stored
        case .plaintext(let password)? where method == .md5: md5Stored = MD5Password.stored(password: password, user: startup.user)
        default: break
        }
        var request = ByteBuffer()
        if let md5Stored {
            self.state = .md5(startup, expected: MD5Password.expectedResponse(stored: md5Stored, salt: material.md5Salt))
            request.writeAuthenticationMD5Password(salt: material.md5Salt)
        } else {
            let exchange: ScramExchange
            if secret != nil, let scram = material.scram {
                exchange = ScramExchange(secret: scram, serverNonce: material.nonce, channelBinding: material.channelBinding)
            } else {
                if secret != nil { refusal = "user has only an md5 password, which cannot answer SCRAM-SHA-256" }
                exchange = ScramExchange(doomedFor: startup.user, reason: refusal, mockKey: material.mockKey, serverNonce: material.nonce,
                                         channelBinding: material.channelBinding)
            }
            self.state = .scramInitial(startup, exchange)
            request.writeAuthenticationSASL(mechanisms: exchange.mechanisms)
        }
        var held = self.held ?? ByteBuffer()
        self.held = nil
        return [.write(request)] + self.passwordMessages(&held)
    }

    // MARK: The password exchange

    /// Reads password messages (`p`) while a challenge is out; anything else ends the login.
    private mutating func passwordMessages(_ buffer: inout ByteBuffer) -> [Action] {
        guard buffer.readableBytes <= Self.maximumAuthMessage * 2 else {
            return self.fail(.fatal("08P01", "too much data sent during authentication"))
        }
        var actions: [Action] = []
        while self.isAuthenticating {
            guard buffer.readableBytes >= 5, let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
                let length = buffer.getInteger(at: buffer.readerIndex + 1, as: Int32.self)
            else { break }
            if type == FrontendMessageID.terminate {
                self.state = .ended
                return actions + [.close("client sent Terminate during authentication")]
            }
            guard type == FrontendMessageID.passwordMessage else {
                return actions + self.fail(.fatal("08P01", "expected password response, got message type \(Self.describeType(type))"))
            }
            guard length >= 4, Int(length) <= Self.maximumAuthMessage else {
                return actions + self.fail(.fatal("08P01", "invalid password message length \(length)"))
            }
            guard buffer.readableBytes >= Int(length) + 1 else { break }
            buffer.moveReaderIndex(forwardBy: 5)
            var body = buffer.readSlice(length: Int(length) - 4)!
            actions += self.passwordMessage(&body)
            if case .authorized(let startup) = self.state {
                // Bytes pipelined after the last password message are the client's first requests.
                return actions + [.authorized(startup, pending: buffer.readableBytes > 0 ? buffer.compacted : nil)]
            }
        }
        if self.isAuthenticating, buffer.readableBytes > 0 { self.held = buffer.compacted }
        return actions
    }

    private mutating func passwordMessage(_ body: inout ByteBuffer) -> [Action] {
        let startup: Startup
        do throws(AuthFailure) {
            switch self.state {
            case .scramInitial(let current, var scram):
                startup = current
                let initial: SASLInitialResponse
                do {
                    initial = try SASLInitialResponse.decode(from: &body)
                } catch {
                    throw .malformed("malformed SASL message: \(error.description)")
                }
                guard scram.mechanisms.contains(initial.mechanism) else {
                    throw .malformed("client selected an invalid SASL authentication mechanism")
                }
                guard let data = initial.data else { throw .malformed("malformed SCRAM message: the initial response is missing") }
                let serverFirst = try scram.receiveClientFirst(data, mechanism: initial.mechanism)
                self.state = .scramFinal(startup, scram)
                var buffer = ByteBuffer()
                buffer.writeAuthenticationSASL(code: AuthenticationCode.saslContinue, data: serverFirst)
                return [.write(buffer)]
            case .scramFinal(let current, var scram):
                startup = current
                let serverFinal = try scram.receiveClientFinal(body.readBytes(length: body.readableBytes) ?? [])
                var buffer = ByteBuffer()
                buffer.writeAuthenticationSASL(code: AuthenticationCode.saslFinal, data: serverFinal)
                self.state = .authorized(startup)
                return [.write(buffer)]
            case .md5(let current, let expected):
                startup = current
                let bytes = body.readBytes(length: body.readableBytes) ?? []
                guard let terminator = bytes.firstIndex(of: 0), terminator == bytes.count - 1 else {
                    throw .malformed("invalid password message: not one NUL-terminated string")
                }
                guard constantTimeEquals(Array(bytes[..<terminator]), expected) else {
                    throw .refused("wrong password (md5 response did not match)")
                }
                self.state = .authorized(startup)
                return []
            case .negotiating, .deciding, .lookingUp, .checkingPeer, .authorized, .ended:
                return []
            }
        } catch {
            let user = self.startup?.user ?? ""
            switch error {
            case .malformed(let message): return self.fail(.fatal("08P01", message))
            case .unsupported(let message): return self.fail(.fatal("0A000", message))
            case .refused(let reason):
                return self.fail(.fatal("28P01", "password authentication failed for user \"\(user)\""),
                                 note: .passwordRefused(user: user, reason: reason))
            }
        }
    }

    // MARK: Endings

    private mutating func authorize(_ startup: Startup) -> [Action] {
        self.state = .authorized(startup)
        let pending = self.held
        self.held = nil
        return [.authorized(startup, pending: pending)]
    }

    private mutating func fail(_ error: ErrorResponse, note: Note? = nil) -> [Action] {
        self.state = .ended
        self.held = nil
        return [.fail(error, note: note)]
    }

    private static func describeType(_ type: UInt8) -> String {
        (0x21...0x7E).contains(type) ? "\"\(Character(Unicode.Scalar(type)))\"" : "0x\(String(type, radix: 16))"
    }
}
