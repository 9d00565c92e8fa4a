// RPCLine.decode: one line of control-socket input as a request or a batch, with JSON-RPC error codes for bad input.

import ControlRPC
import Testing

extension RPCLine {
    var single: Result<RPCRequest, RPCResponse>? {
        guard case .single(let result) = self else { return nil }
        return result
    }

    var batch: [Result<RPCRequest, RPCResponse>]? {
        guard case .batch(let results) = self else { return nil }
        return results
    }
}

extension RPCResponse {
    var error: RPCError? {
        guard case .failure(let error) = self.outcome else { return nil }
        return error
    }
}

@Suite struct RPCLineTests {
    func decode(_ text: String) -> RPCLine {
        RPCLine.decode(Array(text.utf8))
    }

    @Test func aRequestWithParamsAndId() {
        let line = self.decode(#"{"jsonrpc":"2.0","method":"pause","params":{"pool":"main"},"id":1}"#)
        #expect(line.single == .success(RPCRequest(id: 1, method: "pause", params: ["pool": "main"])))
    }

    @Test func aRequestWithArrayParamsAndStringId() {
        let line = self.decode(#"{"jsonrpc":"2.0","method":"kill","params":["a",2],"id":"x-1"}"#)
        #expect(line.single == .success(RPCRequest(id: "x-1", method: "kill", params: ["a", 2])))
    }

    @Test func aNotificationHasNoId() throws {
        let request = try #require(try self.decode(#"{"jsonrpc":"2.0","method":"reload"}"#).single?.get())
        #expect(request == RPCRequest(id: Optional<JSONValue>.none, method: "reload"))
        #expect(request.params == Optional<JSONValue>.none)
    }

    @Test func aNullIdIsAnIdNotANotification() throws {
        let request = try #require(try self.decode(#"{"jsonrpc":"2.0","method":"reload","id":null}"#).single?.get())
        #expect(request.id == .some(.null))
    }

    @Test func unparsableTextIsAParseError() throws {
        let response = try #require(self.decode(#"{"jsonrpc":"2.0","method""#).single?.failure)
        #expect(response.id == .null)
        let error = try #require(response.error)
        #expect(error.code == -32700)
        #expect(error.message == "Parse error")
        #expect(error.data?["reason"]?.stringValue?.isEmpty == false)
    }

    @Test func invalidUTF8IsAParseError() {
        let line = RPCLine.decode([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D])
        #expect(line.single?.failure?.error?.code == RPCError.parseErrorCode)
    }

    @Test func duplicateKeysAreAParseError() {
        let line = self.decode(#"{"jsonrpc":"2.0","method":"a","method":"b","id":1}"#)
        #expect(line.single?.failure?.error?.code == RPCError.parseErrorCode)
    }

    @Test(arguments: ["42", "\"pause\"", "null", "true"])
    func aNonObjectIsAnInvalidRequest(text: String) {
        #expect(
            self.decode(text).single
                == .failure(RPCResponse(id: .null, error: .invalidRequest("a request must be a JSON object")))
        )
    }

    @Test(arguments: [
        #"{"method":"a","id":3}"#, #"{"jsonrpc":"1.0","method":"a","id":3}"#, #"{"jsonrpc":2.0,"method":"a","id":3}"#,
        #"{"jsonrpc":null,"method":"a","id":3}"#,
    ])
    func aMissingOrWrongJsonrpcIsAnInvalidRequestKeepingTheId(text: String) {
        #expect(
            self.decode(text).single == .failure(RPCResponse(id: 3, error: .invalidRequest("jsonrpc must be \"2.0\"")))
        )
    }

    @Test(arguments: [
        #"{"jsonrpc":"2.0","id":"q"}"#, #"{"jsonrpc":"2.0","method":5,"id":"q"}"#,
        #"{"jsonrpc":"2.0","method":null,"id":"q"}"#, #"{"jsonrpc":"2.0","method":["a"],"id":"q"}"#,
    ])
    func aMethodThatIsNotAStringIsAnInvalidRequest(text: String) {
        #expect(
            self.decode(text).single
                == .failure(RPCResponse(id: "q", error: .invalidRequest("method must be a string")))
        )
    }

    @Test(arguments: ["\"p\"", "1", "null", "true"])
    func paramsThatAreNotAnObjectOrArrayAreAnInvalidRequest(params: String) {
        let line = self.decode(#"{"jsonrpc":"2.0","method":"a","params":"# + params + #","id":9}"#)
        #expect(
            line.single == .failure(RPCResponse(id: 9, error: .invalidRequest("params must be an object or an array"))))
    }

    @Test(arguments: ["true", "[1]", "{\"n\":1}"])
    func anIdOfTheWrongTypeIsAnInvalidRequestWithANullId(id: String) {
        let line = self.decode(#"{"jsonrpc":"2.0","method":"a","id":"# + id + "}")
        #expect(
            line.single
                == .failure(RPCResponse(id: .null, error: .invalidRequest("id must be a string, a number or null")))
        )
    }

    @Test func anEmptyBatchIsOneInvalidRequest() {
        #expect(self.decode("[]").single == .failure(RPCResponse(id: .null, error: .invalidRequest("an empty batch"))))
    }

    @Test func aBatchOfTheMaximumSizeIsAccepted() throws {
        let request = #"{"jsonrpc":"2.0","method":"ping"}"#
        let text = "[" + Array(repeating: request, count: RPCLine.maximumBatch).joined(separator: ",") + "]"
        let batch = try #require(self.decode(text).batch)
        #expect(batch.count == 1000)
        #expect(batch.allSatisfy { $0 == .success(RPCRequest(id: Optional<JSONValue>.none, method: "ping")) })
    }

    @Test func aBatchOverTheMaximumIsOneInvalidRequest() {
        let request = #"{"jsonrpc":"2.0","method":"ping","id":1}"#
        let text = "[" + Array(repeating: request, count: 1001).joined(separator: ",") + "]"
        #expect(
            self.decode(text).single
                == .failure(RPCResponse(id: .null, error: .invalidRequest("a batch of 1001 exceeds 1000 requests")))
        )
    }

    @Test func aMixedBatchIsJudgedItemByItemInOrder() throws {
        let text = """
            [{"jsonrpc":"2.0","method":"a","id":1},5,{"jsonrpc":"2.0","method":"b"},\
            {"jsonrpc":"1.0","method":"c","id":"x"},{"jsonrpc":"2.0","method":"d","params":3,"id":4},[]]
            """
        let batch = try #require(self.decode(text).batch)
        #expect(
            batch == [
                .success(RPCRequest(id: 1, method: "a")),
                .failure(RPCResponse(id: .null, error: .invalidRequest("a request must be a JSON object"))),
                .success(RPCRequest(id: Optional<JSONValue>.none, method: "b")),
                .failure(RPCResponse(id: "x", error: .invalidRequest("jsonrpc must be \"2.0\""))),
                .failure(RPCResponse(id: 4, error: .invalidRequest("params must be an object or an array"))),
                .failure(RPCResponse(id: .null, error: .invalidRequest("a request must be a JSON object"))),
            ]
        )
    }

    @Test(arguments: [
        RPCRequest(id: 1, method: "show", params: ["what": "pools"]),
        RPCRequest(id: "abc", method: "kill", params: [1, "two"]),
        RPCRequest(id: Optional<JSONValue>.none, method: "reload"),
        RPCRequest(id: .null, method: "ping"),
    ])
    func aRequestSerialisedByPoolctlDecodesToItself(request: RPCRequest) {
        #expect(self.decode(request.json.serialized).single == .success(request))
    }
}

extension Result {
    var failure: Failure? {
        guard case .failure(let failure) = self else { return nil }
        return failure
    }
}
