// The agent's own numbers for clients and servers, as keys that hash cheaply.

/// A client or server number assigned by the agent, used as a dictionary and set key on the hot path.
///
/// `Int` keys hash with SipHash, which resists keys chosen by an attacker; these numbers are sequential and
/// never come from a peer, so a multiply spreads them well enough, at a fraction of the cost (the pool
/// looks them up several times per transaction).
@frozen
public struct SerialID: Hashable, Sendable, CustomStringConvertible {
    public var value: Int

    @inlinable
    public init(_ value: Int) {
        self.value = value
    }

    public var description: String { String(self.value) }

    @inlinable
    public static func == (lhs: SerialID, rhs: SerialID) -> Bool {
        lhs.value == rhs.value
    }

    @inlinable
    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.value)
    }

    // Dictionary and Set ask for this first; the default would run the full Hasher.
    @inlinable
    public func _rawHashValue(seed: Int) -> Int {
        (self.value ^ seed) &* -7_046_029_254_386_353_131  // 0x9E3779B97F4A7C15, the golden-ratio multiplier
    }
}
