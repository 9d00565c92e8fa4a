// libFuzzer: the admin console's commands (from any client allowed on it), and PgBouncer's connection strings and
// ini lines as import-pgbouncer reads them.

import FuzzSupport
@testable import PoolAgent

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let command = AdminCommand(parsing: text) { _ = command.tag }
    let here = IniLocation(file: "fuzz", line: 1)
    _ = try? PgBouncerIni.connectionString(text, location: here)
    _ = try? PgBouncerIni.keyValue(Substring(text), location: here)
    return 0
}

/// The entry point SwiftPM names for this executable: libFuzzer's driver with `fuzz`.
@_cdecl("FuzzAdminCommand_main")
func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}
