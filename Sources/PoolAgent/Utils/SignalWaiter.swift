// Shutdown signals, received synchronously by one thread with sigwait, so none is lost at start-up.

#if canImport(Glibc)
import Glibc
#endif

enum SignalWaiter {
    static let handled: [Int32] = [SIGTERM, SIGINT, SIGHUP]

    /// Blocks the handled signals in the calling thread; threads created afterwards inherit the mask, so a
    /// signal sent at any moment stays pending until `start` collects it. Call before creating threads.
    static func blockHandledSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for number in self.handled { sigaddset(&set, number) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Starts a thread that waits for the handled signals and calls `handler` for each.
    static func start(_ handler: @escaping @Sendable (Int32) -> Void) {
        var thread = pthread_t()
        let box = Unmanaged.passRetained(HandlerBox(handler))
        pthread_create(&thread, nil, { argument in
            let box = Unmanaged<HandlerBox>.fromOpaque(argument!).takeRetainedValue()
            var set = sigset_t()
            sigemptyset(&set)
            for number in SignalWaiter.handled { sigaddset(&set, number) }
            while true {
                var number: Int32 = 0
                if sigwait(&set, &number) == 0 { box.handler(number) }
            }
        }, box.toOpaque())
        pthread_detach(thread)
    }

    private final class HandlerBox: Sendable {
        let handler: @Sendable (Int32) -> Void
        init(_ handler: @escaping @Sendable (Int32) -> Void) { self.handler = handler }
    }
}
