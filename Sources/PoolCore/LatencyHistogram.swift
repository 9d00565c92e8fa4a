// A latency histogram with logarithmic buckets: fixed memory, percentiles within about 6%, exact max.

/// Records durations in microseconds. Values below 16 µs have a bucket each; above, every power of two is
/// split into 16 buckets, so a percentile is off by at most one bucket width (1/16 of its power of two).
public struct LatencyHistogram: Sendable, Equatable {
    static let subBuckets = 16
    static let powers = 41  // up to 2^41 µs, about 25 days

    private var counts: [UInt64]
    public private(set) var count: UInt64 = 0
    public private(set) var sumMicroseconds: UInt64 = 0
    public private(set) var maxMicroseconds: UInt64 = 0

    public init() {
        self.counts = Array(repeating: 0, count: Self.subBuckets * (Self.powers + 1))
    }

    public mutating func record(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return }
        let microseconds = UInt64(seconds) &* 1_000_000 &+ UInt64(attoseconds / 1_000_000_000_000)
        self.record(microseconds: microseconds)
    }

    public mutating func record(microseconds value: UInt64) {
        self.counts[Self.bucket(of: value)] += 1
        self.count += 1
        self.sumMicroseconds &+= value
        self.maxMicroseconds = max(self.maxMicroseconds, value)
    }

    /// The value below which `fraction` (0…1) of the recorded values fall, in microseconds; 0 when empty.
    public func percentile(_ fraction: Double) -> UInt64 {
        guard self.count > 0 else { return 0 }
        let rank = max(1, UInt64((Double(self.count) * min(max(fraction, 0), 1)).rounded(.up)))
        var seen: UInt64 = 0
        for (index, bucketCount) in self.counts.enumerated() where bucketCount > 0 {
            seen += bucketCount
            if seen >= rank { return min(Self.upperBound(of: index), self.maxMicroseconds) }
        }
        return self.maxMicroseconds
    }

    public mutating func merge(_ other: LatencyHistogram) {
        for index in self.counts.indices { self.counts[index] += other.counts[index] }
        self.count += other.count
        self.sumMicroseconds &+= other.sumMicroseconds
        self.maxMicroseconds = max(self.maxMicroseconds, other.maxMicroseconds)
    }

    static func bucket(of value: UInt64) -> Int {
        if value < UInt64(Self.subBuckets) { return Int(value) }
        let power = min(63 - value.leadingZeroBitCount, Self.powers + 3)
        // The 4 bits below the leading one choose the sub-bucket.
        let sub = Int((value >> UInt64(power - 4)) & 0xF)
        return min((power - 3) * Self.subBuckets + sub, Self.subBuckets * (Self.powers + 1) - 1)
    }

    /// The largest value that falls in bucket `index`.
    static func upperBound(of index: Int) -> UInt64 {
        if index < Self.subBuckets { return UInt64(index) }
        let power = index / Self.subBuckets + 3
        let sub = UInt64(index % Self.subBuckets)
        let base = UInt64(1) << UInt64(power)
        let width = base >> 4
        return base + (sub + 1) * width - 1
    }
}
