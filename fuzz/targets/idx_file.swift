import Glibc
import Learner

/// Fuzzes the IDX reader (MNIST format; plain or gzip). `DataFiles.readIDX` and
/// `loadIDXFeatures` only take paths (there is no byte-level entry point), so each input is
/// written to a scratch file first; gzip inputs exercise zlib's stream checks too.
let path = scratchPath(".idx")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    writeFile(path, fuzzInput(data, size))
    guard let idx = try? DataFiles.readIDX(path) else { return 0 }
    precondition((1...4).contains(idx.dimensions.count), "IDX array of \(idx.dimensions.count) dimensions")
    precondition(idx.dimensions.reduce(1, *) == idx.data.count, "IDX dimensions do not match its data")
    if let features = try? DataFiles.loadIDXFeatures(images: path) {
        precondition(features.width > 0 && features.values.count % features.width == 0, "IDX features are not whole rows")
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: FuzzArgc, _ argv: FuzzArgv) -> Int32 {
    guard getenv("FUZZ_SEED_DIR") != nil else { return 0 }
    let shapes: [[Int]] = [[4], [2, 2, 3], [1, 2, 2, 2]]
    var seeds: [[UInt8]] = []
    for (i, dims) in shapes.enumerated() {
        let data = (0..<dims.reduce(1, *)).map { UInt8(truncatingIfNeeded: $0 * 37 + i) }
        for suffix in [".seed", ".seed.gz"] {
            let seedPath = scratchPath(suffix)
            guard (try? DataFiles.writeIDX(seedPath, dimensions: dims, data: data)) != nil else { continue }
            seeds.append(readFile(seedPath))
            unlink(seedPath)
        }
    }
    writeSeeds(seeds) { seed in
        writeFile(path, seed)
        return (try? DataFiles.readIDX(path)) != nil
    }
    return 0
}
