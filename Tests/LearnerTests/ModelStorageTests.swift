import Foundation
import Testing
@testable import Learner

/// Model files of version 2: every storage round-trips, version 1 files still read, and
/// malformed files are refused with a reason, never a trap.
struct ModelStorageTests {
    static let storages: [ModelFile.Storage] = [
        .fp32, .fp16, .int8,
        ModelFile.Storage(precision: .fp32, isSparse: true), ModelFile.Storage(precision: .fp16, isSparse: true),
        ModelFile.Storage(precision: .int8, isSparse: true),
    ]

    /// `ModelFileTests.contents()` (an MLP 6-5-4-3 with a fitted normaliser) with half its
    /// weights pruned when `pruned`, converted to `storage`.
    static func contents(_ storage: ModelFile.Storage, pruned: Bool? = nil) throws -> ModelFile.Contents {
        var contents = try ModelFileTests.contents()
        if pruned ?? storage.isSparse { contents.model = try Compression.pruned(contents.model, fraction: 0.5).model }
        return Compression.converted(contents, to: storage)
    }

    /// Where the parameters start in a file of `contents`: after the header.
    static func parametersStart(_ architecture: Architecture) -> Int {
        8 + 2 + 2 + architecture.name.utf8.count + 4 + 4 + 2 + 4 * architecture.hiddenSizes.count + 1 + 1 + 8
    }

    /// `bytes` with the trailing CRC recomputed, so a decoder's later checks are reached.
    static func withChecksum(_ bytes: [UInt8]) -> [UInt8] {
        var fixed = bytes
        let crc = ModelFile.crc(fixed[0..<(fixed.count - 4)])
        for i in 0..<4 { fixed[fixed.count - 4 + i] = UInt8(truncatingIfNeeded: crc >> (8 * i)) }
        return fixed
    }

    @Test(arguments: storages)
    func modelFile_everyStorage_roundTripsExactly(storage: ModelFile.Storage) throws {
        let contents = try Self.contents(storage)
        let bytes = ModelFile.encode(contents)
        let decoded = try ModelFile.decode(bytes)
        #expect(decoded == contents)
        #expect(decoded.storage == storage)
        #expect(ModelFile.encode(decoded) == bytes)
        #expect((decoded.int8Weights != nil) == (storage.precision == .int8))
        #expect((decoded.mask != nil) == storage.isSparse)
        if storage.isSparse {
            #expect(decoded.mask?.sparsity ?? 0 >= 0.5)
            #expect(decoded.mask == WeightMask(keepingNonzeroWeightsOf: decoded.model))
        }
        let dir = try temporaryDirectory()
        try ModelFile.write(contents, to: dir + "/m.model")
        #expect(try ModelFile.read(dir + "/m.model") == contents)
    }

    @Test func modelFile_sizes_matchTheLayout() throws {
        let architecture = try ModelFileTests.contents().model.architecture
        let header = Self.parametersStart(architecture), normaliser = 8 * architecture.inputCount, crc = 4
        let weights = architecture.weightCount, units = architecture.unitCount
        #expect(ModelFile.encode(try Self.contents(.fp32)).count == header + 4 * architecture.parameterCount + normaliser + crc)
        #expect(ModelFile.encode(try Self.contents(.fp16)).count == header + 2 * architecture.parameterCount + normaliser + crc)
        #expect(ModelFile.encode(try Self.contents(.int8)).count == header + weights + 8 * units + normaliser + crc)
        let sparse = try Self.contents(ModelFile.Storage(precision: .int8, isSparse: true))
        let stored = weights - (sparse.mask?.prunedCount ?? 0)
        let bitmaps = architecture.layers.reduce(0) { $0 + ($1.weightCount + 7) / 8 }
        #expect(ModelFile.encode(sparse).count == header + bitmaps + stored + 8 * units + normaliser + crc)
    }

    @Test func modelFile_fp32_isTheVersion1LayoutWithAStorageByte() throws {
        let contents = try Self.contents(.fp32)
        let bytes = ModelFile.encode(contents)
        #expect(bytes[8] == 2 && bytes[9] == 0)
        let storageAt = Self.parametersStart(contents.model.architecture) - 9
        #expect(bytes[storageAt] == 0)
        // The same bytes as version 1 wrote them: version 1, no storage byte.
        var version1 = bytes
        version1[8] = 1
        version1.remove(at: storageAt)
        version1 = Self.withChecksum(version1)
        let decoded = try ModelFile.decode(version1, path: "old.model")
        #expect(decoded == contents && decoded.storage == .fp32)
        #expect(ModelFile.encode(decoded) == bytes)
    }

    @Test func modelFile_unknownVersionOrStorage_isRefusedByName() throws {
        var bytes = ModelFile.encode(try Self.contents(.fp32))
        bytes[8] = 3
        #expect(errorMessage { _ = try ModelFile.decode(Self.withChecksum(bytes), path: "m.model") }.contains("format version 3"))
        bytes = ModelFile.encode(try Self.contents(.fp32))
        bytes[Self.parametersStart(try ModelFileTests.contents().model.architecture) - 9] = 3
        #expect(errorMessage { _ = try ModelFile.decode(Self.withChecksum(bytes)) }.contains("unknown parameter storage 3"))
    }

    /// A sparse file of `precision`, whose first layer (30 weights, so 4 bitmap bytes and 2
    /// unused bits) starts right after the header; `edit` gets the bytes and where the
    /// bitmap, and the stored weights, begin.
    static func editedSparse(_ precision: ModelFile.Storage.Precision, _ edit: (inout [UInt8], Int, Int) -> Void) throws -> String {
        let contents = try Self.contents(ModelFile.Storage(precision: precision, isSparse: true))
        var bytes = ModelFile.encode(contents)
        let bitmap = Self.parametersStart(contents.model.architecture)
        let weightsAt = bitmap + 4 + (precision == .int8 ? 4 * 5 : 0)
        edit(&bytes, bitmap, weightsAt)
        return errorMessage { _ = try ModelFile.decode(Self.withChecksum(bytes), path: "p.model") }
    }

    @Test func modelFile_malformedSparse_isRefusedWithAReason() throws {
        let pastTheEnd = try Self.editedSparse(.fp32) { bytes, bitmap, _ in bytes[bitmap + 3] |= 0x80 }
        #expect(pastTheEnd.contains("p.model") && pastTheEnd.contains("bitmap of layer 1 marks weights past its 30"))
        let storedZero = try Self.editedSparse(.fp32) { bytes, _, weights in bytes.replaceSubrange(weights..<(weights + 4), with: [0, 0, 0, 0x80]) }
        #expect(storedZero.contains("layer 1 stores weight") && storedZero.contains("as zero"))
        let halfZero = try Self.editedSparse(.fp16) { bytes, _, weights in bytes.replaceSubrange(weights..<(weights + 2), with: [0, 0]) }
        #expect(halfZero.contains("as zero"))
        let int8Zero = try Self.editedSparse(.int8) { bytes, _, weights in bytes[weights] = 0 }
        #expect(int8Zero.contains("as zero"))
        // A softmax (one layer of 18 weights) with one more weight marked stored than it has
        // values: the file ends 4 bytes short of what its bitmap implies.
        let softmax = Model(architecture: try Architecture(inputCount: 6, classCount: 3), seed: 1)
        var bytes = ModelFile.encode(ModelFile.Contents(model: try Compression.pruned(softmax, fraction: 0.5).model,
                                                        normalizer: .identity(featureCount: 6),
                                                        storage: ModelFile.Storage(precision: .fp32, isSparse: true)))
        let bitmap = Self.parametersStart(softmax.architecture)
        let unset = try #require((0..<18).first { bytes[bitmap + $0 / 8] >> ($0 % 8) & 1 == 0 })
        bytes[bitmap + unset / 8] |= 1 << (unset % 8)
        #expect(errorMessage { _ = try ModelFile.decode(Self.withChecksum(bytes)) }.contains("truncated"))
    }

    @Test func modelFile_malformedInt8_isRefusedWithAReason() throws {
        let contents = try Self.contents(.int8)
        let scalesAt = Self.parametersStart(contents.model.architecture), weightsAt = scalesAt + 4 * 5
        func refusal(_ edit: (inout [UInt8]) -> Void) -> String {
            var bytes = ModelFile.encode(contents)
            edit(&bytes)
            return errorMessage { _ = try ModelFile.decode(Self.withChecksum(bytes), path: "q.model") }
        }
        let minimum = refusal { $0[weightsAt] = 0x80 }
        #expect(minimum.contains("q.model") && minimum.contains("-128"))
        for bad in [-1, Float.nan, .infinity] as [Float] {
            let message = refusal { bytes in withUnsafeBytes(of: bad.bitPattern.littleEndian) { bytes.replaceSubrange(scalesAt..<(scalesAt + 4), with: $0) } }
            #expect(message.contains("layer 1 row 0 has scale"), "\(bad): \(message)")
        }
        let zeroScale = refusal { $0.replaceSubrange(scalesAt..<(scalesAt + 4), with: [0, 0, 0, 0]) }
        #expect(zeroScale.contains("scale 0 but nonzero weights"))
        // A scale so large that the dequantized weights overflow.
        let huge = refusal { bytes in withUnsafeBytes(of: Float.greatestFiniteMagnitude.bitPattern.littleEndian) { bytes.replaceSubrange(scalesAt..<(scalesAt + 4), with: $0) } }
        #expect(huge.contains("non-finite parameter"))
    }

    @Test(arguments: storages)
    func modelFile_anyDamage_isRefusedOrDecodedNeverTrapped(storage: ModelFile.Storage) throws {
        let bytes = ModelFile.encode(try Self.contents(storage))
        for n in [0, 8, 20, bytes.count / 2, bytes.count - 5, bytes.count - 1] {
            #expect(throws: LearnerError.self) { try ModelFile.decode(Array(bytes.prefix(n))) }
        }
        #expect(errorMessage { _ = try ModelFile.decode(bytes + [0]) }.contains("unexpected bytes after the checksum"))
        for i in 0..<(bytes.count - 4) {
            for flip: UInt8 in [0x01, 0x80] {
                var damaged = bytes
                damaged[i] ^= flip
                #expect(throws: LearnerError.self) { try ModelFile.decode(damaged) }
                // With the checksum made right the damage reaches the other checks: a refusal or
                // other contents, and then contents that encode back to these very bytes.
                let fixed = Self.withChecksum(damaged)
                if let decoded = try? ModelFile.decode(fixed) { #expect(ModelFile.encode(decoded) == fixed) }
            }
        }
    }
}
