import Crypto

/// Fuzzes the payload chunk decoder.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let chunk = try? DeltaChunk.decode(bytes) {
        precondition(chunk.encode() == bytes, "chunk does not re-encode to its input")
    }
    checkView(bytes)
    return 0
}

/// The copy-free view decoder must agree with the copying decoder on every input.
func checkView(_ bytes: [UInt8]) {
    let copied = try? DeltaChunk.decode(bytes)
    let viewed: DeltaChunk? = try? bytes.withUnsafeBytes { raw in
        try DeltaChunk.withDecoded(raw) { offset, view in DeltaChunk(offset: offset, bytes: Array(view)) }
    }
    precondition(copied == viewed, "chunk view decoder disagrees with the copying decoder")
}
