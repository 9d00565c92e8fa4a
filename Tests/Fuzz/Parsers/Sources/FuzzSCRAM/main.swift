// libFuzzer: the SASL messages of a client's SCRAM-SHA-256 login, first and final.

import FuzzSupport
import NIOCore
import PGWire
@testable import PoolAgent

private let secret = ScramSecret(iterations: 4096, salt: Array(repeating: 7, count: 16), storedKey: Array(repeating: 1, count: 32), serverKey: Array(repeating: 2, count: 32))
private let clientFirst = Array("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL".utf8)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    let message = Array(bytes.dropFirst())
    switch first % 3 {
    case 0:
        var body = ByteBuffer(bytes: message)
        _ = try? SASLInitialResponse.decode(from: &body)
    case 1:
        var exchange = ScramExchange(secret: secret, serverNonce: "3rfcNHYJY1ZVvWVs7j", channelBinding: first & 4 == 0 ? nil : [1, 2, 3])
        _ = try? exchange.receiveClientFirst(message, mechanism: first & 8 == 0 ? ScramExchange.mechanism : ScramExchange.mechanismPlus)
    default:
        var exchange = ScramExchange(secret: secret, serverNonce: "3rfcNHYJY1ZVvWVs7j")
        _ = try? exchange.receiveClientFirst(clientFirst)
        _ = try? exchange.receiveClientFinal(message)
    }
    return 0
}

/// The entry point SwiftPM names for this executable: libFuzzer's driver with `fuzz`.
@_cdecl("FuzzSCRAM_main")
func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}
