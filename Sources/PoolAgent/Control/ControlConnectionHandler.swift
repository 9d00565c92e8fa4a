// One control-socket connection: splits newline-delimited JSON-RPC, answers each line, bounds line length.

import ControlRPC
import NIOCore

final class ControlConnectionHandler: ChannelInboundHandler, @unchecked Sendable {  // Confined to its channel's event loop.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let maximumLineLength = 1 << 20

    private let service: ControlService
    private var pending: ByteBuffer?

    init(service: ControlService) {
        self.service = service
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = self.unwrapInboundIn(data)
        var buffer: ByteBuffer
        if var held = self.pending {
            held.writeBuffer(&input)
            buffer = held
        } else {
            buffer = input
        }
        self.pending = nil
        var output = context.channel.allocator.buffer(capacity: 256)
        while let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - buffer.readerIndex
            let line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            guard length <= Self.maximumLineLength else {
                self.refuseOversizedLine(context: context, output: &output)
                return
            }
            var bytes = line.readableBytesView[...]
            if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            if let response = self.service.handle(line: bytes) {
                output.writeString(response)
                output.writeInteger(UInt8(ascii: "\n"))
            }
        }
        if output.readableBytes > 0 { context.writeAndFlush(self.wrapOutboundOut(output), promise: nil) }
        if buffer.readableBytes > Self.maximumLineLength {
            self.refuseOversizedLine(context: context, output: &output)
            return
        }
        if buffer.readableBytes > 0 { self.pending = buffer }
    }

    private func refuseOversizedLine(context: ChannelHandlerContext, output: inout ByteBuffer) {
        let response = RPCResponse(id: .null, error: .invalidRequest("line exceeds \(Self.maximumLineLength) bytes; closing the connection"))
        output.writeString(response.json.serialized)
        output.writeInteger(UInt8(ascii: "\n"))
        let channel = context.channel
        context.writeAndFlush(self.wrapOutboundOut(output)).whenComplete { _ in channel.close(promise: nil) }
        self.pending = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
