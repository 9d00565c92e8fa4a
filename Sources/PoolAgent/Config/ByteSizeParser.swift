// Byte sizes in the configuration, with PostgreSQL's units: "512kB", "64MB", "1GB", or a bare number of bytes.

enum ByteSizeParser {
    static func parse(_ text: String) -> Int? {
        let trimmed = text.trimmingWhitespace()
        let digits = trimmed.prefix { $0.isNumber }
        let unit = trimmed.dropFirst(digits.count).trimmingWhitespace()
        guard !digits.isEmpty, let number = Int(digits) else { return nil }
        let scale: Int
        switch unit {
        case "", "B": scale = 1
        case "kB": scale = 1 << 10
        case "MB": scale = 1 << 20
        case "GB": scale = 1 << 30
        default: return nil
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: scale)
        return overflow ? nil : bytes
    }

    /// The shortest config-style text for `bytes` ("64MB", "1536kB").
    static func text(_ bytes: Int) -> String {
        for (unit, scale) in [("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)] where bytes >= scale && bytes % scale == 0 {
            return "\(bytes / scale)\(unit)"
        }
        return "\(bytes)B"
    }
}
