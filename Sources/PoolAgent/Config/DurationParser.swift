// Durations in the configuration: "250ms", "30s", "5m", "1h", "1d", or a bare number of seconds.

enum DurationParser {
    static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingWhitespace()
        let digits = trimmed.prefix { $0.isNumber || $0 == "." }
        let unit = trimmed.dropFirst(digits.count).trimmingWhitespace().lowercased()
        guard !digits.isEmpty, let number = Double(digits), number.isFinite, number >= 0 else { return nil }
        let seconds: Double
        switch unit {
        case "ms": seconds = number / 1000
        case "", "s", "sec": seconds = number
        case "m", "min": seconds = number * 60
        case "h": seconds = number * 3600
        case "d": seconds = number * 86400
        default: return nil
        }
        guard seconds < 100 * 365 * 86400 else { return nil }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        String(self.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}

extension Duration {
    /// Seconds as a floating-point number, for display and for libpq's whole-second timeouts.
    var seconds: Double {
        let (whole, attoseconds) = self.components
        return Double(whole) + Double(attoseconds) / 1e18
    }

    /// The shortest config-style text for this duration ("30s", "1500ms").
    var configText: String {
        let milliseconds = Int64((self.seconds * 1000).rounded())
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
    }
}
