import Crypto

/// Fuzzes sealed-datagram parsing and opening under a fixed network key, for a fixed
/// recipient, with the replay guard's clock held at a fixed time.
let fuzzNow: UInt64 = 1_800_000_000_000
nonisolated(unsafe) let opener: DatagramOpener = fuzzSetup("datagram opener") {
    let key = try NetworkKey(bytes: (0..<32).map { UInt8(0x40 + $0) })
    let local = try Identity(seed: [UInt8](repeating: 2, count: 32))
    return try DatagramOpener(keyring: NetworkKeyring(current: key), localPeer: local.peerID,
                              replayGuard: ReplayGuard(settings: .init(maxAge: 30_000, maxLead: 30_000, capacity: 64), floor: 0))
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? SealedDatagram.decodeHeader(bytes)
    _ = try? opener.open(bytes, now: fuzzNow)
    return 0
}
