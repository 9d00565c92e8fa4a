// `poolctl top`: one live table of every pool across the agents addressed, with per-agent rows under each total.

import ArgumentParser
import ControlRPC

#if canImport(Glibc)
import Glibc
#endif

extension PoolCtl {
    struct Top: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A live table of the pools across the agents: totals and a row per agent.",
            discussion: """
                Per pool: clients (active and waiting), waiting clients, open servers, transactions per second \
                since the last refresh, and the p99 wait for a server since the agent started (the totals' p99 \
                is the worst agent's). On a terminal the table is redrawn in place; otherwise (or with --json, \
                as NDJSON: a line per pool and agent and one per pool total, each with "time") every refresh is \
                written and flushed as it comes.

                Example:
                  poolctl --fleet fleet.toml top --interval 2
                  poolctl --socket '/run/poolagent/*.sock' top --json --count 10 > samples.ndjson
                """
        )
        @ParentCommand var root: PoolCtl
        @Option(help: "Seconds between refreshes.") var interval: Double = 2
        @Option(help: "Stop after this many refreshes (0: never).") var count: Int = 0

        func validate() throws {
            guard self.interval > 0 else { throw ValidationError("--interval must be positive") }
        }

        struct Row {
            var clients = 0
            var waiting = 0
            var servers = 0
            var tps: Double?
            var p99Wait = 0.0
        }

        func run() throws {
            let options = self.root.connection
            let targets = options.targets
            let live = !options.json && isatty(1) == 1
            var previous: [String: (transactions: Int64, at: Double)] = [:]
            var shown = 0
            var lastUnreachable = false
            while self.count == 0 || shown < self.count {
                let now = monotonicSeconds()
                let answers = ControlClient.callAll(targets.map(\.address), method: "stats", params: nil, timeout: options.timeout)
                var pools: [String: [(agent: String, row: Row)]] = [:]
                var unreachable: [String] = []
                for (target, answer) in zip(targets, answers) {
                    guard case .success(let response) = answer.outcome, case .success(let result) = response.outcome else {
                        unreachable.append(target.name)
                        continue
                    }
                    for pool in result["pools"]?.arrayValue ?? [] {
                        let name = pool["name"]?.stringValue ?? "?"
                        var row = Row()
                        let active = Int(pool["clients"]?["active"]?.integerValue ?? 0)
                        row.waiting = Int(pool["clients"]?["waiting"]?.integerValue ?? 0)
                        row.clients = active + row.waiting
                        row.servers = Int(pool["servers"]?["open"]?.integerValue ?? 0)
                        row.p99Wait = Render.number(pool["latency_ms"]?["wait"]?["p99"]) ?? 0
                        let transactions = pool["counters"]?["transactions"]?.integerValue ?? 0
                        let key = target.name + "\u{0}" + name
                        if let before = previous[key], now > before.at {
                            row.tps = Double(max(0, transactions - before.transactions)) / (now - before.at)
                        }
                        previous[key] = (transactions, now)
                        pools[name, default: []].append((target.name, row))
                    }
                }
                self.show(pools, unreachable: unreachable, live: live, json: options.json)
                lastUnreachable = !unreachable.isEmpty
                shown += 1
                if self.count == 0 || shown < self.count { sleepSeconds(self.interval) }
            }
            // As every subcommand: 3 when an agent could not be reached (at the last refresh).
            if lastUnreachable { throw ExitCode(3) }
        }

        func show(_ pools: [String: [(agent: String, row: Row)]], unreachable: [String], live: Bool, json: Bool) {
            let time = JSONValue(Double(Glibc.time(nil)))
            func fields(_ row: Row) -> [(String, JSONValue)] {
                [("clients", JSONValue(row.clients)), ("waiting", JSONValue(row.waiting)), ("servers", JSONValue(row.servers)),
                 ("tps", row.tps.map { JSONValue(($0 * 10).rounded() / 10) } ?? .null), ("p99_wait_ms", JSONValue(row.p99Wait))]
            }
            var lines: [String] = []
            var table: [[String]] = []
            for name in pools.keys.sorted() {
                let rows = pools[name]!
                var total = Row()
                for (_, row) in rows {
                    total.clients += row.clients
                    total.waiting += row.waiting
                    total.servers += row.servers
                    if let tps = row.tps { total.tps = (total.tps ?? 0) + tps }
                    total.p99Wait = max(total.p99Wait, row.p99Wait)
                }
                if json {
                    lines.append(JSONValue.object([("time", time), ("pool", .string(name)), ("agents", JSONValue(rows.count))] + fields(total)).serialized)
                    for (agent, row) in rows {
                        lines.append(JSONValue.object([("time", time), ("pool", .string(name)), ("agent", .string(agent))] + fields(row)).serialized)
                    }
                } else {
                    func cells(_ label: String, _ row: Row) -> [String] {
                        [label, String(row.clients), String(row.waiting), String(row.servers),
                         row.tps.map { String(Int($0.rounded())) } ?? "-", Render.text(JSONValue(row.p99Wait))]
                    }
                    table.append(cells("\(name) (\(rows.count) agent\(rows.count == 1 ? "" : "s"))", total))
                    for (agent, row) in rows { table.append(cells("  \(agent)", row)) }
                }
            }
            if json {
                for agent in unreachable { lines.append((["time": time, "agent": .string(agent), "unreachable": true] as JSONValue).serialized) }
            } else {
                lines.append(Render.table(["POOL / AGENT", "CLIENTS", "WAITING", "SERVERS", "TPS", "P99 WAIT MS"], table))
                if !unreachable.isEmpty { lines.append("unreachable: \(unreachable.joined(separator: ", "))") }
                lines.append("")
            }
            if live { print("\u{1B}[H\u{1B}[2J", terminator: "") }
            print(lines.joined(separator: "\n"))
            flushOutput()
        }
    }
}
