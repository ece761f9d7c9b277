import Foundation

/// Compression for deployment: post-training quantization (fp16, or int8 with one scale per
/// output unit) and global magnitude pruning.
public enum Compression {
    /// `contents` as a file of `storage` holds it: `model`'s values rounded to what the storage
    /// keeps (fp16 values; for int8 the dequantized weights, with the int8 weights kept for the
    /// int8 inference path), so the contents equal what decoding the file gives. Int8 weights
    /// that contents already hold are kept as they are, not quantized twice.
    public static func converted(_ contents: ModelFile.Contents, to storage: ModelFile.Storage) -> ModelFile.Contents {
        var parameters = contents.model.parameters
        var int8: Int8Weights?
        switch storage.precision {
        case .fp32:
            break
        case .fp16:
            for i in parameters.indices { parameters[i] = Float(Float16(bitPattern: ModelFile.half(parameters[i]))) }
        case .int8:
            let weights = contents.quantizedWeights
            parameters.withUnsafeMutableBufferPointer { weights.dequantize(into: $0) }
            int8 = weights
        }
        // Rounded or dequantized values of finite parameters are finite: no check needed.
        var model = contents.model
        model.parameters = parameters
        return ModelFile.Contents(model: model, normalizer: contents.normalizer, storage: storage, int8Weights: int8)
    }

    /// `contents` stored sparse when leaving out its zero weights makes the file smaller, dense
    /// otherwise. A bitmap costs one bit per weight and each weight left out saves a value, so
    /// sparse pays off above 1/32 of the weights zero for fp32, 1/16 for fp16 and 1/8 for int8.
    /// `contents` must hold what its precision keeps (``converted(_:to:)``).
    public static func withSmallestLayout(_ contents: ModelFile.Contents) -> ModelFile.Contents {
        let architecture = contents.model.architecture
        let size = ModelFile.valueSize(contents.storage.precision)
        var zeros = 0
        for range in architecture.weightRanges {
            for i in range where contents.model.parameters[i] == 0 { zeros += 1 }
        }
        let bitmapBytes = architecture.layers.reduce(0) { $0 + ($1.weightCount + 7) / 8 }
        var result = contents
        result.storage.isSparse = bitmapBytes < zeros * size
        return result
    }

    /// Global unstructured magnitude pruning: the `fraction` of all weights, every layer's
    /// together, with the smallest magnitudes set to zero (ties broken by position); biases are
    /// never pruned. Weights that are zero already count among the pruned. Returns the pruned
    /// model and the mask that keeps it so through fine-tuning.
    public static func pruned(_ model: Model, fraction: Double) throws -> (model: Model, mask: WeightMask) {
        try checkFraction(fraction)
        let architecture = model.architecture
        let ranges = architecture.weightRanges
        let weights = ranges.flatMap { model.parameters[$0] }
        let prunedCount = Int((fraction * Double(weights.count)).rounded())
        var keepsWeight = [Bool](repeating: false, count: weights.count)
        for i in TopKCodec.largestIndices(weights, weights.count - prunedCount) { keepsWeight[i] = true }
        var keeps = [Bool](repeating: true, count: architecture.parameterCount)
        var next = 0
        for range in ranges {
            for i in range {
                keeps[i] = keepsWeight[next]
                next += 1
            }
        }
        let mask = WeightMask(unchecked: architecture, keeps: keeps)
        var result = model
        mask.apply(to: &result)
        return (result, mask)
    }

    static func checkFraction(_ fraction: Double) throws {
        guard fraction >= 0, fraction < 1 else {
            throw LearnerError.invalidArgument("the pruned fraction must be at least 0 and below 1, got \(fraction)")
        }
    }
}
