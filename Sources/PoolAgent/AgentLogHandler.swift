// The agent's log lines: logfmt by default, JSON objects with `log_format = "json"`; one write(2) per line.

import ControlRPC
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Writes each record as one line on stderr: `ts=… level=info msg="…" key=value…` (logfmt), or the same fields
/// as a JSON object. Metadata keys are sorted; a line is written with a single write(2), so lines from
/// threads never interleave.
public struct AgentLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable {
        case logfmt, json
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata {
        get {
            var all = self.other
            if let client = self.client { all[LogKey.client] = .string(client) }
            if let pool = self.pool { all[LogKey.pool] = .string(pool) }
            return all
        }
        set {
            self.client = nil
            self.pool = nil
            self.other = [:]
            for (key, value) in newValue { self[metadataKey: key] = value }
        }
    }
    public var metadataProvider: Logger.MetadataProvider?
    let format: Format
    /// Every client's logger carries its id and pool: kept as plain strings, not in a dictionary of its own,
    /// so an idle client costs no metadata storage.
    private var client: String?
    private var pool: String?
    private var other: Logger.Metadata = [:]

    public init(format: Format, level: Logger.Level) {
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get {
            switch key {
            case LogKey.client: self.client.map { .string($0) } ?? self.other[key]
            case LogKey.pool: self.pool.map { .string($0) } ?? self.other[key]
            default: self.other[key]
            }
        }
        set {
            switch (key, newValue) {
            case (LogKey.client, .string(let text)?): self.client = text
            case (LogKey.client, nil): self.client = nil
            case (LogKey.pool, .string(let text)?): self.pool = text
            case (LogKey.pool, nil): self.pool = nil
            default:
                // Any other value of a dedicated key lives in the dictionary instead.
                if key == LogKey.client { self.client = nil } else if key == LogKey.pool { self.pool = nil }
                self.other[key] = newValue
            }
        }
    }

    public func log(event: LogEvent) {
        var merged = self.metadata
        if let provided = self.metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let own = event.metadata { merged.merge(own) { _, new in new } }
        let fields = merged.sorted { $0.key < $1.key }.map { ($0.key, Self.text($0.value)) }
        let line = Self.line(format: self.format, time: Self.timestamp(), level: event.level, message: "\(event.message)", fields: fields)
        let bytes = Array(line.utf8)
        _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }

    static func line(format: Format, time: String, level: Logger.Level, message: String, fields: [(String, String)]) -> String {
        switch format {
        case .logfmt:
            var line = "ts=\(time) level=\(level.rawValue) msg=\(Self.logfmtValue(message))"
            for (key, value) in fields { line += " \(Self.logfmtKey(key))=\(Self.logfmtValue(value))" }
            return line + "\n"
        case .json:
            let members: [(String, JSONValue)] = [("ts", .string(time)), ("level", .string(level.rawValue)), ("msg", .string(message))]
                + fields.map { ($0.0, .string($0.1)) }
            return JSONValue.object(members).serialized + "\n"
        }
    }

    static func text(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array(let items): "[" + items.map(Self.text).joined(separator: ",") + "]"
        case .dictionary(let members): "{" + members.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.text($0.value))" }.joined(separator: ",") + "}"
        }
    }

    /// A value as logfmt readers expect: bare when it can be, else in double quotes with `\"`, `\\`, `\n` escaped.
    static func logfmtValue(_ value: String) -> String {
        let bare = !value.isEmpty && value.unicodeScalars.allSatisfy { $0.value > 0x20 && $0 != "=" && $0 != "\"" && $0 != "\\" && $0.value != 0x7F }
        guard !bare else { return value }
        var quoted = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": quoted += "\\\""
            case "\\": quoted += "\\\\"
            case "\n": quoted += "\\n"
            case "\r": quoted += "\\r"
            case "\t": quoted += "\\t"
            default: quoted.unicodeScalars.append(scalar)
            }
        }
        return quoted + "\""
    }

    static func logfmtKey(_ key: String) -> String {
        String(key.unicodeScalars.map { $0.value > 0x20 && $0 != "=" && $0 != "\"" ? Character($0) : "_" })
    }

    /// UTC with milliseconds: 2026-12-07T14:30:21.123Z.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        var text = [CChar](repeating: 0, count: 32)
        let count = strftime(&text, text.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let milliseconds = Int(now.tv_nsec / 1_000_000)
        let fraction = milliseconds < 10 ? "00\(milliseconds)" : milliseconds < 100 ? "0\(milliseconds)" : "\(milliseconds)"
        return String(decoding: text.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self) + ".\(fraction)Z"
    }
}
