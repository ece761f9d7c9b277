/// An element of a ``SortedTable``: it carries its own key.
protocol SortedTableElement {
    associatedtype Key: Comparable
    var tableKey: Key { get }
}

/// A small per-peer table kept sorted by key in one array.
///
/// A lookup is a binary search over a few dozen entries; iteration follows the key order
/// (never a hash order, so a seed gives one run in any process); and the table costs its
/// elements' bytes, with no empty buckets and no second copy of each key. A simulation holds
/// several of these per node, for a million nodes.
struct SortedTable<Element: SortedTableElement> {
    typealias Key = Element.Key

    /// The elements, in key order.
    private(set) var elements: [Element] = []

    var count: Int { elements.count }

    /// Tables up to this size are searched front to back: the table is usually cold (one of
    /// many nodes' tables), and a forward scan streams its cache lines where a bisection waits
    /// for each probe's line in turn.
    static var linearSearchLimit: Int { 32 }

    /// Where `key` is, or where it would go.
    private func search(_ key: Key) -> (index: Int, found: Bool) {
        if elements.count <= Self.linearSearchLimit {
            for index in elements.indices {
                let probe = elements[index].tableKey
                if probe < key { continue }
                return (index, probe == key)
            }
            return (elements.count, false)
        }
        var low = 0
        var high = elements.count
        while low < high {
            let mid = (low + high) / 2
            let probe = elements[mid].tableKey
            if probe == key { return (mid, true) }
            if probe < key { low = mid + 1 } else { high = mid }
        }
        return (low, false)
    }

    /// The position of `key`, if present (for reading and updating it in place).
    func index(of key: Key) -> Int? {
        let s = search(key)
        return s.found ? s.index : nil
    }

    /// The element at `position` (from ``index(of:)``); a replacement must keep its key.
    subscript(at position: Int) -> Element {
        get { elements[position] }
        set {
            precondition(newValue.tableKey == elements[position].tableKey, "a table entry changes its key")
            elements[position] = newValue
        }
    }

    /// The element with `key`; setting nil removes it, setting an element inserts or replaces it.
    subscript(key: Key) -> Element? {
        get {
            let s = search(key)
            return s.found ? elements[s.index] : nil
        }
        set {
            precondition(newValue.map { $0.tableKey == key } ?? true, "a table entry stored under another key")
            let s = search(key)
            switch (s.found, newValue) {
            case (true, let element?): elements[s.index] = element
            case (true, nil): elements.remove(at: s.index)
            case (false, let element?): elements.insert(element, at: s.index)
            case (false, nil): break
            }
        }
    }

    /// Removes `key`, returning what was held.
    @discardableResult
    mutating func removeValue(forKey key: Key) -> Element? {
        let s = search(key)
        return s.found ? elements.remove(at: s.index) : nil
    }

    /// Keeps only the elements for which `keep` holds.
    mutating func keep(where keep: (Element) -> Bool) {
        elements.removeAll { !keep($0) }
    }
}

extension SortedTable: Sendable where Element: Sendable {}
