// libFuzzer: one line on the control socket, as JSON and as a JSON-RPC request or batch.

import ControlRPC

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let line = UnsafeBufferPointer(start: data, count: size)
    _ = RPCLine.decode(line)
    if let value = try? JSONValue.parse(line) {
        _ = RPCRequest.decode(value)
        _ = try? RPCResponse.decode(value)
    }
    return 0
}
