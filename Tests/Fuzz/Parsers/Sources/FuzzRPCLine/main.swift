// libFuzzer: one line on the control socket, as JSON and as a JSON-RPC request or batch.

import FuzzSupport
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

/// The entry point SwiftPM names for this executable: libFuzzer's driver with `fuzz`.
@_cdecl("FuzzRPCLine_main")
func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}
