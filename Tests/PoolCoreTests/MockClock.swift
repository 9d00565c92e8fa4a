// A hand-driven clock for pool tests: instants are offsets from zero, and time moves only when a test says so.

import PoolCore

/// An instant on the mock clock: how far it lies from the clock's start.
struct MockInstant: InstantProtocol, CustomStringConvertible {
    typealias Duration = Swift.Duration

    var offset: Duration

    init(_ offset: Duration = .zero) {
        self.offset = offset
    }

    func advanced(by duration: Duration) -> MockInstant {
        MockInstant(self.offset + duration)
    }

    func duration(to other: MockInstant) -> Duration {
        other.offset - self.offset
    }

    static func < (lhs: MockInstant, rhs: MockInstant) -> Bool {
        lhs.offset < rhs.offset
    }

    var description: String { "t+\(self.offset)" }
}

/// The current mock instant, which only `advance(by:)` moves.
struct MockClock {
    private(set) var now = MockInstant()

    mutating func advance(by duration: Duration) {
        self.now = self.now.advanced(by: duration)
    }

    /// The instant `duration` from now, for expected deadlines.
    func after(_ duration: Duration) -> MockInstant {
        self.now.advanced(by: duration)
    }
}

/// Connections are numbered and requests named, so expectations read as "connection 1 to request a".
typealias Machine = PoolStateMachine<Int, String, MockInstant>
typealias Action = Machine.Action
