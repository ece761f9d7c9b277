import CInference
import Foundation

/// Inference with a model file's contents, for `peer predict`, `peer serve` and anything
/// deployed: applies the stored normaliser to raw features and answers each sample's class
/// and class probabilities.
///
/// fp32, fp16 and sparse models run in fp32: through BLAS (`sgemv` for one sample, `sgemm` for
/// a small batch) and through oneDNN's matmul for batches of ``OneDNN/minimumRows`` or more.
/// int8 models, dense or sparse, run the int8 path: activations quantized per sample, int8 ×
/// int8 products summed in Int32 (by ``Int8Kernel``, or by oneDNN for large batches: the same
/// sums to the bit), dequantized with the row scale times the activation scale. Immutable:
/// one predictor serves any number of threads at once, each call with scratch space of its own.
public final class Predictor: Sendable {
    public let architecture: Architecture
    /// How the model's file stores its parameters; int8 storage selects the int8 path.
    public let storage: ModelFile.Storage
    let normalizer: Normalizer
    let engine: Engine

    /// How the layers are computed; the oneDNN layers (nil where oneDNN is unavailable) serve
    /// large batches.
    enum Engine: Sendable {
        /// Dense fp32 through BLAS.
        case float(Model, [OneDNN.Layer]?)
        /// The int8 kernel, one prepared layer after another.
        case int8([Int8Layer], [OneDNN.Layer]?)

        var isInt8: Bool {
            if case .int8 = self { return true }
            return false
        }

        /// Samples per chunk of a `batch`: the int8 kernel's cache-sized chunk, unless oneDNN
        /// takes the batch (each of its calls costs about 10 µs, so it takes large chunks).
        func chunk(for batch: Int) -> Int {
            guard case .int8(_, let fast) = self else { return Predictor.floatChunk }
            return fast != nil && batch >= OneDNN.minimumRows ? Predictor.floatChunk : Predictor.int8Chunk
        }
    }

    /// Samples computed together: enough for efficient products, few enough that the scratch
    /// space of a call stays within the L2 cache for the int8 kernel (64 rows of 784 floats is
    /// 200 KB) and a few megabytes for BLAS and oneDNN.
    static let floatChunk = Model.inferenceBatch
    static let int8Chunk = 64

    public init(_ contents: ModelFile.Contents) {
        let model = contents.model
        architecture = model.architecture
        storage = contents.storage
        normalizer = contents.normalizer
        let architecture = model.architecture
        let last = architecture.layerCount - 1
        if contents.storage.precision == .int8 {
            let weights = contents.quantizedWeights
            let layers = (0..<architecture.layerCount).map { Int8Layer($0, of: weights, biasesFrom: model) }
            let fast = weights.values.withUnsafeBufferPointer { v in
                architecture.layers.map { layer in
                    v.baseAddress.flatMap { OneDNN.Layer(inputs: layer.inputs, outputs: layer.outputs, kind: .int8, weights: $0 + layer.valueOffset, bias: nil) }
                }
            }
            engine = .int8(layers, fast.contains { $0 == nil } ? nil : fast.compactMap { $0 })
        } else {
            let fast = model.parameters.withUnsafeBufferPointer { p in
                (0..<architecture.layerCount).map { l in
                    let layer = architecture.layers[l]
                    return p.baseAddress.flatMap { base in
                        OneDNN.Layer(inputs: layer.inputs, outputs: layer.outputs, kind: .float(relu: l < last),
                                     weights: base + architecture.weightOffset(l), bias: base + layer.biasOffset)
                    }
                }
            }
            engine = .float(model, fast.contains { $0 == nil } ? nil : fast.compactMap { $0 })
        }
    }

    /// The predicted class of every sample and its class probabilities (softmax of the
    /// logits). `features`: batch × inputs raw features, row-major, normalised here as the
    /// model file says. Returns batch classes and batch × classes probabilities, row-major.
    /// Throws on a wrong count, a non-finite feature, or a feature the normaliser takes beyond
    /// the float range.
    public func predict(_ features: [Float], batch: Int) throws -> (classes: [Int], probabilities: [Float]) {
        try checkBatch(features, batch: batch)
        let k = architecture.classCount
        var classes = [Int](repeating: 0, count: batch)
        var probabilities = [Float](repeating: 0, count: batch * k)
        try probabilities.withUnsafeMutableBufferPointer { buffer in
            guard let out = buffer.baseAddress else { return } // an empty batch
            try forEachChunk(features, batch: batch) { start, rows, logits in
                for r in 0..<rows {
                    let z = logits + r * k, p = out + (start + r) * k
                    var best = 0
                    for j in 1..<k where z[j] > z[best] { best = j }
                    classes[start + r] = best
                    var sum: Float = 0
                    for j in 0..<k {
                        p[j] = expf(z[j] - z[best])
                        sum += p[j]
                    }
                    for j in 0..<k { p[j] /= sum }
                }
            }
        }
        return (classes, probabilities)
    }

    /// Accuracy, loss and confusion matrix on labelled raw (not normalised) data, computed the
    /// way deployment computes them: through this predictor's path.
    public func evaluate(on data: Dataset) throws -> Evaluation {
        guard data.featureCount == architecture.inputCount, data.classCount <= architecture.classCount else {
            throw LearnerError.shapeMismatch("data has \(data.featureCount) features and \(data.classCount) classes; model \(architecture)")
        }
        var tally = EvaluationTally(classCount: architecture.classCount)
        try forEachChunk(data.features, batch: data.count) { start, rows, logits in
            for r in 0..<rows {
                tally.add(logits: UnsafeBufferPointer(start: logits + r * architecture.classCount, count: architecture.classCount),
                          label: Int(data.labels[start + r]))
            }
        }
        return tally.evaluation
    }

    /// Normalises `features` chunk by chunk, computes the logits and hands each chunk's
    /// (first sample, rows, rows × classes logits) to `body`.
    func forEachChunk(_ features: [Float], batch: Int,
                      _ body: (Int, Int, UnsafePointer<Float>) throws -> Void) throws {
        try checkBatch(features, batch: batch)
        guard batch > 0 else { return }
        let d = architecture.inputCount
        let chunk = min(batch, engine.chunk(for: batch))
        var scratch = Scratch(architecture: architecture, engine: engine, rows: chunk)
        defer { scratch.deallocate() }
        try features.withUnsafeBufferPointer { x in
            guard let base = x.baseAddress else { return }
            var start = 0
            while start < batch {
                let rows = min(chunk, batch - start)
                try normalize(base + start * d, rows: rows, into: scratch.input, firstSample: start)
                let logits = compute(rows: rows, &scratch)
                if let bad = (0..<(rows * architecture.classCount)).first(where: { !logits[$0].isFinite }) {
                    throw LearnerError.invalidArgument("the model's output for sample \(start + bad / architecture.classCount) is not finite: its inputs are beyond what the model can take")
                }
                try body(start, rows, logits)
                start += rows
            }
        }
    }

    func checkBatch(_ features: [Float], batch: Int) throws {
        let (expected, overflow) = batch.multipliedReportingOverflow(by: architecture.inputCount)
        guard batch >= 0, !overflow, features.count == expected else {
            throw LearnerError.shapeMismatch("\(features.count) feature values are not a batch of \(batch) samples of \(architecture.inputCount) features")
        }
    }

    /// (x − offset) · scale into `out`, as ``Normalizer/apply(to:featureCount:)`` computes it
    /// (CInference's pass, AVX2 where the CPU has it); throws on a value that is not finite
    /// before or after.
    func normalize(_ x: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>, firstSample: Int) throws {
        let d = architecture.inputCount
        let bad = normalizer.offsets.withUnsafeBufferPointer { ob in
            normalizer.scales.withUnsafeBufferPointer { sb in
                murmur_normalize(x, ob.baseAddress, sb.baseAddress, rows, d, out)
            }
        }
        guard bad >= 0 else { return }
        let r = bad / d, j = bad % d, value = x[bad]
        throw LearnerError.invalidArgument(value.isFinite
            ? "feature \(j) of sample \(firstSample + r) is \(value), beyond what the model's normalisation can take"
            : "feature \(j) of sample \(firstSample + r) is \(value); features must be finite numbers")
    }

    /// The logits of the `rows` normalised samples in `scratch.input`.
    func compute(rows: Int, _ scratch: inout Scratch) -> UnsafePointer<Float> {
        switch engine {
        case .float(let model, let fast):
            if rows == 1 { return singleSample(model, scratch) }
            if rows >= OneDNN.minimumRows, let fast, let logits = throughOneDNN(fast, rows: rows, scratch) { return logits }
            model.forward(scratch.input, rows: rows, workspace: &scratch.workspace)
            let offset = scratch.workspace.offsets[architecture.layerCount - 1], logits = scratch.logits
            scratch.workspace.activations.withUnsafeBufferPointer { act in
                if let base = act.baseAddress { logits.update(from: base + offset, count: rows * architecture.classCount) }
            }
            return UnsafePointer(logits)
        case .int8(let layers, let fast):
            var input = UnsafePointer(scratch.input)
            for (l, layer) in layers.enumerated() {
                let output = l % 2 == 0 ? scratch.even : scratch.odd
                if rows < OneDNN.minimumRows || !multiplyThroughOneDNN(input, layer, fast?[l], rows: rows, scratch, into: output) {
                    Int8Kernel.quantize(input, rows: rows, count: layer.inputs, into: scratch.quantized, stride: layer.stride,
                                        scales: scratch.activationScales)
                    Int8Kernel.multiply(layer, scratch.quantized, activationScales: scratch.activationScales, rows: rows, into: output)
                }
                input = UnsafePointer(output)
            }
            return input
        }
    }

    /// The logits of a batch through the oneDNN layers, nil if oneDNN failed.
    func throughOneDNN(_ layers: [OneDNN.Layer], rows: Int, _ scratch: Scratch) -> UnsafePointer<Float>? {
        var input = UnsafePointer(scratch.input)
        for (l, layer) in layers.enumerated() {
            let output = l % 2 == 0 ? scratch.even : scratch.odd
            guard layer.run(rows: rows, source: input, destination: output) else { return nil }
            input = UnsafePointer(output)
        }
        return input
    }

    /// One int8 layer through oneDNN: `input` quantized as ``Int8Kernel`` quantizes it, the
    /// sums computed by oneDNN and dequantized as ``Int8Kernel/multiply(_:_:activationScales:rows:into:)``
    /// does; false if oneDNN is not there or failed.
    func multiplyThroughOneDNN(_ input: UnsafePointer<Float>, _ layer: Int8Layer, _ fast: OneDNN.Layer?, rows: Int, _ scratch: Scratch,
                               into output: UnsafeMutablePointer<Float>) -> Bool {
        guard let fast else { return false }
        Int8Kernel.quantize(input, rows: rows, count: layer.inputs, into: scratch.quantizedBytes, stride: layer.inputs,
                            scales: scratch.activationScales)
        guard fast.run(rows: rows, source: scratch.quantizedBytes, destination: scratch.sums) else { return false }
        Int8Kernel.dequantize(scratch.sums, layer, activationScales: scratch.activationScales, rows: rows, into: output)
        return true
    }

    /// One sample through every layer with `sgemv`: no packing of the weights, which is most
    /// of what `sgemm` would spend on a single row.
    func singleSample(_ model: Model, _ scratch: Scratch) -> UnsafePointer<Float> {
        let sizes = architecture.layerSizes
        var input = UnsafePointer(scratch.input)
        model.parameters.withUnsafeBufferPointer { p in
            guard let base = p.baseAddress else { return }
            for l in 0..<architecture.layerCount {
                let din = sizes[l], dout = sizes[l + 1]
                let w = base + architecture.weightOffset(l)
                let output = l % 2 == 0 ? scratch.even : scratch.odd
                output.update(from: w + din * dout, count: dout)
                BLAS.gemv(m: dout, n: din, a: w, lda: din, x: input, beta: 1, y: output)
                if l < architecture.layerCount - 1 {
                    for i in 0..<dout where output[i] < 0 { output[i] = 0 }
                }
                input = UnsafePointer(output)
            }
        }
        return input
    }
}

/// A call's scratch space, allocated once per call and freed at its end.
struct Scratch {
    /// rows × inputs normalised features.
    let input: UnsafeMutablePointer<Float>
    /// Layer outputs, alternating: even layers write `even`, odd layers `odd`.
    let even: UnsafeMutablePointer<Float>
    let odd: UnsafeMutablePointer<Float>
    /// rows × classes logits copied out of the workspace (fp32 batches).
    let logits: UnsafeMutablePointer<Float>
    /// rows × the widest stride quantized activations, and one scale per row (int8 path).
    let quantized: UnsafeMutablePointer<Int16>
    let activationScales: UnsafeMutablePointer<Float>
    /// The quantized activations as bytes and their Int32 sums, rows × widest (int8 batches
    /// through oneDNN).
    let quantizedBytes: UnsafeMutablePointer<Int8>
    let sums: UnsafeMutablePointer<Int32>
    /// The forward pass's buffers for fp32 batches (empty otherwise).
    var workspace: Workspace

    init(architecture: Architecture, engine: Predictor.Engine, rows: Int) {
        let widest = architecture.layerSizes.max() ?? 1
        input = .allocate(capacity: rows * architecture.inputCount)
        even = .allocate(capacity: rows * widest)
        odd = .allocate(capacity: rows * widest)
        logits = .allocate(capacity: rows * architecture.classCount)
        let int8 = engine.isInt8
        let stride = (widest + Int8Kernel.lanes - 1) / Int8Kernel.lanes * Int8Kernel.lanes
        quantized = .allocate(capacity: int8 ? rows * stride : 0)
        activationScales = .allocate(capacity: rows)
        let bytes = int8 && rows >= OneDNN.minimumRows ? rows * widest : 0
        quantizedBytes = .allocate(capacity: bytes)
        sums = .allocate(capacity: bytes)
        workspace = Workspace(architecture: architecture, capacity: !int8 && rows > 1 ? rows : 1)
    }

    func deallocate() {
        for buffer in [input, even, odd, logits, activationScales] { buffer.deallocate() }
        quantized.deallocate()
        quantizedBytes.deallocate()
        sums.deallocate()
    }
}
