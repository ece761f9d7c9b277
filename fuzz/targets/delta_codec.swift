import Learner

/// Fuzzes `Codecs.decode` and through it every `DeltaCodec` decoder (fp32, fp16, int8, top-k).
/// The expected count is what a receiver knows from its model; here it is the count the input
/// claims (bytes 1–4), capped so that a huge claim is refused rather than allocated, since a real
/// receiver never expects more than its parameter count.
let maxExpected = 1 << 16

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    let expected = expectedCount(bytes)
    guard let values = try? Codecs.decode(bytes, expectedCount: expected) else { return 0 }
    precondition(values.count == expected, "decoded \(values.count) values, expected \(expected)")
    precondition(values.allSatisfy(\.isFinite), "a codec decoded a non-finite value")
    // fp32 and fp16 are exact for finite values: decoding then encoding gives the input back.
    switch bytes[0] {
    case Fp32Codec().tag.rawValue:
        precondition(Fp32Codec().encode(values) == bytes, "fp32 does not re-encode to its input")
    case Fp16Codec().tag.rawValue:
        precondition(Fp16Codec().encode(values) == bytes, "fp16 does not re-encode to its input")
    default: break
    }
    return 0
}

/// The count the input claims (u32 LE after the tag), capped at `maxExpected`.
func expectedCount(_ bytes: [UInt8]) -> Int {
    guard bytes.count >= 5 else { return 0 }
    var claimed = 0
    for i in 0..<4 { claimed |= Int(bytes[1 + i]) << (8 * i) }
    return min(claimed, maxExpected)
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: FuzzArgc, _ argv: FuzzArgv) -> Int32 {
    let vectors: [[Float]] = [[], [1.5], [0.5, -2, 0, 3.25, -0.125, 7, 1e-3, -8]]
    let codecs: [any DeltaCodec] = [Fp32Codec(), Fp16Codec(), Int8Codec(chunk: 3), TopKCodec(fraction: 0.5)]
    writeSeeds(codecs.flatMap { codec in vectors.map { codec.encode($0) } }) {
        (try? Codecs.decode($0, expectedCount: expectedCount($0))) != nil
    }
    return 0
}
