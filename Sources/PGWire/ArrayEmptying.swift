// Emptying the short arrays emptied on every message or loop turn.

extension Array {
    /// Empties the array and keeps its storage. For the few elements of a queue emptied on every message or
    /// loop turn, removing them one by one costs far less than the generic `removeAll(keepingCapacity: true)`.
    @inlinable @inline(__always)
    public mutating func removeAllKeepingStorage() {
        while !self.isEmpty { self.removeLast() }
    }
}
