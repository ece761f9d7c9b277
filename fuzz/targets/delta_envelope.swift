import Crypto

/// Fuzzes the signed-envelope decoder (head, header, payload checks) and the header decoder.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? SignedDelta.open(bytes, keyring: nil)
    if let header = try? DeltaHeader.decode(bytes, limits: DeltaLimits()) {
        precondition(header.encode() == bytes, "delta header does not re-encode to its input")
    }
    return 0
}
