// The pool's view of its upstream: `size = "auto"` from the server's limits, and a probe while it is down.

import NIOCore
import NIOPosix
import PoolCore

extension Pool {
    /// `size = "auto"`: the machine's size, capped by this pool's share of the upstream's free connections.
    func sizeFromUpstream(poolCount: Int) {
        let machineSize = AutoSize.machineSize()
        self.autoSizing = (machineSize, nil, nil)
        let parameters = self.connectParameters
        self.threadPool.runIfActive(eventLoop: self.eventLoop) { AutoSize.upstreamAvailable(parameters: parameters) }
            .whenSuccess { [self] available in
                guard let available else { return }
                let share = max(1, available / max(1, poolCount))
                self.autoSizing = (machineSize, available, share)
                let size = min(machineSize.size, share)
                if size != self.configuration.size {
                    self.logger.info("size auto", metadata: ["size": "\(size)", "upstream_available": "\(available)", "share": "\(share)"])
                    _ = self.resize(size: size, minIdle: min(self.configuration.minIdle, size), maxOverflow: self.configuration.maxOverflow)
                }
            }
    }

    /// A connect that only tells whether the upstream answers; the connection is closed at once.
    func probe() {
        self.probing = true
        let parameters = self.connectParameters
        self.threadPool.runIfActive(eventLoop: self.eventLoop) { () -> String? in
            switch LibPQConnector.connect(parameters: parameters) {
            case .success(let link):
                link.finish()
                return nil
            case .failure(let failure):
                return failure.message
            }
        }.whenComplete { [self] result in
            self.probing = false
            switch result {
            case .success(nil):
                self.lastContact = .now
                if self.lastError != nil {
                    self.lastError = nil
                    self.onUpstreamChange?(true, nil)
                }
            case .success(let message?):
                self.lastError = message
                self.lastErrorAt = .now
            case .failure:
                break
            }
        }
    }

    /// ok: the last contact with the upstream succeeded; down: it failed and no server is open;
    /// degraded: it failed but servers opened earlier still serve.
    var health: String {
        guard self.lastError != nil else { return "ok" }
        return self.openCount == 0 ? "down" : "degraded"
    }
}
