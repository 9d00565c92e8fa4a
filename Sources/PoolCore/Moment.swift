// A point in time on the monotonic clock, as a plain value the agent's hot path can copy for free.

#if canImport(Glibc)
import Glibc
#endif

/// Nanoseconds on CLOCK_MONOTONIC.
///
/// `ContinuousClock.Instant` would do, but its layout is hidden outside the standard library: every copy,
/// optional and comparison of it goes through runtime calls. The agent stamps several of these per
/// transaction (waits, queries, transactions, idle times), so it uses this instead.
@frozen
public struct Moment: InstantProtocol, Sendable {
    public var nanoseconds: Int64

    @inlinable
    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    /// Now, read from the clock.
    public static var now: Moment {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Moment(nanoseconds: Int64(spec.tv_sec) &* 1_000_000_000 &+ Int64(spec.tv_nsec))
    }

    @inlinable
    public func advanced(by duration: Duration) -> Moment {
        let (seconds, attoseconds) = duration.components
        return Moment(nanoseconds: self.nanoseconds &+ seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000)
    }

    @inlinable
    public func duration(to other: Moment) -> Duration {
        .nanoseconds(other.nanoseconds &- self.nanoseconds)
    }

    /// Whole microseconds from this moment to `other`; zero when `other` is earlier.
    @inlinable
    public func microseconds(to other: Moment) -> UInt64 {
        UInt64(max(0, other.nanoseconds &- self.nanoseconds) / 1_000)
    }

    @inlinable
    public static func - (lhs: Moment, rhs: Moment) -> Duration {
        rhs.duration(to: lhs)
    }

    @inlinable
    public static func + (lhs: Moment, rhs: Duration) -> Moment {
        lhs.advanced(by: rhs)
    }

    @inlinable
    public static func < (lhs: Moment, rhs: Moment) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }
}
