import Crypto

/// Fuzzes the signed-envelope decoder (head, header, payload checks) and the header decoder.
nonisolated(unsafe) let keyring = fuzzSetup("network key") { NetworkKeyring(current: try NetworkKey(bytes: (0..<32).map { UInt8(0x40 + $0) })) }
/// The recipient of the docs/wire.md vectors (bob), so the seeds open all the way.
nonisolated(unsafe) let localPeer = fuzzSetup("recipient identity") { try Identity(seed: (0..<32).map { UInt8(0x20 + $0) }).peerID }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? SignedDelta.open(bytes, keyring: keyring, expecting: DeltaExpectation(kind: nil, author: .anyMember, localPeer: localPeer))
    if let header = try? DeltaHeader.decode(bytes, limits: DeltaLimits()) {
        precondition((try? header.encode()) == bytes, "delta header does not re-encode to its input")
    }
    return 0
}
