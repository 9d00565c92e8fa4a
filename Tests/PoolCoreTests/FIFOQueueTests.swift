// FIFOQueue, the waiter queue: order kept through pops, removals from anywhere, and compaction.

import Testing

@testable import PoolCore

@Suite struct FIFOQueueTests {
    @Test func popsInAppendOrder() {
        var queue = FIFOQueue<Int>()
        #expect(queue.isEmpty)
        #expect(queue.popFirst() == nil)
        for value in 1...5 { queue.append(value) }
        #expect(queue.count == 5)
        #expect(queue.elements == [1, 2, 3, 4, 5])
        #expect(queue.popFirst() == 1)
        #expect(queue.popFirst() == 2)
        queue.append(6)
        #expect([queue.popFirst(), queue.popFirst(), queue.popFirst(), queue.popFirst()] == [3, 4, 5, 6])
        #expect(queue.popFirst() == nil)
        #expect(queue.isEmpty)
        #expect(queue.count == 0)
    }

    @Test func removeTakesTheFirstMatchOnlyAndKeepsTheOrder() {
        var queue = FIFOQueue<Int>()
        for value in [1, 2, 3, 2, 4] { queue.append(value) }
        #expect(queue.remove(where: { $0 == 2 }) == 2)
        #expect(queue.elements == [1, 3, 2, 4])
        #expect(queue.count == 4)
        #expect(queue.remove(where: { $0 == 9 }) == nil)
        #expect(queue.count == 4)
        #expect(queue.remove(where: { $0 == 1 }) == 1)
        #expect(queue.elements == [3, 2, 4])
        #expect(queue.remove(where: { $0 == 4 }) == 4)
        #expect([queue.popFirst(), queue.popFirst(), queue.popFirst()] == [3, 2, nil])
        #expect(queue.isEmpty)
    }

    @Test func popSkipsElementsRemovedBehindTheHead() {
        var queue = FIFOQueue<String>()
        for value in ["a", "b", "c", "d"] { queue.append(value) }
        #expect(queue.remove(where: { $0 == "b" }) == "b")
        #expect(queue.remove(where: { $0 == "c" }) == "c")
        #expect(queue.popFirst() == "a")
        #expect(queue.count == 1)
        #expect(queue.popFirst() == "d")
        #expect(queue.isEmpty)
    }

    @Test func theNextElementAfterAPopOverARemovedOne() {
        var queue = FIFOQueue<String>()
        for value in ["a", "b", "c"] { queue.append(value) }
        _ = queue.remove(where: { $0 == "b" })
        #expect(queue.popFirst() == "a")
        #expect(queue.count == 1)
        #expect(queue.elements == ["c"])
        #expect(queue.popFirst() == "c")
    }

    @Test func removeAllReturnsTheRemainingInOrderAndResets() {
        var queue = FIFOQueue<Int>()
        for value in 1...6 { queue.append(value) }
        _ = queue.popFirst()
        _ = queue.remove(where: { $0 == 4 })
        #expect(queue.removeAll() == [2, 3, 5, 6])
        #expect(queue.isEmpty)
        #expect(queue.elements.isEmpty)
        queue.append(7)
        #expect(queue.popFirst() == 7)
    }

    @Test func orderSurvivesCompactionOverManyElements() {
        var queue = FIFOQueue<Int>()
        var model: [Int] = []
        var next = 0
        for round in 0..<200 {
            for _ in 0..<50 {
                queue.append(next)
                model.append(next)
                next += 1
            }
            for _ in 0..<40 {
                #expect(queue.popFirst() == model.removeFirst())
            }
            // Remove from the middle and from the front, so holes sit on both sides of the head.
            let middle = model[model.count / 2]
            #expect(queue.remove(where: { $0 == middle }) == middle)
            model.removeAll { $0 == middle }
            if round.isMultiple(of: 3), let front = model.first {
                #expect(queue.remove(where: { $0 == front }) == front)
                model.removeFirst()
            }
            #expect(queue.count == model.count)
        }
        #expect(queue.elements == model)
        while let value = queue.popFirst() {
            #expect(value == model.removeFirst())
        }
        #expect(model.isEmpty)
        #expect(queue.isEmpty)
    }

    @Test func drainingCompletelyAndRefillingKeepsWorking() {
        var queue = FIFOQueue<Int>()
        for cycle in 0..<100 {
            for value in 0..<(cycle + 1) { queue.append(value) }
            for value in 0..<(cycle + 1) { #expect(queue.popFirst() == value) }
            #expect(queue.isEmpty)
        }
        #expect(queue.popFirst() == nil)
    }
}
