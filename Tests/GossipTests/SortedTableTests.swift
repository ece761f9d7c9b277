import Crypto
import Testing
@testable import Gossip

private struct Entry: SortedTableElement, Equatable {
    var key: UInt64
    var payload: Int
    var tableKey: UInt64 { key }
}

/// Small tables are scanned and larger ones bisected: either way the table agrees with a sorted
/// reference after every insertion, replacement and removal, and keeps its key order.
@Test func sortedTable_matchesASortedReference_belowAndAboveTheScanLimit() {
    var rng = SplitMix64(seed: 11)
    for limit in [SortedTable<Entry>.linearSearchLimit, 4 * SortedTable<Entry>.linearSearchLimit] {
        var table = SortedTable<Entry>()
        var reference: [UInt64: Int] = [:]
        for step in 0..<4_000 {
            let key = rng.next(upperBound: UInt64(limit + limit / 2))
            switch rng.next(upperBound: UInt64(4)) {
            case 0:
                table[key] = nil
                reference[key] = nil
            case 1:
                #expect(table.removeValue(forKey: key)?.payload == reference.removeValue(forKey: key))
            default:
                table[key] = Entry(key: key, payload: step)
                reference[key] = step
            }
            let probe = rng.next(upperBound: UInt64(limit + limit / 2))
            #expect(table[probe]?.payload == reference[probe])
            #expect((table.index(of: probe) != nil) == (reference[probe] != nil))
        }
        #expect(table.elements.map(\.key) == reference.keys.sorted())
        #expect(table.elements.map(\.payload) == reference.keys.sorted().map { reference[$0] ?? -1 })
    }
}
