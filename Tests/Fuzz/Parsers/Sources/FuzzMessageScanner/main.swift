// libFuzzer: a typed message stream cut into reads at arbitrary places, scanned and the captured messages decoded.

import FuzzSupport
import NIOCore
import PGWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    // The first byte chooses the read size, so the same stream is tried cut at many places.
    let chunk = Int(first % 64) + 1
    var scanner = MessageScanner(
        captureTypes: MessageTypeSet([
            FrontendMessageID.parse, FrontendMessageID.bind, FrontendMessageID.describe, FrontendMessageID.close,
            BackendMessageID.errorResponse, BackendMessageID.readyForQuery, BackendMessageID.parameterStatus,
        ]),
        maxCaptureLength: 1 << 16,
        maxMessageLength: 1 << 20
    )
    var offset = 1
    while offset < bytes.count {
        let end = min(bytes.count, offset + chunk)
        let buffer = scanner.join(ByteBuffer(bytes: bytes[offset..<end]))
        offset = end
        var cursor = buffer.readerIndex
        scan: while true {
            switch try? scanner.next(in: buffer, cursor: &cursor) {
            case .message(let type, _, let captured?)?:
                var body = captured.slice(of: buffer)
                switch type {
                case FrontendMessageID.parse: _ = try? ParseMessage.decode(from: &body)
                case FrontendMessageID.bind: _ = try? BindMessage.decode(from: &body)
                case FrontendMessageID.describe, FrontendMessageID.close: _ = try? TargetMessage.decode(from: &body)
                case BackendMessageID.errorResponse:
                    if let error = try? ErrorResponse.decode(from: &body) { _ = error.description }
                    _ = ErrorResponse.renaming("a", to: "b", inBody: captured.slice(of: buffer))
                case BackendMessageID.readyForQuery: _ = try? TransactionStatus.decode(captured, in: buffer)
                case BackendMessageID.parameterStatus: _ = try? ParameterStatus.decode(from: &body)
                default: break
                }
            case .message?:
                continue
            case .end?:
                break scan
            case nil:
                return 0
            }
        }
    }
    return 0
}

/// The entry point SwiftPM names for this executable: libFuzzer's driver with `fuzz`.
@_cdecl("FuzzMessageScanner_main")
func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv) { data, size in fuzz(data, size) }
}
