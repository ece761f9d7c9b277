import DeterministicRandom
import CBLAS
import Foundation

/// The shape of a model: a stack of dense layers with ReLU between them and a softmax
/// cross-entropy head. No hidden layers is softmax (multinomial logistic) regression.
public struct Architecture: Hashable, Sendable, CustomStringConvertible {
    public let inputCount: Int
    public let hiddenSizes: [Int]
    public let classCount: Int

    /// The largest layer width accepted from a flag or a model file: far above any model this
    /// project trains, low enough that a hostile header cannot make us allocate gigabytes.
    public static let maxLayerWidth = 1 << 16
    /// The most hidden layers accepted, for the same reason.
    public static let maxHiddenLayers = 16

    public init(inputCount: Int, hiddenSizes: [Int] = [], classCount: Int) throws {
        let all = [inputCount] + hiddenSizes + [classCount]
        guard all.allSatisfy({ $0 >= 1 && $0 <= Self.maxLayerWidth }) else {
            throw LearnerError.invalidArgument("layer widths must be between 1 and \(Self.maxLayerWidth), got \(all)")
        }
        guard hiddenSizes.count <= Self.maxHiddenLayers else {
            throw LearnerError.invalidArgument("at most \(Self.maxHiddenLayers) hidden layers, got \(hiddenSizes.count)")
        }
        guard classCount >= 2 else { throw LearnerError.invalidArgument("a classifier needs at least 2 classes, got \(classCount)") }
        self.inputCount = inputCount
        self.hiddenSizes = hiddenSizes
        self.classCount = classCount
    }

    /// Parses `softmax` or `mlp:H1[,H2...]` for the given input and class counts.
    public static func parse(_ spec: String, inputCount: Int, classCount: Int) throws -> Architecture {
        if spec == "softmax" { return try Architecture(inputCount: inputCount, classCount: classCount) }
        if spec.hasPrefix("mlp:") {
            let widths = spec.dropFirst(4).split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
            if !widths.isEmpty, widths.allSatisfy({ $0 != nil }) {
                return try Architecture(inputCount: inputCount, hiddenSizes: widths.compactMap { $0 }, classCount: classCount)
            }
        }
        throw LearnerError.invalidArgument("model must be 'softmax' or 'mlp:H1[,H2...]' (e.g. mlp:128), got '\(spec)'")
    }

    /// `softmax` or `mlp:128,64`: the spelling `parse` accepts.
    public var name: String { hiddenSizes.isEmpty ? "softmax" : "mlp:" + hiddenSizes.map(String.init).joined(separator: ",") }

    /// Widths from input to output, e.g. [784, 128, 10].
    public var layerSizes: [Int] { [inputCount] + hiddenSizes + [classCount] }

    /// Number of dense layers.
    public var layerCount: Int { hiddenSizes.count + 1 }

    /// Where layer `l`'s weights (out×in, row-major) start in the flat parameter vector; its
    /// biases follow them.
    public func weightOffset(_ l: Int) -> Int {
        let sizes = layerSizes
        var offset = 0
        for i in 0..<l { offset += sizes[i + 1] * sizes[i] + sizes[i + 1] }
        return offset
    }

    /// The ranges of the flat vector holding weights (not biases): weight decay applies to these.
    public var weightRanges: [Range<Int>] {
        let sizes = layerSizes
        return (0..<layerCount).map { l in
            let start = weightOffset(l)
            return start..<(start + sizes[l + 1] * sizes[l])
        }
    }

    /// Length of the flat parameter vector.
    public var parameterCount: Int { weightOffset(layerCount) }

    public var description: String {
        "\(name) (\(layerSizes.map(String.init).joined(separator: "-")), \(parameterCount) parameters)"
    }
}

/// A classifier: its architecture and one flat parameter vector (per layer: weights out×in
/// row-major, then biases). The flat vector is what gossip averages and codecs compress.
public struct Model: Hashable, Sendable {
    public let architecture: Architecture
    /// All parameters in one vector; replace them through `load(flat:)`, which checks the shape.
    public internal(set) var parameters: [Float]

    /// A freshly initialised model: He-uniform weights before ReLU, Glorot-uniform for the
    /// output layer, zero biases. The same seed gives the same parameters.
    public init(architecture: Architecture, seed: UInt64) {
        self.architecture = architecture
        var rng = SplitMix64(seed: seed)
        var p = [Float](repeating: 0, count: architecture.parameterCount)
        let sizes = architecture.layerSizes
        for l in 0..<architecture.layerCount {
            let fanIn = Double(sizes[l]), fanOut = Double(sizes[l + 1])
            let isOutput = l == architecture.layerCount - 1
            let limit = isOutput ? (6 / (fanIn + fanOut)).squareRoot() : (6 / fanIn).squareRoot()
            let start = architecture.weightOffset(l)
            for i in start..<(start + sizes[l + 1] * sizes[l]) {
                p[i] = Float((rng.unitDouble() * 2 - 1) * limit)
            }
        }
        self.parameters = p
    }

    /// A model with the given parameters; throws if their count does not match or one is not finite.
    public init(architecture: Architecture, parameters: [Float]) throws {
        self.architecture = architecture
        self.parameters = []
        try load(flat: parameters)
    }

    /// The flat parameter vector (a copy-on-write view; cheap).
    public func flatten() -> [Float] { parameters }

    /// Replaces all parameters, refusing a vector of the wrong length or with NaN or infinity.
    public mutating func load(flat: [Float]) throws {
        guard flat.count == architecture.parameterCount else {
            throw LearnerError.shapeMismatch("\(architecture.name) has \(architecture.parameterCount) parameters, got \(flat.count)")
        }
        if !VectorMath.allFinite(flat), let bad = flat.firstIndex(where: { !$0.isFinite }) {
            throw LearnerError.invalidArgument("non-finite parameter: parameter \(bad) is \(flat[bad]) (a diverged run or a damaged file)")
        }
        parameters = flat
    }
}

/// Scratch buffers for forward and backward passes over batches of up to `capacity` rows,
/// allocated once and reused so a training step allocates nothing.
public struct Workspace: Sendable {
    let architecture: Architecture
    public private(set) var capacity: Int
    /// Outputs of every layer (after ReLU for hidden layers; logits for the last), row-major.
    var activations: [Float]
    /// Gradients of the loss with respect to every layer's pre-activation.
    var deltas: [Float]
    /// Where layer l's output starts in `activations` / `deltas` for the current capacity.
    var offsets: [Int]

    public init(architecture: Architecture, capacity: Int) {
        self.architecture = architecture
        self.capacity = max(1, capacity)
        let outs = architecture.layerSizes.dropFirst()
        var offsets: [Int] = []
        var total = 0
        for width in outs {
            offsets.append(total)
            total += width * self.capacity
        }
        self.offsets = offsets
        activations = [Float](repeating: 0, count: total)
        deltas = [Float](repeating: 0, count: total)
    }
}

extension Model {
    /// Forward pass over `rows` samples at `input` (rows × inputCount); leaves every layer's
    /// output in the workspace and returns nothing. Logits are the last layer's output.
    ///
    /// From `layer` > 0, `input` holds layer `layer`'s input instead (the previous layer's
    /// output after ReLU), rows `stride` floats apart, and the earlier layers are skipped.
    func forward(_ input: UnsafePointer<Float>, rows: Int, workspace ws: inout Workspace, from layer: Int = 0, stride: Int? = nil) {
        precondition(ws.architecture == architecture && rows <= ws.capacity, "workspace does not fit this batch")
        let sizes = architecture.layerSizes
        let offsets = ws.offsets
        parameters.withUnsafeBufferPointer { p in
            ws.activations.withUnsafeMutableBufferPointer { act in
                guard let pBase = p.baseAddress, let aBase = act.baseAddress else { return }
                for l in layer..<architecture.layerCount {
                    let din = sizes[l], dout = sizes[l + 1]
                    let w = pBase + architecture.weightOffset(l)
                    let b = w + din * dout
                    let out = aBase + offsets[l]
                    let inp = l == layer ? input : UnsafePointer(aBase + offsets[l - 1])
                    for r in 0..<rows {
                        (out + r * dout).update(from: b, count: dout)
                    }
                    BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: dout, k: din,
                              a: inp, lda: l == layer ? stride ?? din : din, b: w, ldb: din, beta: 1, c: out, ldc: dout)
                    if l < architecture.layerCount - 1 {
                        for i in 0..<(rows * dout) where out[i] < 0 { out[i] = 0 }
                    }
                }
            }
        }
    }

    /// Mean softmax cross-entropy of the batch and its gradient with respect to every
    /// parameter, written into `gradient` (length `parameterCount`). Labels must be in
    /// 0..<classCount (data loaders check this).
    @discardableResult
    func lossAndGradient(
        _ input: UnsafePointer<Float>, labels: UnsafePointer<Int32>, rows: Int,
        workspace ws: inout Workspace, gradient: UnsafeMutableBufferPointer<Float>
    ) -> Double {
        precondition(gradient.count == architecture.parameterCount, "gradient buffer has the wrong length")
        forward(input, rows: rows, workspace: &ws)
        let sizes = architecture.layerSizes
        let offsets = ws.offsets
        let last = architecture.layerCount - 1
        let classes = architecture.classCount
        var loss = 0.0
        ws.activations.withUnsafeBufferPointer { act in
            ws.deltas.withUnsafeMutableBufferPointer { del in
                guard let aBase = act.baseAddress, let dBase = del.baseAddress else { return }
                loss = softmaxCrossEntropy(
                    logits: aBase + offsets[last], labels: labels, rows: rows, classes: classes,
                    gradient: dBase + offsets[last])
            }
        }
        parameters.withUnsafeBufferPointer { p in
            ws.activations.withUnsafeBufferPointer { act in
                ws.deltas.withUnsafeMutableBufferPointer { del in
                    guard let pBase = p.baseAddress, let aBase = act.baseAddress, let dBase = del.baseAddress,
                          let gBase = gradient.baseAddress else { return }
                    for l in stride(from: last, through: 0, by: -1) {
                        let din = sizes[l], dout = sizes[l + 1]
                        let dz = dBase + offsets[l]
                        let inp = l == 0 ? input : aBase + offsets[l - 1]
                        let gw = gBase + architecture.weightOffset(l)
                        let gb = gw + din * dout
                        BLAS.gemm(transposeA: true, transposeB: false, m: dout, n: din, k: rows,
                                  a: dz, lda: dout, b: inp, ldb: din, beta: 0, c: gw, ldc: din)
                        gb.update(repeating: 0, count: dout)
                        for r in 0..<rows {
                            let row = dz + r * dout
                            for j in 0..<dout { gb[j] += row[j] }
                        }
                        if l > 0 {
                            let dprev = dBase + offsets[l - 1]
                            BLAS.gemm(transposeA: false, transposeB: false, m: rows, n: din, k: dout,
                                      a: dz, lda: dout, b: pBase + architecture.weightOffset(l), ldb: din,
                                      beta: 0, c: dprev, ldc: din)
                            for i in 0..<(rows * din) where inp[i] <= 0 { dprev[i] = 0 }
                        }
                    }
                }
            }
        }
        return loss
    }
}

/// Mean softmax cross-entropy over `rows` rows of logits, and its gradient with respect to the
/// logits ((softmax − one-hot) / rows) written to `gradient`. Computed stably (max subtracted).
func softmaxCrossEntropy(
    logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>, rows: Int, classes: Int,
    gradient: UnsafeMutablePointer<Float>
) -> Double {
    var total = 0.0
    let scale = 1 / Float(rows)
    for r in 0..<rows {
        let z = logits + r * classes
        let g = gradient + r * classes
        var m = z[0]
        for j in 1..<classes where z[j] > m { m = z[j] }
        var sum: Float = 0
        for j in 0..<classes {
            let e = expf(z[j] - m)
            g[j] = e
            sum += e
        }
        let y = Int(labels[r])
        total += Double(logf(sum) - (z[y] - m))
        let inv = scale / sum
        for j in 0..<classes { g[j] *= inv }
        g[y] -= scale
    }
    return total / Double(max(rows, 1))
}
