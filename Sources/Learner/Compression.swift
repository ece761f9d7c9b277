import Foundation

/// Compression for deployment: post-training quantization (fp16, or int8 with one scale per
/// output unit), magnitude pruning (global and unstructured, or of whole hidden units) and
/// fine-tuning that keeps pruned weights at zero. `peer compress` applies them in the order
/// that loses least: prune, fine-tune, then quantize.
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

    /// Structured pruning: removes the `fraction` of every hidden layer's units (rounded, at
    /// least one unit kept) that matter least, and returns the smaller dense model.
    ///
    /// A unit's importance is ‖(incoming weights, bias)‖₂ · ‖outgoing weights‖₂. ReLU is
    /// positively homogeneous: scaling a unit's incoming weights and bias by c > 0 and its
    /// outgoing weights by 1/c leaves the network's function unchanged, and so does this
    /// product, whereas a sum of the two norms would rank the same function's units differently.
    /// The product is also an upper bound on how much the unit can move the next layer's
    /// pre-activations per unit of input norm.
    public static func prunedUnits(_ model: Model, fraction: Double) throws -> Model {
        try checkFraction(fraction)
        let architecture = model.architecture
        guard !architecture.hiddenSizes.isEmpty else {
            throw LearnerError.invalidArgument("\(architecture.name) has no hidden units to remove; structured pruning needs an MLP")
        }
        let layers = architecture.layers
        let p = model.parameters
        // kept[h]: the units of hidden layer h that stay, in their order.
        var kept: [[Int]] = []
        for h in architecture.hiddenSizes.indices {
            let into = layers[h], outOf = layers[h + 1]
            let importance = (0..<into.outputs).map { j -> Double in
                var incoming = Double(p[into.biasOffset + j]).squared
                for k in 0..<into.inputs { incoming += Double(p[into.weightOffset + j * into.inputs + k]).squared }
                var outgoing = 0.0
                for o in 0..<outOf.outputs { outgoing += Double(p[outOf.weightOffset + o * outOf.inputs + j]).squared }
                return (incoming * outgoing).squareRoot()
            }
            let removed = min(Int((fraction * Double(into.outputs)).rounded()), into.outputs - 1)
            // Most important first; of equally important units the earlier stays.
            let byImportance = importance.indices.sorted { importance[$0] != importance[$1] ? importance[$0] > importance[$1] : $0 < $1 }
            kept.append(byImportance.prefix(into.outputs - removed).sorted())
        }
        let smaller = try Architecture(inputCount: architecture.inputCount, hiddenSizes: kept.map(\.count), classCount: architecture.classCount)
        var parameters: [Float] = []
        parameters.reserveCapacity(smaller.parameterCount)
        for (l, layer) in layers.enumerated() {
            let rows = l < kept.count ? kept[l] : Array(0..<layer.outputs)
            let columns = l > 0 ? kept[l - 1] : Array(0..<layer.inputs)
            for j in rows {
                for k in columns { parameters.append(p[layer.weightOffset + j * layer.inputs + k]) }
            }
            for j in rows { parameters.append(p[layer.biasOffset + j]) }
        }
        return try Model(architecture: smaller, parameters: parameters)
    }

    /// Trains `model` on `data` (normalised as the model expects) for `epochs` passes, holding
    /// the weights `mask` prunes at zero; `afterEpoch` hears each epoch's number, figures and
    /// the model it left.
    public static func fineTune(
        _ model: inout Model, on data: Dataset, epochs: Int, config: TrainerConfig, mask: WeightMask?,
        afterEpoch: (Int, EpochStats, Model) throws -> Void = { _, _, _ in }
    ) throws {
        guard epochs >= 1 else { throw LearnerError.invalidArgument("fine-tuning needs at least 1 epoch, got \(epochs)") }
        var trainer = try Trainer(architecture: model.architecture, config: config, mask: mask)
        for epoch in 1...epochs {
            let stats = try trainer.trainEpoch(&model, on: data)
            try afterEpoch(epoch, stats, model)
        }
    }

    static func checkFraction(_ fraction: Double) throws {
        guard fraction >= 0, fraction < 1 else {
            throw LearnerError.invalidArgument("the pruned fraction must be at least 0 and below 1, got \(fraction)")
        }
    }
}

extension Double {
    fileprivate var squared: Double { self * self }
}
