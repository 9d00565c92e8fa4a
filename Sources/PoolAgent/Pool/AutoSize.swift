// size = "auto": min(cores × 3, memory GiB × 2) clamped to 5…50, then capped by the upstream's free slots.

import CLibPQ

#if canImport(Glibc)
import Glibc
#endif

enum AutoSize {
    struct MachineSize: Sendable {
        var cores: Int
        var memoryGiB: Double
        var size: Int
    }

    static func machineSize() -> MachineSize {
        let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let memory = Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE))) / Double(1 << 30)
        let formula = min(cores * 3, Int(memory * 2))
        return MachineSize(cores: cores, memoryGiB: (memory * 10).rounded() / 10, size: min(max(formula, 5), 50))
    }

    /// Connections the upstream accepts from ordinary roles: max_connections − superuser_reserved_connections
    /// (− reserved_connections where it exists), read with a short-lived libpq connection. Blocking.
    static func upstreamAvailable(parameters: [(String, String)]) -> Int? {
        guard case .success(let link) = LibPQConnector.connect(parameters: parameters) else { return nil }
        defer { link.finish() }
        let sql = """
            SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                 - coalesce(current_setting('reserved_connections', true)::int, 0)
            """
        return link.queryInteger(sql)
    }
}
