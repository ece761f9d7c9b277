import CZlib
import Learner

/// Fuzzes the model file parser, `ModelFile.decode` (the byte-level half of `ModelFile.read`).
/// Random mutations almost never keep the trailing CRC-32 right, so each input is parsed twice:
/// as it is, and with its last four bytes replaced by the CRC of the rest, which lets the fuzzer
/// reach the parameter and normaliser checks behind the checksum. Version 2 is canonical, so a
/// file of version 2 that parses must re-encode to exactly its bytes; a version 1 file
/// re-encodes as version 2, which must read back the same. Whatever parses must also run
/// through the `Predictor` (the int8 kernel for int8 files) without trapping.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    check(bytes)
    if bytes.count >= 4 {
        var fixed = bytes
        let body = fixed.count - 4
        let crc = fixed.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32(body))) }
        for i in 0..<4 { fixed[body + i] = UInt8(truncatingIfNeeded: crc >> (8 * i)) }
        if fixed != bytes { check(fixed) }
    }
    return 0
}

func check(_ bytes: [UInt8]) {
    guard let contents = try? ModelFile.decode(bytes) else { return }
    let arch = contents.model.architecture
    precondition(contents.model.parameters.count == arch.parameterCount, "parameter count disagrees with the architecture")
    let encoded = ModelFile.encode(contents)
    if bytes[8] == 1 && bytes[9] == 0 {
        precondition((try? ModelFile.decode(encoded)) == contents, "a version 1 file does not read back the same as version 2")
    } else {
        precondition(encoded == bytes, "model file does not re-encode to its input")
    }
    _ = try? ModelFile.decode(bytes, expecting: arch)
    _ = try? Predictor(contents).predict([Float](repeating: 0.5, count: 2 * arch.inputCount), batch: 2)
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: FuzzArgc, _ argv: FuzzArgv) -> Int32 {
    var seeds: [[UInt8]] = []
    if let softmax = try? Architecture(inputCount: 3, classCount: 2) {
        let model = Model(architecture: softmax, seed: 1)
        seeds.append(ModelFile.encode(.init(model: model, normalizer: .identity(featureCount: 3))))
        if let norm = try? Normalizer(kind: .minMax, offsets: [0, 1, 2], scales: [1, 0.5, 2]) {
            seeds.append(ModelFile.encode(.init(model: model, normalizer: norm)))
        }
    }
    if let mlp = try? Architecture(inputCount: 2, hiddenSizes: [3], classCount: 2),
       let norm = try? Normalizer(kind: .standardize, offsets: [0.5, -1], scales: [2, 4]) {
        let contents = ModelFile.Contents(model: Model(architecture: mlp, seed: 2), normalizer: norm)
        seeds.append(ModelFile.encode(contents))
        // Every other storage: fp16, int8, and each of the three sparse after pruning half the weights.
        var pruned = contents
        if let half = try? Compression.pruned(contents.model, fraction: 0.5) { pruned.model = half.model }
        for precision in ModelFile.Storage.Precision.allCases {
            if precision != .fp32 { seeds.append(ModelFile.encode(Compression.converted(contents, to: .init(precision: precision)))) }
            seeds.append(ModelFile.encode(Compression.converted(pruned, to: .init(precision: precision, isSparse: true))))
        }
    }
    writeSeeds(seeds) { (try? ModelFile.decode($0)) != nil }
    return 0
}
