// A small blocking libpq client for the tests: connect, query, cancel, observe.

import CLibPQ
import Foundation

struct PGError: Error, CustomStringConvertible {
    var message: String
    var sqlState: String?
    var description: String { "\(self.sqlState ?? "-----"): \(self.message)" }
}

final class PGConnection: @unchecked Sendable {  // Used by one thread at a time in the tests.
    private var connection: OpaquePointer?

    init(_ conninfo: String) throws {
        let connection = PQconnectdb(conninfo)
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let connection { PQfinish(connection) }
            throw PGError(message: message.trimmingCharacters(in: .whitespacesAndNewlines), sqlState: nil)
        }
        self.connection = connection
    }

    deinit { self.close() }

    func close() {
        if let connection = self.connection {
            PQfinish(connection)
            self.connection = nil
        }
    }

    /// Whether libpq negotiated TLS with the agent.
    var usesTLS: Bool { PQsslInUse(self.connection) == 1 }

    /// The pid from BackendKeyData: the agent's own key, not the server's pid.
    var keyPID: Int32 { PQbackendPID(self.connection) }

    func parameterStatus(_ name: String) -> String? {
        PQparameterStatus(self.connection, name).map { String(cString: $0) }
    }

    /// Runs `sql` and returns the rows of the last result as text.
    @discardableResult
    func query(_ sql: String) throws -> [[String?]] {
        guard let result = PQexec(self.connection, sql) else {
            throw PGError(message: String(cString: PQerrorMessage(self.connection)), sqlState: nil)
        }
        defer { PQclear(result) }
        return try Self.rows(of: result, connection: self.connection)
    }

    /// The rows with their column names: one dictionary per row.
    func records(_ sql: String) throws -> [[String: String?]] {
        guard let result = PQexec(self.connection, sql) else {
            throw PGError(message: String(cString: PQerrorMessage(self.connection)), sqlState: nil)
        }
        defer { PQclear(result) }
        let names = (0..<PQnfields(result)).map { String(cString: PQfname(result, $0)) }
        return try Self.rows(of: result, connection: self.connection).map { row in
            Dictionary(zip(names, row), uniquingKeysWith: { first, _ in first })
        }
    }

    func value(_ sql: String) throws -> String? {
        try self.query(sql).first?.first ?? nil
    }

    /// Prepares a named statement at protocol level (Parse).
    func prepare(_ name: String, _ sql: String) throws {
        guard let result = PQprepare(self.connection, name, sql, 0, nil) else {
            throw PGError(message: String(cString: PQerrorMessage(self.connection)), sqlState: nil)
        }
        defer { PQclear(result) }
        _ = try Self.rows(of: result, connection: self.connection)
    }

    /// Runs a named statement with text parameters (Bind, Execute, Sync).
    func execPrepared(_ name: String, _ parameters: [String]) throws -> [[String?]] {
        var cStrings = parameters.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let result = cStrings.withUnsafeMutableBufferPointer { pointers in
            pointers.withMemoryRebound(to: UnsafePointer<CChar>?.self) {
                PQexecPrepared(self.connection, name, Int32(parameters.count), $0.baseAddress, nil, nil, 0)
            }
        }
        guard let result else {
            throw PGError(message: String(cString: PQerrorMessage(self.connection)), sqlState: nil)
        }
        defer { PQclear(result) }
        return try Self.rows(of: result, connection: self.connection)
    }

    /// Starts a query without waiting; collect it with `finishQuery`.
    func sendQuery(_ sql: String) throws {
        guard PQsendQuery(self.connection, sql) == 1 else {
            throw PGError(message: String(cString: PQerrorMessage(self.connection)), sqlState: nil)
        }
    }

    func finishQuery() throws -> [[String?]] {
        var rows: [[String?]] = []
        var failure: PGError?
        while let result = PQgetResult(self.connection) {
            do {
                rows = try Self.rows(of: result, connection: self.connection)
            } catch let error as PGError {
                failure = failure ?? error
            }
            PQclear(result)
        }
        if let failure { throw failure }
        return rows
    }

    /// Notifications (channel, payload) received within `seconds`, waiting on the socket without sending
    /// anything; returns as soon as `count` have arrived.
    func notifications(count: Int, within seconds: Double) -> [(channel: String, payload: String)] {
        var received: [(channel: String, payload: String)] = []
        let deadline = Date().addingTimeInterval(seconds)
        while received.count < count, Date() < deadline {
            var descriptor = pollfd(fd: PQsocket(self.connection), events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, 50)
            guard PQconsumeInput(self.connection) == 1 else { break }
            while let notify = PQnotifies(self.connection) {
                received.append((String(cString: notify.pointee.relname), String(cString: notify.pointee.extra)))
                PQfreemem(notify)
            }
        }
        return received
    }

    /// Sends a CancelRequest with the key this connection received.
    func cancel() -> Bool {
        guard let handle = PQgetCancel(self.connection) else { return false }
        defer { PQfreeCancel(handle) }
        var buffer = [CChar](repeating: 0, count: 256)
        return PQcancel(handle, &buffer, 256) == 1
    }

    private static func rows(of result: OpaquePointer, connection: OpaquePointer?) throws -> [[String?]] {
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK:
            return (0..<PQntuples(result)).map { row in
                (0..<PQnfields(result)).map { column in
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                }
            }
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return []
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
                ?? String(cString: PQerrorMessage(connection))
            throw PGError(message: message, sqlState: state)
        }
    }
}
