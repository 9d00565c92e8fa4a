// Tables and key: value lines for people; --json prints the raw results instead.

import ControlRPC

enum Render {
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    static func text(_ value: JSONValue?) -> String {
        switch value {
        case nil, .null?: "-"
        case .string(let text)?: text
        case .integer(let number)?: String(number)
        case .number(let number)?: number.rounded() == number && abs(number) < 1e12 ? String(Int(number)) : String(format1: number)
        case .bool(let flag)?: flag ? "yes" : "no"
        case let other?: other.serialized
        }
    }

    static func number(_ value: JSONValue?) -> Double? {
        switch value {
        case .integer(let number)?: Double(number)
        case .number(let number)?: number
        default: nil
        }
    }

    static func path(_ value: JSONValue, _ keys: String...) -> JSONValue? {
        var current: JSONValue? = value
        for key in keys { current = current?[key] }
        return current
    }

    static func stats(_ result: JSONValue) -> String {
        let rows = (result["pools"]?.arrayValue ?? []).map { pool -> [String] in
            [
                text(pool["name"]), text(pool["mode"]), text(pool["size"]), text(path(pool, "servers", "open")),
                text(path(pool, "servers", "idle")), text(path(pool, "servers", "active")), text(path(pool, "servers", "opening")),
                text(path(pool, "clients", "active")), text(path(pool, "clients", "waiting")),
                text(path(pool, "counters", "server_connects")), text(path(pool, "counters", "server_connect_failures")),
                pool["draining"]?.boolValue == true ? "draining" : (pool["last_error"].map { $0 == .null ? "" : "error" } ?? ""),
            ]
        }
        return table(["pool", "mode", "size", "open", "idle", "active", "opening", "clients", "waiting", "connects", "failures", "note"], rows)
    }

    static func health(_ result: JSONValue) -> String {
        let rows = (result["pools"]?.arrayValue ?? []).map { pool in
            [text(pool["pool"]), text(pool["status"]), text(pool["open_servers"]), text(pool["last_error"])]
        }
        return "status: \(text(result["status"]))\n" + table(["pool", "status", "servers", "last error"], rows)
    }

    static func clients(_ result: JSONValue) -> String {
        let rows = (result["clients"]?.arrayValue ?? []).map { client in
            [text(client["id"]), text(client["pool"]), text(client["user"]), text(client["state"]), text(client["backend_pid"]), text(client["age_s"]), text(client["peer"])]
        }
        return table(["id", "pool", "user", "state", "backend", "age s", "peer"], rows)
    }

    static func servers(_ result: JSONValue) -> String {
        let rows = (result["servers"]?.arrayValue ?? []).map { server in
            [text(server["id"]), text(server["pool"]), text(server["state"]), text(server["backend_pid"]), text(server["client"]), text(server["age_s"]), text(server["transaction"])]
        }
        return table(["id", "pool", "state", "backend", "client", "age s", "transaction"], rows)
    }

    /// Flattens an object into `a.b: value` lines.
    static func keyValues(_ result: JSONValue) -> String {
        var lines: [String] = []
        func walk(_ value: JSONValue, _ prefix: String) {
            switch value {
            case .object(let members) where !members.isEmpty:
                for (key, member) in members { walk(member, prefix.isEmpty ? key : "\(prefix).\(key)") }
            case .array(let items) where items.contains(where: { $0.objectValue != nil }):
                for (index, item) in items.enumerated() { walk(item, "\(prefix)[\(index)]") }
            default:
                lines.append("\(prefix): \(text(value))")
            }
        }
        walk(result, "")
        return lines.joined(separator: "\n")
    }
}

extension String {
    init(format1 number: Double) {
        let scaled = (number * 10).rounded() / 10
        self = String(scaled)
    }

    func replacingNewlines() -> String {
        self.split(separator: "\n").joined(separator: "  ")
    }
}
