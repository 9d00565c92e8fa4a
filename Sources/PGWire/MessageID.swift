// The one-byte type codes of the PostgreSQL v3 messages that the agent reads or writes.

/// Type bytes of messages a server (or the agent acting as one) sends.
public enum BackendMessageID {
    public static let authentication: UInt8 = 0x52  // 'R'
    public static let backendKeyData: UInt8 = 0x4B  // 'K'
    public static let commandComplete: UInt8 = 0x43  // 'C'
    public static let copyInResponse: UInt8 = 0x47  // 'G'
    public static let copyOutResponse: UInt8 = 0x48  // 'H'
    public static let copyBothResponse: UInt8 = 0x57  // 'W'
    public static let copyData: UInt8 = 0x64  // 'd'
    public static let copyDone: UInt8 = 0x63  // 'c'
    public static let dataRow: UInt8 = 0x44  // 'D'
    public static let emptyQueryResponse: UInt8 = 0x49  // 'I'
    public static let errorResponse: UInt8 = 0x45  // 'E'
    public static let functionCallResponse: UInt8 = 0x56  // 'V'
    public static let negotiateProtocolVersion: UInt8 = 0x76  // 'v'
    public static let noticeResponse: UInt8 = 0x4E  // 'N'
    public static let notificationResponse: UInt8 = 0x41  // 'A'
    public static let parameterStatus: UInt8 = 0x53  // 'S'
    public static let readyForQuery: UInt8 = 0x5A  // 'Z'
}

/// Type bytes of messages a client sends after the startup packet.
public enum FrontendMessageID {
    public static let bind: UInt8 = 0x42  // 'B'
    public static let close: UInt8 = 0x43  // 'C'
    public static let copyData: UInt8 = 0x64  // 'd'
    public static let copyDone: UInt8 = 0x63  // 'c'
    public static let copyFail: UInt8 = 0x66  // 'f'
    public static let describe: UInt8 = 0x44  // 'D'
    public static let execute: UInt8 = 0x45  // 'E'
    public static let flush: UInt8 = 0x48  // 'H'
    public static let functionCall: UInt8 = 0x46  // 'F'
    public static let parse: UInt8 = 0x50  // 'P'
    public static let passwordMessage: UInt8 = 0x70  // 'p'
    public static let query: UInt8 = 0x51  // 'Q'
    public static let sync: UInt8 = 0x53  // 'S'
    public static let terminate: UInt8 = 0x58  // 'X'
}

/// A set of message type bytes, stored as a 256-bit mask so membership costs two instructions.
public struct MessageTypeSet: Sendable, Equatable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}

    public init(_ types: [UInt8]) {
        for type in types { self.insert(type) }
    }

    public mutating func insert(_ type: UInt8) {
        let bit = UInt64(1) << UInt64(type & 63)
        switch type >> 6 {
        case 0: self.words.0 |= bit
        case 1: self.words.1 |= bit
        case 2: self.words.2 |= bit
        default: self.words.3 |= bit
        }
    }

    @inline(__always)
    public func contains(_ type: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(type & 63)
        switch type >> 6 {
        case 0: return self.words.0 & bit != 0
        case 1: return self.words.1 & bit != 0
        case 2: return self.words.2 & bit != 0
        default: return self.words.3 & bit != 0
        }
    }

    public static func == (lhs: MessageTypeSet, rhs: MessageTypeSet) -> Bool {
        lhs.words == rhs.words
    }
}
