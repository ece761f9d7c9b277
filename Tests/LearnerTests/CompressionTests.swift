import Foundation
import Testing
@testable import Learner

/// Quantization, pruning and masked fine-tuning.
struct CompressionTests {
    init() { BLAS.setThreadCount(1) }

    /// An MLP 6-16-8-3 trained a little on the blobs, and the blobs it was trained on.
    static func trained() throws -> (Model, Dataset) {
        let data = try blobs(count: 300, seed: 3)
        let architecture = try Architecture(inputCount: 6, hiddenSizes: [16, 8], classCount: 3)
        var model = Model(architecture: architecture, seed: 2)
        var trainer = try Trainer(architecture: architecture, config: TrainerConfig(batchSize: 32, seed: 2))
        try trainer.train(&model, on: data, steps: 150)
        return (model, data)
    }

    @Test func int8_perRowScale_errorWithinHalfAStep() throws {
        let (model, _) = try Self.trained()
        let weights = Int8Weights(quantizing: model)
        let architecture = model.architecture
        for (l, layer) in architecture.layers.enumerated() {
            for o in 0..<layer.outputs {
                let row = (0..<layer.inputs).map { model.parameters[layer.weightOffset + o * layer.inputs + $0] }
                let values = (0..<layer.inputs).map { weights.values[layer.valueOffset + o * layer.inputs + $0] }
                let scale = weights.scales[architecture.firstUnit(ofLayer: l) + o]
                #expect(scale == (row.map(abs).max() ?? 0) / 127)
                #expect(values.map { abs(Int($0)) }.max() == 127, "every row uses the whole range")
                for (w, q) in zip(row, values) { #expect(abs(w - Float(q) * scale) <= scale / 2 * 1.0001) }
            }
        }
        let contents = Compression.converted(ModelFile.Contents(model: model, normalizer: .identity(featureCount: 6)), to: .int8)
        #expect(contents.int8Weights == weights)
        for range in architecture.weightRanges {
            for i in range { #expect(abs(contents.model.parameters[i] - model.parameters[i]) <= 0.5 * (weights.scales.max() ?? 0)) }
        }
        // Biases are kept exactly.
        for layer in architecture.layers {
            for o in 0..<layer.outputs { #expect(contents.model.parameters[layer.biasOffset + o] == model.parameters[layer.biasOffset + o]) }
        }
    }

    @Test func fp16_conversion_keepsHalfPrecision() throws {
        let (model, _) = try Self.trained()
        let contents = Compression.converted(ModelFile.Contents(model: model, normalizer: .identity(featureCount: 6)), to: .fp16)
        for (half, full) in zip(contents.model.parameters, model.parameters) {
            #expect(abs(half - full) <= max(abs(full) * 0x1p-11, 0x1p-25))
            #expect(Float(Float16(half)) == half)
        }
        #expect(contents.int8Weights == nil && contents.storage == .fp16)
    }

    @Test func prune_globalFraction_zeroesTheSmallestWeightsAndNoBias() throws {
        let (model, _) = try Self.trained()
        let architecture = model.architecture
        let (pruned, mask) = try Compression.pruned(model, fraction: 0.6)
        let expected = Int((0.6 * Double(architecture.weightCount)).rounded())
        #expect(mask.prunedCount == expected)
        #expect(abs(mask.sparsity - 0.6) < 0.01)
        var largestPruned: Float = 0, smallestKept = Float.infinity
        for range in architecture.weightRanges {
            for i in range {
                if mask.keeps[i] {
                    #expect(pruned.parameters[i] == model.parameters[i])
                    smallestKept = min(smallestKept, abs(model.parameters[i]))
                } else {
                    #expect(pruned.parameters[i] == 0)
                    largestPruned = max(largestPruned, abs(model.parameters[i]))
                }
            }
        }
        #expect(largestPruned <= smallestKept, "pruning is by magnitude across all layers")
        for layer in architecture.layers {
            for o in 0..<layer.outputs {
                #expect(mask.keeps[layer.biasOffset + o] && pruned.parameters[layer.biasOffset + o] == model.parameters[layer.biasOffset + o])
            }
        }
        #expect(mask == WeightMask(keepingNonzeroWeightsOf: pruned))
        #expect(try Compression.pruned(model, fraction: 0).model == model)
        for bad in [-0.1, 1, 1.5, .nan] {
            #expect(errorMessage { _ = try Compression.pruned(model, fraction: bad) }.contains("at least 0 and below 1"))
        }
    }

    @Test func fineTune_withMask_keepsPrunedWeightsAtZero() throws {
        let (model, data) = try Self.trained()
        let (pruned, mask) = try Compression.pruned(model, fraction: 0.7)
        var tuned = pruned
        try Compression.fineTune(&tuned, on: data, epochs: 2, config: TrainerConfig(batchSize: 32, seed: 4), mask: mask)
        for i in mask.keeps.indices where !mask.keeps[i] { #expect(tuned.parameters[i] == 0) }
        #expect(zip(tuned.parameters, pruned.parameters).contains { $0 != $1 }, "the kept weights trained")
        #expect(try tuned.evaluate(on: data).accuracy > 0.9)
        // Without the mask the same training revives pruned weights: the mask is what holds them.
        var unmasked = pruned
        try Compression.fineTune(&unmasked, on: data, epochs: 2, config: TrainerConfig(batchSize: 32, seed: 4), mask: nil)
        #expect(mask.keeps.indices.contains { !mask.keeps[$0] && unmasked.parameters[$0] != 0 })
        // A mask for another architecture is refused.
        let other = try Architecture(inputCount: 6, hiddenSizes: [4], classCount: 3)
        #expect(errorMessage { _ = try Trainer(architecture: other, mask: mask) }.contains("mask"))
    }

    @Test func prunedUnits_removeTheLeastImportantUnits_leavingAWorkingSmallerModel() throws {
        var (model, data) = try Self.trained()
        // Silence unit 3 of the first hidden layer: no incoming weights, no bias.
        let first = model.architecture.layers[0]
        for k in 0..<first.inputs { model.parameters[first.weightOffset + 3 * first.inputs + k] = 0 }
        model.parameters[first.biasOffset + 3] = 0
        let smaller = try Compression.prunedUnits(model, fraction: 0.25)
        #expect(smaller.architecture.hiddenSizes == [12, 6])
        #expect(smaller.architecture.inputCount == 6 && smaller.architecture.classCount == 3)
        // The silent unit was the first to go: no kept unit's incoming row is all zero.
        let kept = smaller.architecture.layers[0]
        for j in 0..<kept.outputs {
            #expect((0..<kept.inputs).contains { smaller.parameters[kept.weightOffset + j * kept.inputs + $0] != 0 })
        }
        let before = try model.evaluate(on: data).accuracy
        var tuned = smaller
        try Compression.fineTune(&tuned, on: data, epochs: 3, config: TrainerConfig(batchSize: 32, seed: 4), mask: nil)
        #expect(try tuned.evaluate(on: data).accuracy >= before - 0.02)
        // Removing nothing keeps the model exactly; a softmax has no units to remove.
        #expect(try Compression.prunedUnits(model, fraction: 0) == model)
        let softmax = Model(architecture: try Architecture(inputCount: 6, classCount: 3), seed: 1)
        #expect(errorMessage { _ = try Compression.prunedUnits(softmax, fraction: 0.5) }.contains("no hidden units"))
    }

    @Test func prunedUnits_keepTheFunctionOfTheUnitsKept() throws {
        let (model, data) = try Self.trained()
        // A unit whose outgoing weights are all zero changes nothing: removing it keeps every output.
        var silent = model
        let second = model.architecture.layers[1]
        for o in 0..<second.outputs { silent.parameters[second.weightOffset + o * second.inputs + 5] = 0 }
        let smaller = try Compression.prunedUnits(silent, fraction: 0.06)
        #expect(smaller.architecture.hiddenSizes == [15, 8])
        #expect(try smaller.predict(data.features) == silent.predict(data.features))
    }

    @Test func smallestLayout_isSparseOnlyWhenThatIsSmaller() throws {
        let (model, _) = try Self.trained()
        let contents = ModelFile.Contents(model: model, normalizer: .identity(featureCount: 6))
        for precision in ModelFile.Storage.Precision.allCases {
            let dense = Compression.withSmallestLayout(Compression.converted(contents, to: ModelFile.Storage(precision: precision)))
            #expect(!dense.storage.isSparse)
            var pruned = contents
            pruned.model = try Compression.pruned(model, fraction: 0.5).model
            let sparse = Compression.withSmallestLayout(Compression.converted(pruned, to: ModelFile.Storage(precision: precision)))
            #expect(sparse.storage.isSparse)
            var other = sparse
            other.storage.isSparse = false
            #expect(ModelFile.encode(sparse).count < ModelFile.encode(other).count)
        }
    }
}
