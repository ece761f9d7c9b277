/// How a model file stores a model's parameters, and the two forms compressed parameters take
/// in memory: int8 weights with their row scales, and the mask of a pruned model.

extension ModelFile {
    /// How a model file stores the parameters: the precision of the values, and whether the
    /// weights that are zero (pruned) are left out.
    public struct Storage: Hashable, Sendable, CustomStringConvertible {
        /// The precision of the stored values.
        public enum Precision: UInt8, Sendable, CaseIterable, CustomStringConvertible {
            /// 4 bytes a value, exact.
            case fp32 = 0
            /// IEEE half precision for weights and biases: 2 bytes a value, relative error at most
            /// 2⁻¹¹; magnitudes beyond 65504 are clamped to it.
            case fp16 = 1
            /// 1 byte a weight, with one fp32 scale per output unit (weight = value × scale,
            /// scale = the row's largest magnitude / 127); biases stay fp32.
            case int8 = 2

            public var description: String {
                switch self {
                case .fp32: return "fp32"
                case .fp16: return "fp16"
                case .int8: return "int8"
                }
            }
        }

        public var precision: Precision
        /// Whether only the nonzero weights are stored, each layer's marked by a bitmap.
        public var isSparse: Bool

        public init(precision: Precision, isSparse: Bool = false) {
            self.precision = precision
            self.isSparse = isSparse
        }

        public static let fp32 = Storage(precision: .fp32)
        public static let fp16 = Storage(precision: .fp16)
        public static let int8 = Storage(precision: .int8)

        /// Added to the precision's code in the header when the storage is sparse.
        static let sparseFlag: UInt8 = 16

        /// The storage byte of the file header.
        var code: UInt8 { precision.rawValue | (isSparse ? Self.sparseFlag : 0) }

        /// The storage a header byte names, nil for an unknown one.
        init?(code: UInt8) {
            guard let precision = Precision(rawValue: code & ~Self.sparseFlag) else { return nil }
            self.init(precision: precision, isSparse: code & Self.sparseFlag != 0)
        }

        /// `fp32`, `fp16`, `int8`, or one of them after `sparse `.
        public var description: String { isSparse ? "sparse \(precision)" : "\(precision)" }
    }
}

/// Weights quantized to int8 with one fp32 scale per output unit, that is per row of each
/// layer's out × in weight matrix: weight ≈ value × scale, with scale = the row's largest
/// magnitude / 127, so every row uses the whole range −127…127 whatever its magnitude.
/// Biases are not quantized. This is what the int8 inference path multiplies.
public struct Int8Weights: Sendable, Equatable {
    public let architecture: Architecture
    /// Every layer's out × in weights, row-major, one layer after another (no biases).
    public let values: [Int8]
    /// One scale per output unit of every layer, one layer after another.
    public let scales: [Float]

    /// The weights of `model`, each row rounded to the nearest multiple of its scale.
    public init(quantizing model: Model) {
        let architecture = model.architecture
        var values = [Int8](repeating: 0, count: architecture.weightCount)
        var scales = [Float](repeating: 0, count: architecture.unitCount)
        model.parameters.withUnsafeBufferPointer { p in
            values.withUnsafeMutableBufferPointer { q in
                for (l, layer) in architecture.layers.enumerated() {
                    let unit = architecture.firstUnit(ofLayer: l)
                    for o in 0..<layer.outputs {
                        let start = layer.weightOffset + o * layer.inputs
                        let row = UnsafeBufferPointer(rebasing: p[start..<(start + layer.inputs)])
                        var largest: Float = 0
                        for w in row where abs(w) > largest { largest = abs(w) }
                        let scale = largest / 127
                        scales[unit + o] = scale
                        guard scale > 0 else { continue }
                        let out = layer.valueOffset + o * layer.inputs
                        for (j, w) in row.enumerated() { q[out + j] = Int8(min(max((w / scale).rounded(), -127), 127)) }
                    }
                }
            }
        }
        self.init(unchecked: architecture, values: values, scales: scales)
    }

    /// Values and scales already checked against `architecture` (a decoded file, a quantizer).
    init(unchecked architecture: Architecture, values: [Int8], scales: [Float]) {
        self.architecture = architecture
        self.values = values
        self.scales = scales
    }

    /// Weight i of the flat weight sequence (layers in order, no biases), dequantized, is
    /// `values[i] × scales[unit of i]`; this writes every weight so into `parameters` (the flat
    /// parameter vector, whose biases it leaves alone).
    func dequantize(into parameters: UnsafeMutableBufferPointer<Float>) {
        values.withUnsafeBufferPointer { q in
            for (l, layer) in architecture.layers.enumerated() {
                let unit = architecture.firstUnit(ofLayer: l)
                for o in 0..<layer.outputs {
                    let scale = scales[unit + o]
                    let from = layer.valueOffset + o * layer.inputs, to = layer.weightOffset + o * layer.inputs
                    for j in 0..<layer.inputs { parameters[to + j] = Float(q[from + j]) * scale }
                }
            }
        }
    }
}

/// Which weights of a pruned model are kept. Pruned weights are zero and stay zero through
/// fine-tuning (``Trainer`` applies the mask after every step); biases are never pruned.
public struct WeightMask: Sendable, Equatable {
    public let architecture: Architecture
    /// One flag per entry of the flat parameter vector, false where a weight is pruned; the
    /// entries of biases are always true.
    public let keeps: [Bool]

    /// Keeps the weights of `model` that are not zero.
    public init(keepingNonzeroWeightsOf model: Model) {
        var keeps = [Bool](repeating: true, count: model.architecture.parameterCount)
        for range in model.architecture.weightRanges {
            for i in range where model.parameters[i] == 0 { keeps[i] = false }
        }
        self.init(unchecked: model.architecture, keeps: keeps)
    }

    init(unchecked architecture: Architecture, keeps: [Bool]) {
        self.architecture = architecture
        self.keeps = keeps
    }

    /// How many weights are pruned.
    public var prunedCount: Int { keeps.reduce(0) { $0 + ($1 ? 0 : 1) } }

    /// The pruned share of the weights (biases not counted).
    public var sparsity: Double { Double(prunedCount) / Double(max(architecture.weightCount, 1)) }

    /// Sets the pruned weights of `model` (of this mask's architecture) to zero.
    public func apply(to model: inout Model) {
        precondition(model.architecture == architecture, "mask for \(architecture) applied to \(model.architecture)")
        keeps.withUnsafeBufferPointer { k in
            model.parameters.withUnsafeMutableBufferPointer { p in
                for i in 0..<p.count where !k[i] { p[i] = 0 }
            }
        }
    }
}

/// Where one dense layer's parts lie in the flat parameter vector and in the sequences that
/// hold weights only (``Int8Weights``).
struct LayerShape {
    let inputs: Int
    let outputs: Int
    /// Where the layer's out × in weights start in the flat parameter vector; biases follow.
    let weightOffset: Int
    /// Where its weights start in a sequence of weights without biases.
    let valueOffset: Int

    var weightCount: Int { inputs * outputs }
    var biasOffset: Int { weightOffset + weightCount }
}

extension Architecture {
    /// Every layer's shape and offsets, input layer first.
    var layers: [LayerShape] {
        let sizes = layerSizes
        var shapes: [LayerShape] = []
        var offset = 0, valueOffset = 0
        for l in 0..<layerCount {
            let shape = LayerShape(inputs: sizes[l], outputs: sizes[l + 1], weightOffset: offset, valueOffset: valueOffset)
            shapes.append(shape)
            offset += shape.weightCount + shape.outputs
            valueOffset += shape.weightCount
        }
        return shapes
    }

    /// How many weights (not biases) the model has.
    public var weightCount: Int { layers.reduce(0) { $0 + $1.weightCount } }

    /// How many output units all layers have together (one bias, and one int8 scale, each).
    var unitCount: Int { layerSizes.dropFirst().reduce(0, +) }

    /// The index of layer `l`'s first output unit among all layers' units.
    func firstUnit(ofLayer l: Int) -> Int { layerSizes.dropFirst().prefix(l).reduce(0, +) }
}
