// `poolctl rollout`: a change applied to a fleet a few agents at a time, each followed by a health gate.

import ArgumentParser
import ControlRPC

#if canImport(Glibc)
import Glibc
#endif

extension PoolCtl {
    struct Rollout: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply a change to the agents a few at a time, each followed by a health gate.",
            discussion: """
                METHOD is drain (drain, then resume), reconnect, set-recycle, reload or resize; PARAMS is its JSON \
                object, as for `call`. --parallel agents at a time; after the change each must answer `health` \
                with "ok" and have no waiting clients for --settle seconds in a row (within --gate-timeout) \
                before the next ones start. The first failure stops the rollout: the agents in flight finish, \
                the rest are left untouched, and the summary says which agents were done, which failed and why, \
                and which were not touched. A progress line per agent (NDJSON with --json).

                Exit codes: 0 all done, 1 an agent refused the change or failed its gate, 2 usage, 3 an agent \
                could not be reached.

                Example:
                  poolctl --fleet fleet.toml --select role=replica rollout reconnect --parallel 2 --settle 10
                  poolctl --socket '/run/poolagent/*.sock' rollout resize '{"pool": "app", "size": 40}' --dry-run
                """
        )
        @ParentCommand var root: PoolCtl
        @Argument(help: "drain, reconnect, set-recycle, reload or resize.") var method: String
        @Argument(help: "The method's params as a JSON object.") var params: String?
        @Option(help: "Agents changed at once.") var parallel: Int = 1
        @Option(help: "Seconds an agent must stay healthy with no waiting client after its change.") var settle: Double = 5
        @Option(help: "Seconds an agent may take to pass its gate.") var gateTimeout: Double = 60
        @Flag(help: "Print the plan and change nothing.") var dryRun = false

        static let methods = ["drain", "reconnect", "set-recycle", "reload", "resize"]

        func validate() throws {
            guard Self.methods.contains(self.method) else {
                throw ValidationError("METHOD must be one of \(Self.methods.joined(separator: ", "))")
            }
            if let params, (try? JSONValue.parse(params))?.objectValue == nil { throw ValidationError("PARAMS must be a JSON object") }
            guard self.parallel >= 1 else { throw ValidationError("--parallel must be at least 1") }
            guard self.settle >= 0, self.gateTimeout > 0 else { throw ValidationError("--settle and --gate-timeout must be positive") }
        }

        func run() throws {
            let options = self.root.connection
            let targets = options.targets
            let params = try self.params.map { try JSONValue.parse($0) }
            let batches = stride(from: 0, to: targets.count, by: self.parallel).map { Array(targets[$0..<min($0 + self.parallel, targets.count)]) }
            let report = RolloutReport(json: options.json, total: targets.count)
            if self.dryRun {
                for (index, batch) in batches.enumerated() {
                    report.plan(batch: index + 1, agents: batch.map(\.name), method: self.method, params: params)
                }
                return
            }
            var done: [String] = []
            var failed: [(String, String)] = []
            var exitCode: Int32 = 0
            var next = 0
            for batch in batches {
                let outcomes = LockedOutcomes(count: batch.count)
                let threads = batch.enumerated().map { index, target in
                    spawnThread {
                        report.started(target.name, position: next + index + 1, method: self.method)
                        let started = monotonicSeconds()
                        let outcome = self.change(target, params: params, timeout: options.timeout)
                        report.finished(target.name, outcome, seconds: monotonicSeconds() - started)
                        outcomes.set(index, outcome)
                    }
                }
                for thread in threads { pthread_join(thread, nil) }
                next += batch.count
                for (target, outcome) in zip(batch, outcomes.values) {
                    if let failure = outcome {
                        failed.append((target.name, failure.reason))
                        exitCode = max(exitCode, failure.code)
                    } else {
                        done.append(target.name)
                    }
                }
                if !failed.isEmpty { break }
            }
            let untouched = targets[next...].map(\.name)
            report.summary(method: self.method, done: done, failed: failed, untouched: untouched)
            if exitCode != 0 { throw ExitCode(exitCode) }
        }

        struct Failure: Error {
            var code: Int32
            var reason: String
        }

        /// The change on one agent, then its gate; nil when both passed.
        func change(_ target: AgentTarget, params: JSONValue?, timeout: Int) -> Failure? {
            if self.method == "drain" {
                // The drain's answer waits for its deadline; whatever its outcome, the pools are resumed.
                let deadline = Render.number(params?["deadline_s"]).map { Int($0.rounded(.up)) + 5 } ?? 0
                let drained = Self.call(target, "drain", params, timeout: max(timeout, deadline)).failure
                let resumed = Self.call(target, "resume", params?["pool"].map { ["pool": $0] }, timeout: timeout).failure
                if let failure = drained ?? resumed { return failure }
            } else if let failure = Self.call(target, self.method, params, timeout: timeout).failure {
                return failure
            }
            return self.gate(target, timeout: timeout)
        }

        /// Health "ok" and no waiting client for `settle` seconds in a row, within `gateTimeout`.
        func gate(_ target: AgentTarget, timeout: Int) -> Failure? {
            let deadline = monotonicSeconds() + self.gateTimeout
            var healthySince: Double? = nil
            var last = "no answer yet"
            while true {
                let now = monotonicSeconds()
                let health = Self.call(target, "health", nil, timeout: timeout)
                let stats = Self.call(target, "stats", nil, timeout: timeout)
                // An agent briefly unreachable (a restart, an SSH hiccup) may still pass within the gate's time.
                if let failure = health.failure ?? stats.failure, failure.code == 3 {
                    healthySince = nil
                    last = failure.reason
                    if now >= deadline { return failure }
                    usleep(250_000)
                    continue
                }
                let status = health.result?["status"]?.stringValue ?? "unknown"
                let waiting = (stats.result?["pools"]?.arrayValue ?? []).reduce(0) { $0 + Int($1["clients"]?["waiting"]?.integerValue ?? 0) }
                if status == "ok" && waiting == 0 {
                    healthySince = healthySince ?? now
                    if now - healthySince! >= self.settle { return nil }
                } else {
                    healthySince = nil
                    last = status != "ok" ? "health \(status)" : "\(waiting) waiting client\(waiting == 1 ? "" : "s")"
                }
                if now >= deadline {
                    return Failure(code: 1, reason: "health gate not passed within \(Render.text(JSONValue(self.gateTimeout))) s: \(last)")
                }
                usleep(250_000)
            }
        }

        static func call(_ target: AgentTarget, _ method: String, _ params: JSONValue?, timeout: Int) -> (result: JSONValue?, failure: Failure?) {
            do {
                let response = try ControlClient.call(path: target.address, method: method, params: params, timeout: timeout)
                switch response.outcome {
                case .success(let result): return (result, nil)
                case .failure(let error):
                    return (nil, Failure(code: 1, reason: "\(method): \(error.message)" + error.details.map { ": \($0)" }.joined()))
                }
            } catch {
                return (nil, Failure(code: 3, reason: "cannot reach the agent: \(error)"))
            }
        }
    }
}

private final class LockedOutcomes: @unchecked Sendable {  // Each thread writes only its own index; read after join.
    private var storage: [PoolCtl.Rollout.Failure?]
    init(count: Int) { self.storage = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ outcome: PoolCtl.Rollout.Failure?) { self.storage[index] = outcome }
    var values: [PoolCtl.Rollout.Failure?] { self.storage }
}

/// Sleeps for any number of seconds (usleep takes at most about 71 minutes).
func sleepSeconds(_ seconds: Double) {
    var interval = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
    var remaining = timespec()
    while nanosleep(&interval, &remaining) != 0 && errno == EINTR { interval = remaining }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Progress lines and the summary, for people or as NDJSON.
private final class RolloutReport: @unchecked Sendable {  // Lines go through EventOutput's lock.
    let json: Bool
    let total: Int
    let output = EventOutput()

    init(json: Bool, total: Int) {
        self.json = json
        self.total = total
    }

    func plan(batch: Int, agents: [String], method: String, params: JSONValue?) {
        if self.json {
            self.output.line((["plan": ["batch": JSONValue(batch), "agents": .array(agents.map { .string($0) }), "method": .string(method),
                                        "params": params ?? .null]] as JSONValue).serialized)
        } else {
            self.output.line("batch \(batch): \(agents.joined(separator: ", ")): \(method)\(params.map { " \($0.serialized)" } ?? ""), then the health gate")
        }
    }

    func started(_ agent: String, position: Int, method: String) {
        if self.json {
            self.output.line((["agent": .string(agent), "step": "started", "position": JSONValue(position), "of": JSONValue(self.total)] as JSONValue).serialized)
        } else {
            self.output.line("[\(position)/\(self.total)] \(agent): \(method)…")
        }
    }

    func finished(_ agent: String, _ failure: PoolCtl.Rollout.Failure?, seconds: Double) {
        let elapsed = (seconds * 10).rounded() / 10
        if self.json {
            var members: [(String, JSONValue)] = [("agent", .string(agent)), ("step", .string(failure == nil ? "done" : "failed")), ("seconds", JSONValue(elapsed))]
            if let failure { members.append(("error", .string(failure.reason))) }
            self.output.line(JSONValue.object(members).serialized)
        } else if let failure {
            self.output.line("      \(agent): FAILED after \(elapsed) s: \(failure.reason)")
        } else {
            self.output.line("      \(agent): done, healthy (\(elapsed) s)")
        }
    }

    func summary(method: String, done: [String], failed: [(String, String)], untouched: [String]) {
        if self.json {
            self.output.line((["summary": [
                "method": .string(method), "done": .array(done.map { .string($0) }),
                "failed": .array(failed.map { ["agent": .string($0.0), "error": .string($0.1)] }),
                "untouched": .array(untouched.map { .string($0) }),
            ]] as JSONValue).serialized)
            return
        }
        var line = "rollout \(method): \(done.count) done"
        if !done.isEmpty { line += " (\(done.joined(separator: ", ")))" }
        line += ", \(failed.count) failed"
        if !failed.isEmpty { line += " (" + failed.map { "\($0.0): \($0.1)" }.joined(separator: "; ") + ")" }
        line += ", \(untouched.count) untouched"
        if !untouched.isEmpty { line += " (\(untouched.joined(separator: ", ")))" }
        self.output.line(line)
    }
}
