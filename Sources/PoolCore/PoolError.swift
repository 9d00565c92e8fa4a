// Why a pool could not hand a connection to a client.

public enum PoolError: Error, Equatable, Sendable {
    /// The client waited `waitTimeout` without a connection becoming free.
    case waitTimeout(Duration)
    /// Opening a server connection failed; the text is the connector's message.
    case connectFailed(String)
    /// The pool is closing and takes no new clients.
    case shuttingDown
}
