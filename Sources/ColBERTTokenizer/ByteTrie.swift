/// An immutable trie over UTF-8 bytes answering "longest key that is a prefix of these bytes".
///
/// WordPiece's greedy longest-match and the added-token scan both need exactly this query, and a
/// byte trie answers it in one forward walk, without building candidate Strings.
struct ByteTrie: Sendable {
    /// Flat node tables in manually allocated memory, so the matching loop runs without bounds
    /// checks or array retains. Written once in `init`, read-only afterwards.
    final class Storage: @unchecked Sendable {
        /// Child of the root for each first byte, or -1. Node 0 is the root.
        let rootChildren: UnsafeMutablePointer<Int32>
        /// Children of node `n` are `childLabels/childNodes[childStart[n] ..< childStart[n + 1]]`, sorted by label.
        let childStart: UnsafeMutablePointer<Int32>
        let childLabels: UnsafeMutablePointer<UInt8>
        let childNodes: UnsafeMutablePointer<Int32>
        /// Value stored at each node, or -1 when no key ends there.
        let values: UnsafeMutablePointer<Int32>

        init(root: [Int32], childStart: [Int32], childLabels: [UInt8], childNodes: [Int32], values: [Int32]) {
            func copy<T>(_ array: [T]) -> UnsafeMutablePointer<T> {
                let p = UnsafeMutablePointer<T>.allocate(capacity: max(array.count, 1))
                _ = UnsafeMutableBufferPointer(start: p, count: array.count).initialize(from: array)
                return p
            }
            self.rootChildren = copy(root)
            self.childStart = copy(childStart)
            self.childLabels = copy(childLabels)
            self.childNodes = copy(childNodes)
            self.values = copy(values)
        }

        deinit {
            rootChildren.deallocate()
            childStart.deallocate()
            childLabels.deallocate()
            childNodes.deallocate()
            values.deallocate()
        }
    }

    let storage: Storage

    /// Builds the trie. Empty keys are ignored; for duplicate keys the first one wins.
    init(entries: [(key: [UInt8], value: Int32)]) {
        let sorted = entries.enumerated()
            .filter { !$0.element.key.isEmpty }
            .sorted { a, b in
                if a.element.key == b.element.key { return a.offset < b.offset }
                return a.element.key.lexicographicallyPrecedes(b.element.key)
            }
            .map(\.element)
        var values: [Int32] = [-1]
        var parents: [Int32] = [-1]
        var labels: [UInt8] = [0]
        // Nodes along the previous key: path[d] is the node reached after d bytes.
        var path: [Int32] = [0]
        var previous: [UInt8] = []
        for (key, value) in sorted {
            var common = 0
            while common < key.count, common < previous.count, key[common] == previous[common] { common += 1 }
            path.removeSubrange((common + 1)...)
            var node = path[common]
            for byte in key[common...] {
                let child = Int32(values.count)
                values.append(-1)
                parents.append(node)
                labels.append(byte)
                path.append(child)
                node = child
            }
            if values[Int(node)] < 0 { values[Int(node)] = value }
            previous = key
        }
        // Nodes were created in lexicographic key order, so children of each parent appear in
        // increasing label order; a stable counting sort by parent keeps that order.
        let nodeCount = values.count
        var counts = [Int32](repeating: 0, count: nodeCount + 1)
        for n in 1..<nodeCount { counts[Int(parents[n]) + 1] += 1 }
        for n in 0..<nodeCount { counts[n + 1] += counts[n] }
        var fill = counts
        var childLabels = [UInt8](repeating: 0, count: max(nodeCount - 1, 0))
        var childNodes = [Int32](repeating: 0, count: max(nodeCount - 1, 0))
        for n in 1..<max(nodeCount, 1) {
            let p = Int(parents[n])
            let slot = Int(fill[p])
            fill[p] += 1
            childLabels[slot] = labels[n]
            childNodes[slot] = Int32(n)
        }
        var root = [Int32](repeating: -1, count: 256)
        for slot in Int(counts[0])..<Int(counts[1]) { root[Int(childLabels[slot])] = childNodes[slot] }
        self.storage = Storage(root: root, childStart: counts, childLabels: childLabels,
                               childNodes: childNodes, values: values)
    }

    /// Whether some key starts with `byte`.
    @inline(__always)
    func hasKey(startingWith byte: UInt8) -> Bool { storage.rootChildren[Int(byte)] >= 0 }

    /// The longest key equal to `bytes[from ..< k]` for some `k <= to`, as (value, length);
    /// length 0 when no key matches.
    @inline(__always)
    func longestMatch(in bytes: UnsafeBufferPointer<UInt8>, from: Int, to: Int) -> (value: Int32, length: Int) {
        guard from < to else { return (-1, 0) }
        let rootChildren = storage.rootChildren, values = storage.values, childStart = storage.childStart
        let childLabels = storage.childLabels, childNodes = storage.childNodes
        guard let bytes = bytes.baseAddress else { return (-1, 0) }
        var node = rootChildren[Int(bytes[from])]
        if node < 0 { return (-1, 0) }
        var best: (value: Int32, length: Int) = (-1, 0)
        var i = from + 1
        while true {
            let v = values[Int(node)]
            if v >= 0 { best = (v, i - from) }
            if i == to { break }
            let byte = bytes[i]
            let lo = Int(childStart[Int(node)]), hi = Int(childStart[Int(node) + 1])
            var next: Int32 = -1
            if hi - lo <= 8 {
                var s = lo
                while s < hi {
                    if childLabels[s] == byte { next = childNodes[s]; break }
                    s += 1
                }
            } else {
                var a = lo, b = hi
                while a < b {
                    let m = (a + b) >> 1
                    if childLabels[m] < byte { a = m + 1 } else { b = m }
                }
                if a < hi && childLabels[a] == byte { next = childNodes[a] }
            }
            if next < 0 { break }
            node = next
            i += 1
        }
        return best
    }
}
