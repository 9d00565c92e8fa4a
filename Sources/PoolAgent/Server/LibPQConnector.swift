// Opens server connections with libpq (blocking, on a worker thread) and hands back a plain socket for the event loop.

import CLibPQ
import CPoolIO

#if canImport(Glibc)
import Glibc
#endif

/// A logged-in libpq connection whose socket now belongs to the event loop.
///
/// After the hand-off no libpq I/O function is called; the `PGconn` stays alive only for its cancel key,
/// backend pid and `PQfinish` at teardown (which also sends Terminate).
final class UpstreamLink: @unchecked Sendable {  // Created on a worker thread, then used only on the agent's event loop.
    private var connection: OpaquePointer?
    let backendPID: Int32
    let cancelHandle: CancelHandle?
    /// The backend's cancel key, read from libpq's cancel handle where its layout is known (libpq before 18,
    /// whose keys are 4 bytes), so the agent can send cancel requests itself; nil: only `cancelHandle`.
    let cancelKey: Int32?
    /// A duplicate of libpq's socket: the link closes it in `finish()` until `handOffSocket()` gives it to the loop.
    private var socket: CInt
    /// ParameterStatus values libpq collected during login.
    let parameters: [String: String]
    /// libpq's OpenSSL session when the connection is TLS; `adoptTLS` gives it to the loop.
    private let tlsSession: UnsafeMutableRawPointer?
    /// The adopted session: closed (Terminate, close_notify) and let go of before `PQfinish` frees it.
    private var tls: UpstreamTLS?
    /// How cancel requests reach this backend over TLS; nil: in plaintext.
    let cancelTLS: CancelTLS?

    fileprivate init(connection: OpaquePointer, socket: CInt) {
        self.connection = connection
        self.socket = socket
        self.tlsSession = PQsslInUse(connection) == 1 ? PQsslStruct(connection, "OpenSSL") : nil
        self.cancelTLS = self.tlsSession.flatMap { Self.cancelTLS(connection, session: $0) }
        let backendPID = PQbackendPID(connection)
        self.backendPID = backendPID
        self.cancelHandle = PQgetCancel(connection).map(CancelHandle.init)
        self.cancelKey = self.cancelHandle.flatMap { $0.key(backendPID: backendPID) }
        var parameters: [String: String] = [:]
        for name in ReportedParameters.all {
            if let value = PQparameterStatus(connection, name) {
                parameters[name] = String(cString: value)
            }
        }
        self.parameters = parameters
    }

    /// Runs a query returning one integer, with libpq (blocking); only before the socket is handed to NIO.
    func queryInteger(_ sql: String) -> Int? {
        guard let connection = self.connection, let result = PQexec(connection, sql) else { return nil }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_TUPLES_OK, PQntuples(result) == 1, let value = PQgetvalue(result, 0, 0) else { return nil }
        return Int(String(cString: value))
    }

    /// The connection's TLS session for the transport that takes over the socket; nil for plaintext.
    func adoptTLS() throws(TLSFailure) -> UpstreamTLS? {
        guard let session = self.tlsSession, self.tls == nil, self.connection != nil else { return nil }
        let tls = try UpstreamTLS(adopting: session)
        self.tls = tls
        return tls
    }

    /// Cancel requests follow libpq 17's rules for the connection's sslmode: TLS with the login's context
    /// unless sslmode is `allow` (whose first try is plaintext), plaintext when a `prefer` server declines.
    private static func cancelTLS(_ connection: OpaquePointer, session: UnsafeMutableRawPointer) -> CancelTLS? {
        let options = LibPQConnector.options(of: connection)
        let mode = options["sslmode"] ?? "prefer"
        guard mode != "allow", mode != "disable" else { return nil }
        let host = PQhost(connection).map { String(cString: $0) } ?? ""
        let isAddress = !host.isEmpty && (host.allSatisfy { $0.isNumber || $0 == "." } || host.contains(":"))
        let sni = options["sslsni"] ?? "1"
        return CancelTLS(
            session: session,
            serverName: sni == "1" && !host.isEmpty && !isAddress && !host.hasPrefix("/") ? host : nil,
            verifyHost: mode == "verify-full" && !host.isEmpty ? host : nil,
            plaintextIfDeclined: mode == "prefer"
        )
    }

    /// Gives the duplicate socket to the caller (the event loop's transport), which closes it from then on.
    func handOffSocket() -> CInt {
        let socket = self.socket
        self.socket = -1
        return socket
    }

    /// Closes the duplicate socket unless it was handed off, then frees libpq's side (which closes libpq's own
    /// socket). Every path that ends a link ends here, so no descriptor outlives it.
    func finish() {
        if self.socket >= 0 {
            close(self.socket)
            self.socket = -1
        }
        if let connection = self.connection {
            self.connection = nil
            if let tls = self.tls {
                // What PQfinish would have sent, sent by hand: libpq's own writes now go to memory.
                let libpqSocket = PQsocket(connection)
                for cipher in tls.close() where libpqSocket >= 0 {
                    _ = cipher.withUnsafeReadableBytes { cpoolio_send(libpqSocket, $0.baseAddress, $0.count) }
                }
                tls.release()
                self.tls = nil
            }
            // Non-blocking, so the Terminate PQfinish writes can never stall the event loop on a full socket.
            PQsetnonblocking(connection, 1)
            PQfinish(connection)
        }
    }

    deinit { self.finish() }
}

/// libpq's cancel handle; thread-safe to use from any thread, freed when the last reference goes.
final class CancelHandle: @unchecked Sendable {  // PQcancel is documented as thread-safe; the pointer is immutable.
    private let pointer: OpaquePointer

    init(_ pointer: OpaquePointer) { self.pointer = pointer }

    /// The secret key inside the handle (see `cpoolio_cancel_key`), when libpq is older than 18 and the
    /// backend's pid is where it should be.
    func key(backendPID: Int32) -> Int32? {
        guard PQlibVersion() < 180_000, backendPID > 0 else { return nil }
        var key: Int32 = 0
        return cpoolio_cancel_key(UnsafeRawPointer(self.pointer), backendPID, &key) == 0 ? key : nil
    }

    /// Sends a CancelRequest on a new connection (blocking); returns libpq's error text on failure.
    func cancel() -> String? {
        var message = [CChar](repeating: 0, count: 256)
        let sent = message.withUnsafeMutableBufferPointer { PQcancel(self.pointer, $0.baseAddress, Int32($0.count)) }
        return sent == 1 ? nil : message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    deinit { PQfreeCancel(self.pointer) }
}

/// Parameters PostgreSQL reports with ParameterStatus (GUC_REPORT), as of PostgreSQL 18.
enum ReportedParameters {
    static let all = [
        "application_name", "client_encoding", "DateStyle", "default_transaction_read_only", "in_hot_standby",
        "integer_datetimes", "IntervalStyle", "is_superuser", "scram_iterations", "search_path", "server_encoding",
        "server_version", "session_authorization", "standard_conforming_strings", "TimeZone",
    ]
}

enum LibPQConnector {
    /// Connects and logs in (blocking). Returns the link, or libpq's error message with any password removed.
    static func connect(parameters: [(String, String)]) -> Result<UpstreamLink, ConnectFailure> {
        let connection: OpaquePointer
        switch self.open(parameters: parameters) {
        case .success(let opened): connection = opened
        case .failure(let failure): return .failure(failure)
        }
        let duplicate = fcntl(PQsocket(connection), F_DUPFD_CLOEXEC, 0)
        guard duplicate >= 0 else {
            let reason = String(cString: strerror(errno))
            PQfinish(connection)
            return .failure(ConnectFailure(message: "cannot duplicate the server socket: \(reason)"))
        }
        return .success(UpstreamLink(connection: connection, socket: duplicate))
    }

    /// Connects and logs in (blocking); the caller owns the returned `PGconn`.
    static func open(parameters: [(String, String)]) -> Result<OpaquePointer, ConnectFailure> {
        let keywords = parameters.map { strdup($0.0) } + [nil]
        let values = parameters.map { strdup($0.1) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        let connection: OpaquePointer? = keywords.withUnsafeBufferPointer { keywordPointers in
            values.withUnsafeBufferPointer { valuePointers in
                keywordPointers.withMemoryRebound(to: UnsafePointer<CChar>?.self) { keywordsConst in
                    valuePointers.withMemoryRebound(to: UnsafePointer<CChar>?.self) { valuesConst in
                        PQconnectdbParams(keywordsConst.baseAddress, valuesConst.baseAddress, 0)
                    }
                }
            }
        }
        guard let connection else { return .failure(ConnectFailure(message: "out of memory creating a libpq connection")) }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.errorMessage(connection, parameters: parameters)
            PQfinish(connection)
            return .failure(ConnectFailure(message: message))
        }
        return .success(connection)
    }

    /// The options a connection uses: its conninfo's, the environment's and libpq's defaults.
    static func options(of connection: OpaquePointer) -> [String: String] {
        guard let list = PQconninfo(connection) else { return [:] }
        defer { PQconninfoFree(list) }
        return Dictionary(LibPQ.settings(in: list), uniquingKeysWith: { _, last in last })
    }

    private static func errorMessage(_ connection: OpaquePointer, parameters: [(String, String)]) -> String {
        var message = String(cString: PQerrorMessage(connection)).trimmingWhitespace()
        if message.isEmpty { message = "connection to the upstream failed" }
        for (keyword, value) in parameters where (keyword == "password" || keyword == "sslpassword") && value.count >= 1 {
            message = message.replacingAll(value, with: "********")
        }
        // libpq joins multi-host attempts with newlines; one line reads better in logs and ErrorResponse.
        return message.split(whereSeparator: \.isNewline).map { $0.trimmingWhitespace() }.joined(separator: "; ")
    }
}

struct ConnectFailure: Error, Sendable {
    var message: String
}
