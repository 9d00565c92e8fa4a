// RPCResponse and RPCError: what the agent writes back and what poolctl reads.

import ControlRPC
import Testing

@Suite struct RPCResponseTests {
    func readBack(_ response: RPCResponse) throws -> RPCResponse {
        try RPCResponse.decode(try JSONValue.parse(response.json.serialized))
    }

    @Test func aResultIsWrittenWithVersionResultAndId() {
        let response = RPCResponse(id: 1, result: ["ok": true])
        #expect(response.json.serialized == #"{"jsonrpc":"2.0","result":{"ok":true},"id":1}"#)
    }

    @Test func anErrorIsWrittenWithCodeMessageAndData() {
        let response = RPCResponse(id: "q", error: .methodNotFound("frobnicate"))
        #expect(
            response.json.serialized
                == #"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found","#
                + #""data":{"method":"frobnicate"}},"id":"q"}"#
        )
    }

    @Test func anErrorWithoutDataOmitsIt() {
        let response = RPCResponse(id: .null, error: RPCError(code: 7, message: "custom"))
        #expect(response.json.serialized == #"{"jsonrpc":"2.0","error":{"code":7,"message":"custom"},"id":null}"#)
    }

    @Test(arguments: [
        RPCResponse(id: 1, result: ["pools": [["name": "main", "size": 20, "waiting": 0]]]),
        RPCResponse(id: "abc", result: .null),
        RPCResponse(id: .null, result: "ünïcode 🐘"),
        RPCResponse(id: 2, error: .invalidParams("pool \"x\" does not exist")),
        RPCResponse(id: .null, error: .parseError("unexpected end of input")),
        RPCResponse(id: 3, error: .invalidRequest("an empty batch")),
        RPCResponse(id: 4, error: RPCError(code: -32000, message: "pool paused")),
        RPCResponse(id: 5, error: RPCError(code: 1, message: "m", data: [1, 2, 3])),
    ])
    func roundTrips(response: RPCResponse) throws {
        #expect(try self.readBack(response) == response)
    }

    @Test func aResponseWithoutJsonrpcIsRefused() {
        #expect(throws: RPCError.invalidRequest("response lacks jsonrpc \"2.0\"")) {
            try RPCResponse.decode(["result": 1, "id": 1])
        }
        #expect(throws: RPCError.invalidRequest("response lacks jsonrpc \"2.0\"")) {
            try RPCResponse.decode([1, 2])
        }
    }

    @Test(arguments: [
        ["jsonrpc": "2.0", "id": 1] as JSONValue,
        ["jsonrpc": "2.0", "error": ["message": "no code"], "id": 1],
        ["jsonrpc": "2.0", "error": ["code": "x", "message": "m"], "id": 1],
        ["jsonrpc": "2.0", "error": ["code": 1], "id": 1],
        ["jsonrpc": "2.0", "error": "bad", "id": 1],
    ])
    func aResponseWithoutResultOrAValidErrorIsRefused(value: JSONValue) {
        #expect(throws: RPCError.invalidRequest("response has neither result nor a valid error")) {
            try RPCResponse.decode(value)
        }
    }

    @Test func aResponseWithoutAnIdReadsAsNullId() throws {
        #expect(try RPCResponse.decode(["jsonrpc": "2.0", "result": 1]) == RPCResponse(id: .null, result: 1))
    }

    @Test func errorCodesAreTheJSONRPCOnes() {
        #expect(RPCError.parseError("x").code == -32700)
        #expect(RPCError.invalidRequest("x").code == -32600)
        #expect(RPCError.methodNotFound("x").code == -32601)
        #expect(RPCError.invalidParams("x").code == -32602)
        #expect(RPCError.internalErrorCode == -32603)
    }

    @Test func errorDescriptionsIncludeTheReason() {
        #expect(RPCError.invalidRequest("an empty batch").description == "Invalid Request (-32600): an empty batch")
        #expect(RPCError.methodNotFound("x").description == "Method not found (-32601)")
        #expect(RPCError(code: -32000, message: "pool paused").description == "pool paused (-32000)")
    }
}
