// What the runtime reports on its own: upstream changes, autoscaling decisions, reloads; JSON is the control plane's.

import PGWire
import PoolCore

/// Something subscribers of the control socket hear about that the runtime itself decided or saw.
enum AgentEvent: Equatable {
    /// A pool's upstream went down (with libpq's message) or came back.
    case upstream(pool: String, up: Bool, error: String?)
    /// A load window ended with this decision; `applied` when the size changed (not pinned, not draining).
    case autoscale(pool: String, decision: Autoscaler.Decision, applied: Bool, pinned: Bool)
    case reload(ReloadOutcome)
    /// A transaction-mode client's pins changed: those it has now, and what came and went.
    case pin(pool: String, client: Int, pins: SessionEffects.Pins, added: SessionEffects.Pins, removed: SessionEffects.Pins)
    /// A pool's listener connection was lost (with why) or came back.
    case listener(pool: String, up: Bool, error: String?)
}

/// What a reload changed.
struct ReloadOutcome: Equatable, CustomStringConvertible {
    var file: String
    var changed: [String] = []
    var added: [String] = []
    var removed: [String] = []
    /// Keys whose new values take effect only after a restart.
    var requiresRestart: [String] = []

    var description: String {
        "\(self.file): changed \(self.changed), added \(self.added), removed \(self.removed), requires restart \(self.requiresRestart)"
    }
}

/// Why a reload changed nothing.
enum ReloadError: Error, Equatable, CustomStringConvertible {
    case shuttingDown
    case invalidConfiguration(file: String, errors: [String])

    var description: String {
        switch self {
        case .shuttingDown: "the agent is shutting down"
        case .invalidConfiguration(let file, let errors): "\(file): \(errors.joined(separator: "; "))"
        }
    }
}
