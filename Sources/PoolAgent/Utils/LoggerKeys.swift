// Logger metadata keys used across the agent, named once so logs stay greppable.

enum LogKey {
    static let pool = "pool"
    static let client = "client"
    static let server = "server"
    static let backendPID = "backend_pid"
    static let peer = "peer"
    static let reason = "reason"
    static let error = "error"
}
