// A first-in first-out queue with O(1) amortised push and pop and removal of any element.

struct FIFOQueue<Element> {
    private var storage: [Element?] = []
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { self.count == 0 }

    mutating func append(_ element: Element) {
        self.storage.append(element)
        self.count += 1
    }

    mutating func popFirst() -> Element? {
        self.skipRemovedMutating()
        guard self.head < self.storage.count, let element = self.storage[self.head] else { return nil }
        self.storage[self.head] = nil
        self.head += 1
        self.count -= 1
        self.skipRemovedMutating()
        self.compact()
        return element
    }

    /// Removes the first element matching `predicate`; returns it, or nil when there is none.
    mutating func remove(where predicate: (Element) -> Bool) -> Element? {
        for index in self.head..<self.storage.count {
            if let element = self.storage[index], predicate(element) {
                self.storage[index] = nil
                self.count -= 1
                self.skipRemovedMutating()
                self.compact()
                return element
            }
        }
        return nil
    }

    mutating func removeAll() -> [Element] {
        let all = self.storage[self.head...].compactMap { $0 }
        self.storage.removeAll(keepingCapacity: true)
        self.head = 0
        self.count = 0
        return all
    }

    var elements: [Element] { self.storage[self.head...].compactMap { $0 } }

    private mutating func skipRemovedMutating() {
        while self.head < self.storage.count, self.storage[self.head] == nil { self.head += 1 }
    }

    private mutating func compact() {
        if self.head == self.storage.count {
            self.storage.removeAll(keepingCapacity: true)
            self.head = 0
        } else if self.head > 64 && self.head * 2 > self.storage.count {
            self.storage.removeFirst(self.head)
            self.head = 0
        }
    }
}
