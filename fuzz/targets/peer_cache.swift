import Crypto
import Gossip

/// Fuzzes the peer cache file decoder, `PeerCache(decoding:)`. The format is canonical, so a
/// decoded cache must re-encode to exactly its input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    guard let cache = try? PeerCache(decoding: bytes) else { return 0 }
    precondition(cache.records.count <= PeerCache.maxRecords, "cache holds more records than its limit")
    precondition(cache.encoded() == bytes, "peer cache does not re-encode to its input")
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: FuzzArgc, _ argv: FuzzArgv) -> Int32 {
    let ids = (1...3).compactMap { try? Identity(seed: [UInt8](repeating: UInt8($0), count: 32)) }
    let records = ids.enumerated().map { i, id in
        AddressRecord(signedBy: id, endpoints: [Endpoint(host: "10.0.0.\(i + 1)", port: UInt16(7000 + i))], sequence: UInt64(i))
    }
    writeSeeds([
        PeerCache().encoded(),
        PeerCache(ownSequence: 42, records: [records[0]]).encoded(),
        PeerCache(ownSequence: 7, records: records).encoded(),
    ]) { (try? PeerCache(decoding: $0)) != nil }
    return 0
}
