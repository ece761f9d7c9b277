import Crypto

/// Fuzzes the payload chunk decoder.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let chunk = try? DeltaChunk.decode(bytes) {
        precondition(chunk.encode() == bytes, "chunk does not re-encode to its input")
    }
    return 0
}
