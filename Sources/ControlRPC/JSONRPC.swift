// JSON-RPC 2.0 requests, responses and errors, one JSON text per line.

public struct RPCError: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: Int
    public var message: String
    public var data: JSONValue?

    public init(code: Int, message: String, data: JSONValue? = nil) {
        self.code = code
        self.message = message
        self.data = data
    }

    public static let parseErrorCode = -32700
    public static let invalidRequestCode = -32600
    public static let methodNotFoundCode = -32601
    public static let invalidParamsCode = -32602
    public static let internalErrorCode = -32603

    public static func parseError(_ detail: String) -> RPCError {
        RPCError(code: parseErrorCode, message: "Parse error", data: ["reason": .string(detail)])
    }
    public static func invalidRequest(_ detail: String) -> RPCError {
        RPCError(code: invalidRequestCode, message: "Invalid Request", data: ["reason": .string(detail)])
    }
    public static func methodNotFound(_ method: String) -> RPCError {
        RPCError(code: methodNotFoundCode, message: "Method not found", data: ["method": .string(method)])
    }
    public static func invalidParams(_ detail: String) -> RPCError {
        RPCError(code: invalidParamsCode, message: "Invalid params", data: ["reason": .string(detail)])
    }

    /// What the data says was wrong, for people: its `errors`, then its `reason`.
    public var details: [String] {
        var details = self.data?["errors"]?.arrayValue?.compactMap(\.stringValue) ?? []
        if let reason = self.data?["reason"]?.stringValue { details.append(reason) }
        return details
    }

    public var description: String {
        if let reason = self.data?["reason"]?.stringValue { return "\(self.message) (\(self.code)): \(reason)" }
        return "\(self.message) (\(self.code))"
    }

    var json: JSONValue {
        var members: [(String, JSONValue)] = [("code", .integer(Int64(self.code))), ("message", .string(self.message))]
        if let data = self.data { members.append(("data", data)) }
        return .object(members)
    }
}

public struct RPCRequest: Equatable, Sendable {
    /// nil for a notification, which gets no response.
    public var id: JSONValue?
    public var method: String
    public var params: JSONValue?

    public init(id: JSONValue?, method: String, params: JSONValue? = nil) {
        self.id = id
        self.method = method
        self.params = params
    }

    /// Validates one request object; the error carries the id when it could be read.
    public static func decode(_ value: JSONValue) -> Result<RPCRequest, RPCResponse> {
        guard case .object = value else {
            return .failure(RPCResponse(id: .null, error: .invalidRequest("a request must be a JSON object")))
        }
        let id = value["id"]
        switch id {
        case nil, .string?, .integer?, .number?, .null?: break
        default: return .failure(RPCResponse(id: .null, error: .invalidRequest("id must be a string, a number or null")))
        }
        guard value["jsonrpc"] == .string("2.0") else {
            return .failure(RPCResponse(id: id ?? .null, error: .invalidRequest("jsonrpc must be \"2.0\"")))
        }
        guard let method = value["method"]?.stringValue else {
            return .failure(RPCResponse(id: id ?? .null, error: .invalidRequest("method must be a string")))
        }
        let params = value["params"]
        switch params {
        case nil, .object?, .array?: break
        default: return .failure(RPCResponse(id: id ?? .null, error: .invalidRequest("params must be an object or an array")))
        }
        return .success(RPCRequest(id: id, method: method, params: params))
    }

    public var json: JSONValue {
        var members: [(String, JSONValue)] = [("jsonrpc", "2.0"), ("method", .string(self.method))]
        if let params = self.params { members.append(("params", params)) }
        if let id = self.id { members.append(("id", id)) }
        return .object(members)
    }
}

public struct RPCResponse: Error, Equatable, Sendable {
    public var id: JSONValue
    public var outcome: Result<JSONValue, RPCError>

    public init(id: JSONValue, result: JSONValue) {
        self.id = id
        self.outcome = .success(result)
    }

    public init(id: JSONValue, error: RPCError) {
        self.id = id
        self.outcome = .failure(error)
    }

    public var json: JSONValue {
        switch self.outcome {
        case .success(let result): ["jsonrpc": "2.0", "result": result, "id": self.id]
        case .failure(let error): ["jsonrpc": "2.0", "error": error.json, "id": self.id]
        }
    }

    /// Reads a response object, as poolctl does.
    public static func decode(_ value: JSONValue) throws(RPCError) -> RPCResponse {
        guard value["jsonrpc"] == .string("2.0") else { throw .invalidRequest("response lacks jsonrpc \"2.0\"") }
        let id = value["id"] ?? .null
        if let result = value["result"] { return RPCResponse(id: id, result: result) }
        guard let error = value["error"], let code = error["code"]?.integerValue, let message = error["message"]?.stringValue else {
            throw .invalidRequest("response has neither result nor a valid error")
        }
        return RPCResponse(id: id, error: RPCError(code: Int(code), message: message, data: error["data"]))
    }
}

/// What one line of input asks for: a single request or a batch, with the errors found while reading it.
public enum RPCLine: Sendable {
    case single(Result<RPCRequest, RPCResponse>)
    case batch([Result<RPCRequest, RPCResponse>])

    public static let maximumBatch = 1000

    public static func decode<Bytes: Collection>(_ line: Bytes) -> RPCLine where Bytes.Element == UInt8 {
        let value: JSONValue
        do {
            value = try JSONValue.parse(line)
        } catch {
            return .single(.failure(RPCResponse(id: .null, error: .parseError(error.description))))
        }
        guard case .array(let items) = value else { return .single(RPCRequest.decode(value)) }
        guard !items.isEmpty else {
            return .single(.failure(RPCResponse(id: .null, error: .invalidRequest("an empty batch"))))
        }
        guard items.count <= Self.maximumBatch else {
            return .single(.failure(RPCResponse(id: .null, error: .invalidRequest("a batch of \(items.count) exceeds \(Self.maximumBatch) requests"))))
        }
        return .batch(items.map(RPCRequest.decode))
    }
}
