// One control-socket connection: peer check, newline-delimited JSON-RPC, bounded lines, replies in any order.

import ControlRPC
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

final class ControlConnectionHandler: ChannelInboundHandler, ControlPeer, @unchecked Sendable {  // Confined to its channel's event loop.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let maximumLineLength = 1 << 20
    /// Bytes of replies and events queued for a reader that does not read; past this it is disconnected.
    static let maximumBacklog = 4 << 20

    private let service: ControlService
    private let allowedUIDs: Set<Int>
    private var pending: ByteBuffer?
    /// Set once the connection is up; events from the data loop are sent on it.
    private var channel: (any Channel)?
    private var authorised = false
    private var queuedBytes = 0

    init(service: ControlService, allowedUIDs: [Int]) {
        self.service = service
        self.allowedUIDs = Set(allowedUIDs)
    }

    func channelActive(context: ChannelHandlerContext) {
        self.channel = context.channel
        let channel = context.channel
        // SO_PEERCRED tells who is on the other end of a Unix socket; only allowed uids may steer the agent.
        peerCredentials(of: channel)
            .whenComplete { [self] result in
                switch result {
                case .success(let credentials) where self.allowedUIDs.contains(Int(credentials.uid)):
                    self.authorised = true
                    channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                case .success(let credentials):
                    self.refuse(channel, reason: "uid \(credentials.uid) is not allowed on the control socket")
                case .failure(let error):
                    self.refuse(channel, reason: "cannot read the peer's credentials: \(error)")
                }
            }
        context.fireChannelActive()
    }

    private func refuse(_ channel: any Channel, reason: String) {
        let response = RPCResponse(id: .null, error: RPCError(
            code: ControlError.permissionDenied, message: "Permission denied", data: ["reason": .string(reason)]
        ))
        var buffer = channel.allocator.buffer(capacity: 128)
        buffer.writeString(response.json.serialized + "\n")
        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.authorised else { return }
        var input = self.unwrapInboundIn(data)
        var buffer: ByteBuffer
        if var held = self.pending {
            held.writeBuffer(&input)
            buffer = held
        } else {
            buffer = input
        }
        self.pending = nil
        while let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - buffer.readerIndex
            let line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            guard length <= Self.maximumLineLength else {
                self.refuseOversizedLine(context.channel)
                return
            }
            var bytes = line.readableBytesView[...]
            if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            let channel = context.channel
            let service = self.service
            let request = Array(bytes)
            // The agent's state lives on its data loop; the answer comes back to this channel's loop.
            service.eventLoop.flatSubmit { service.handle(line: request, from: self) }
                .hop(to: channel.eventLoop)
                .whenSuccess { [self] response in
                    if let response { self.send(response, on: channel) }
                }
        }
        if buffer.readableBytes > Self.maximumLineLength {
            self.refuseOversizedLine(context.channel)
            return
        }
        if buffer.readableBytes > 0 { self.pending = buffer }
    }

    /// A reader that keeps sending without reading: stop reading from it until it catches up.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.queuedBytes = 0
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Called on the data loop by the control service; the line is sent from this channel's loop.
    func sendEvent(_ line: String) {
        guard let channel = self.channel else { return }
        channel.eventLoop.execute { self.send(line, on: channel) }
    }

    private func send(_ line: String, on channel: any Channel) {
        guard channel.isActive else { return }
        var buffer = channel.allocator.buffer(capacity: line.utf8.count + 1)
        buffer.writeString(line)
        buffer.writeInteger(UInt8(ascii: "\n"))
        if !channel.isWritable {
            self.queuedBytes += buffer.readableBytes
            channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            if self.queuedBytes > Self.maximumBacklog {
                channel.close(promise: nil)
                return
            }
        }
        channel.writeAndFlush(buffer, promise: nil)
    }

    private func refuseOversizedLine(_ channel: any Channel) {
        let response = RPCResponse(id: .null, error: .invalidRequest("line exceeds \(Self.maximumLineLength) bytes; closing the connection"))
        var output = channel.allocator.buffer(capacity: 128)
        output.writeString(response.json.serialized + "\n")
        channel.writeAndFlush(output).whenComplete { _ in channel.close(promise: nil) }
        self.pending = nil
        self.authorised = false
    }

    func channelInactive(context: ChannelHandlerContext) {
        let service = self.service
        service.eventLoop.execute { service.peerGone(self) }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
