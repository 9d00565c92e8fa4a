// Who is on the other end of a Unix socket: SO_PEERCRED and the password database.

import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// SO_PEERCRED of a Unix-socket channel; a failed future when the channel cannot tell.
func peerCredentials(of channel: any Channel) -> EventLoopFuture<PeerCredentials> {
    guard let provider = channel as? any SocketOptionProvider else {
        return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
    }
    return provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
}

/// The login name of `uid` from the password database, for peer authentication.
func systemUserName(uid: UInt32) -> String? {
    var entry = passwd()
    var result: UnsafeMutablePointer<passwd>? = nil
    var storage = [CChar](repeating: 0, count: 16384)
    let status = getpwuid_r(uid_t(uid), &entry, &storage, storage.count, &result)
    guard status == 0, result != nil, let name = entry.pw_name else { return nil }
    return String(cString: name)
}

/// Linux's `struct ucred` (pid, uid, gid), which the C module does not export without _GNU_SOURCE.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}
