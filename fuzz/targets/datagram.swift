import Crypto

/// Fuzzes sealed-datagram parsing and opening under a fixed network key.
nonisolated(unsafe) var opener: DatagramOpener? = {
    guard let key = try? NetworkKey(bytes: (0..<32).map { UInt8(0x40 + $0) }) else { return nil }
    return try? DatagramOpener(keyring: NetworkKeyring(current: key), maxSenders: 64)
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? SealedDatagram.decodeHeader(bytes)
    _ = try? opener?.open(bytes)
    return 0
}
