// libFuzzer: the first bytes of a client connection (startup packets, SSL/GSS/cancel requests).

import FuzzSupport
import NIOCore
import PGWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    while buffer.readableBytes > 0 {
        guard let packet = try? StartupPacket.decode(from: &buffer) else { break }
        if case .startup(let message) = packet {
            _ = message.user
            _ = message.database
        }
    }
    return 0
}

/// The entry point SwiftPM names for this executable: libFuzzer's driver with `fuzz`.
@_cdecl("FuzzStartupPacket_main")
func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}
