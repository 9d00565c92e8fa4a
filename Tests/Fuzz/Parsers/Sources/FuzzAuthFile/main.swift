// libFuzzer: the auth file (user names with passwords or SCRAM/md5 secrets), and one secret on its own.

import FuzzSupport
@testable import PoolAgent

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? UserList.parse(text)
    _ = StoredSecret.parse(text)
    return 0
}

/// The entry point SwiftPM names for this executable: libFuzzer's driver with `fuzz`.
@_cdecl("FuzzAuthFile_main")
func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}
