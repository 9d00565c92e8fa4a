// The transaction status byte carried by ReadyForQuery.

public enum TransactionStatus: UInt8, Sendable, CustomStringConvertible {
    case idle = 0x49  // 'I'
    case inTransaction = 0x54  // 'T'
    case failedTransaction = 0x45  // 'E'

    public var description: String {
        switch self {
        case .idle: "idle"
        case .inTransaction: "in transaction"
        case .failedTransaction: "in failed transaction"
        }
    }
}
