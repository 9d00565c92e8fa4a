// libFuzzer: the session-state lexer on client SQL (simple queries and Parse bodies), and its prefilter against it.

import FuzzSupport
import PGWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let effects = SessionEffects.scan(bytes)
    // The prefilter only ever skips the lexer where the lexer would have found nothing.
    precondition(effects == SessionEffects.lex(bytes), "the prefilter changed what the lexer finds")
    for change in effects.listens {
        switch change {
        case .listen(let channel), .unlisten(let channel):
            // A channel is an identifier PostgreSQL would accept: never longer than NAMEDATALEN - 1 bytes.
            precondition(channel.utf8.count <= 63, "channel \(channel) is longer than 63 bytes")
        case .unlistenAll:
            break
        }
    }
    _ = SessionEffects.scan(parseBody: bytes)
    return 0
}

/// The entry point SwiftPM names for this executable: libFuzzer's driver with `fuzz`.
@_cdecl("FuzzSessionEffects_main")
func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}
