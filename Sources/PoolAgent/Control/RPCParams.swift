// Typed access to a request's params object; every mistake is a -32602 that names the param.

import ControlRPC

struct RPCParams {
    private let members: [(String, JSONValue)]
    private let method: String

    /// Accepts a missing params or an object; refuses names outside `allowed`.
    init(_ request: RPCRequest, allowed: Set<String>) throws(RPCError) {
        self.method = request.method
        switch request.params {
        case nil:
            self.members = []
        case .object(let members)?:
            self.members = members
        case .array(let items)? where items.isEmpty:
            self.members = []
        default:
            throw .invalidParams("\(request.method) takes its params as an object")
        }
        for (key, _) in self.members where !allowed.contains(key) {
            throw .invalidParams("unknown param \"\(key)\" for \(request.method); expected \(allowed.isEmpty ? "none" : allowed.sorted().joined(separator: ", "))")
        }
    }

    func value(_ name: String) -> JSONValue? {
        self.members.first { $0.0 == name }?.1
    }

    func string(_ name: String) throws(RPCError) -> String? {
        guard let value = self.value(name) else { return nil }
        guard let text = value.stringValue else { throw .invalidParams("\(name) must be a string") }
        return text
    }

    func integer(_ name: String, in range: ClosedRange<Int>) throws(RPCError) -> Int? {
        guard let value = self.value(name) else { return nil }
        guard let number = value.integerValue else { throw .invalidParams("\(name) must be an integer") }
        guard range.contains(Int(number)) else {
            throw .invalidParams("\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(number)")
        }
        return Int(number)
    }

    func seconds(_ name: String) throws(RPCError) -> Duration? {
        guard let value = self.value(name) else { return nil }
        let seconds: Double
        switch value {
        case .integer(let number): seconds = Double(number)
        case .number(let number): seconds = number
        default: throw .invalidParams("\(name) must be a number of seconds")
        }
        guard seconds.isFinite, seconds > 0, seconds <= 365 * 86400 else {
            throw .invalidParams("\(name) must be a positive number of seconds, got \(seconds)")
        }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }

    func bool(_ name: String) throws(RPCError) -> Bool? {
        guard let value = self.value(name) else { return nil }
        guard let flag = value.boolValue else { throw .invalidParams("\(name) must be a boolean") }
        return flag
    }
}

/// Application errors of the control protocol, in JSON-RPC's -32000…-32099 range.
enum ControlError {
    static let unknownPool = -32001
    static let conflict = -32002
    static let deadlineExceeded = -32003
    static let shuttingDown = -32004
    static let permissionDenied = -32005
    static let unknownClient = -32006
    static let invalidConfiguration = -32010

    static func unknownPool(_ name: String) -> RPCError {
        RPCError(code: unknownPool, message: "Unknown pool", data: ["pool": .string(name)])
    }
}
