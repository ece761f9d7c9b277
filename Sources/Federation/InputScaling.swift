import Learner

/// How a learning node's inputs are scaled, the same way on every peer: averaging models whose
/// peers scaled their inputs differently would be meaningless.
public enum InputScaling: Sendable, Equatable {
    /// A fixed normaliser every peer uses (`minmax:LOW:HIGH`, `none`); the node's data and test
    /// set come already scaled by it.
    case fixed(Normalizer)
    /// Standardisation by the network's per-feature mean and variance. Each peer's mean and
    /// mean square of every feature ride along in the averaged vector, weighted by its sample
    /// count like the model, so push-sum agrees on the whole network's moments exactly, under
    /// loss, for late joiners too. The node's data and test set come raw.
    case agreed
}

/// Where the parts of a learning node's averaged vector lie: the model's parameters, then,
/// with agreed scaling, the mean and the mean square of every feature.
public struct AveragedLayout: Sendable, Equatable {
    /// Block codecs keep one scale per this many values (int8): the moments start on such a
    /// boundary, so a block never mixes parameters (about 0.1) with squared inputs (up to 10⁴
    /// for pixels).
    public static let alignment = 256

    public let parameters: Int
    /// Features whose moments ride along: 0 with fixed scaling.
    public let features: Int
    public let momentsOffset: Int
    /// Elements of the averaged vector.
    public var dimension: Int { momentsOffset + 2 * features }

    public init(architecture: Architecture, scaling: InputScaling) {
        parameters = architecture.parameterCount
        if case .agreed = scaling {
            features = architecture.inputCount
            momentsOffset = (parameters + Self.alignment - 1) / Self.alignment * Self.alignment
        } else {
            features = 0
            momentsOffset = parameters
        }
    }

    /// The layout of a vector of moments alone: what a peer whose model travels by copies
    /// (gossip learning, D-PSGD) averages by push-sum to agree on the scaling.
    public init(momentsOf features: Int) {
        parameters = 0
        self.features = features
        momentsOffset = 0
    }

    /// The per-feature mean and mean square of `data`, as they ride in the vector.
    public static func moments(of data: Dataset) -> [Float] {
        let d = data.featureCount, n = data.count
        var sum = [Double](repeating: 0, count: d), squares = [Double](repeating: 0, count: d)
        data.forEachRowChunk { _, x in
            for r in 0..<(x.count / d) {
                for j in 0..<d {
                    let v = Double(x[r * d + j])
                    sum[j] += v
                    squares[j] += v * v
                }
            }
        }
        let scale = 1 / Double(max(n, 1))
        return sum.map { Float($0 * scale) } + squares.map { Float($0 * scale) }
    }

    /// The vector a node adds as its own mass: `parameters`, padding, then `moments`.
    public func vector(parameters values: [Float], moments: [Float]) -> [Float] {
        var out = values
        guard features > 0 else { return out }
        out += [Float](repeating: 0, count: momentsOffset - parameters)
        out += moments
        return out
    }

    /// The model's parameters in an estimate.
    public func parameters(of estimate: [Double]) -> [Float] { estimate.prefix(parameters).map { Float($0) } }

    /// A training step's change of the parameters as a change of the whole vector.
    public func change(ofParameters change: [Float]) -> [Float] {
        features == 0 ? change : change + [Float](repeating: 0, count: dimension - parameters)
    }

    /// The standardisation the moments in `estimate` describe (nil without moments).
    public func normalizer(of estimate: [Double]) -> Normalizer? {
        guard features > 0, estimate.count == dimension else { return nil }
        var offsets = [Float](repeating: 0, count: features), scales = [Float](repeating: 1, count: features)
        for j in 0..<features {
            let mean = estimate[momentsOffset + j], square = estimate[momentsOffset + features + j]
            let deviation = max(0, square - mean * mean).squareRoot()
            offsets[j] = Float(mean)
            scales[j] = Float(deviation) > Normalizer.minimumSpread ? Float(1 / deviation) : 1
        }
        return try? Normalizer(kind: .standardize, offsets: offsets, scales: scales)
    }
}

/// A node's training data as the current scaling sees it. With agreed scaling the raw data is
/// scaled again only when the network's moments have moved by more than
/// ``ScaledTrainingData/tolerance`` (they settle within seconds).
struct ScaledTrainingData: Sendable {
    /// How far the scaling may drift before the data is scaled anew: a thousandth of a
    /// feature's unit.
    static var tolerance: Float { 1e-3 }

    /// Scaled with fixed scaling, raw with agreed scaling.
    let data: Dataset
    private var scaled: (normalizer: Normalizer, data: Dataset)?

    init(_ data: Dataset) { self.data = data }

    /// The data scaled by `normalizer` (with agreed scaling; nil: the data as given), and
    /// whether it was scaled anew for this call.
    mutating func scaled(by normalizer: Normalizer?) -> (data: Dataset, changed: Bool) {
        guard let normalizer else { return (data, false) }
        if let scaled, scaled.normalizer.isClose(to: normalizer, tolerance: Self.tolerance) { return (scaled.data, false) }
        var copy = data
        guard (try? copy.normalize(with: normalizer)) != nil else { return (data, false) }
        scaled = (normalizer, copy)
        return (copy, true)
    }
}
