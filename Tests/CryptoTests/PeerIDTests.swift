import Testing
@testable import Crypto

/// Pseudo-random 32-byte keys, BLAKE2b-256 of (seed, index); every seventh pair shares a
/// prefix of 1 to 31 bytes so the order is also decided by later words.
private func randomKeys(count: Int, seed: UInt8) -> [[UInt8]] {
    var keys = (0..<count).map { Blake2b.hash256([seed, UInt8(truncatingIfNeeded: $0), UInt8(truncatingIfNeeded: $0 >> 8)]) }
    for i in stride(from: 0, to: count - 1, by: 7) {
        let shared = 1 + Int(keys[i + 1][0]) % (PeerID.length - 1)
        keys[i + 1].replaceSubrange(0..<shared, with: keys[i][0..<shared])
    }
    return keys
}

@Test func peerID_bytes_roundTripInOrder() throws {
    let ordered = (0..<UInt8(PeerID.length)).map { $0 }
    #expect(try #require(PeerID(bytes: ordered)).bytes == ordered)
    #expect(try #require(PeerID(bytes: ordered[...])).description == Hex.encode(ordered))
    for key in randomKeys(count: 200, seed: 1) {
        let id = try #require(PeerID(bytes: key))
        #expect(id.bytes == key)
        #expect(id.withUnsafeBytes { Array($0) } == key)
    }
}

@Test func peerID_order_isLexicographicOverBytes() throws {
    let keys = randomKeys(count: 300, seed: 2)
    let ids = try keys.map { try #require(PeerID(bytes: $0)) }
    #expect(ids.sorted().map(\.bytes) == keys.sorted { $0.lexicographicallyPrecedes($1) })
    for (a, b) in zip(ids, ids.dropFirst()) {
        #expect((a < b) == a.bytes.lexicographicallyPrecedes(b.bytes))
    }
}

@Test func peerID_equalBytes_equalAndHashEqual() throws {
    for key in randomKeys(count: 100, seed: 3) {
        let a = try #require(PeerID(bytes: key))
        let b = try #require(PeerID(bytes: Array(key)))
        #expect(a == b && !(a < b) && !(b < a))
        #expect(a.hashValue == b.hashValue)
        var other = key
        other[31] ^= 1
        #expect(a != PeerID(bytes: other))
    }
    let ids = try randomKeys(count: 100, seed: 4).map { try #require(PeerID(bytes: $0)) }
    #expect(Set(ids + ids).count == 100)
}
