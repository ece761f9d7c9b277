import DeterministicRandom
import Foundation

/// Labelled samples: `count` rows of `featureCount` floats in one contiguous row-major buffer,
/// and one label in 0..<classCount per row.
public struct Dataset: Sendable, Equatable {
    public private(set) var features: [Float]
    public private(set) var labels: [Int32]
    public let featureCount: Int
    public let classCount: Int

    public var count: Int { labels.count }

    /// Checks that the buffers agree and every label is in range.
    public init(features: [Float], labels: [Int32], featureCount: Int, classCount: Int) throws {
        guard featureCount >= 1, features.count == labels.count * featureCount else {
            throw LearnerError.shapeMismatch("\(features.count) feature values for \(labels.count) samples of \(featureCount) features")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= classCount }) {
            throw LearnerError.shapeMismatch("label \(labels[bad]) of sample \(bad) is outside 0..<\(classCount)")
        }
        self.features = features
        self.labels = labels
        self.featureCount = featureCount
        self.classCount = classCount
    }

    /// Synthetic data for quick experiments and tests: `count` samples in `featureCount`
    /// dimensions, one Gaussian blob (standard deviation 0.7) per class, sample `i` of class
    /// `i % classCount`, whose features `j` with `j % classCount` equal to the class are centred
    /// at 2 and the others at 0. Drawn from `seed`.
    public static func gaussianBlobs(count: Int, featureCount: Int = 6, classCount: Int = 3, seed: UInt64) throws -> Dataset {
        var rng = SplitMix64(seed: seed)
        var x: [Float] = []
        x.reserveCapacity(count * featureCount)
        var y: [Int32] = []
        y.reserveCapacity(count)
        for i in 0..<count {
            let c = i % classCount
            y.append(Int32(c))
            for j in 0..<featureCount { x.append(Float(rng.normal() * 0.7 + (j % classCount == c ? 2 : 0))) }
        }
        return try Dataset(features: x, labels: y, featureCount: featureCount, classCount: classCount)
    }

    /// The samples at `indices`, in that order (used by partitioners and splits).
    public func subset(_ indices: [Int]) throws -> Dataset {
        if let bad = indices.first(where: { $0 < 0 || $0 >= count }) {
            throw LearnerError.shapeMismatch("sample index \(bad) is outside 0..<\(count)")
        }
        var f = [Float](repeating: 0, count: indices.count * featureCount)
        var y = [Int32](repeating: 0, count: indices.count)
        features.withUnsafeBufferPointer { src in
            f.withUnsafeMutableBufferPointer { dst in
                guard let s = src.baseAddress, let d = dst.baseAddress else { return }
                for (row, i) in indices.enumerated() {
                    (d + row * featureCount).update(from: s + i * featureCount, count: featureCount)
                    y[row] = labels[i]
                }
            }
        }
        // Rows and labels come from a valid data set, so the invariants hold.
        return Dataset(unchecked: f, labels: y, featureCount: featureCount, classCount: classCount)
    }

    init(unchecked features: [Float], labels: [Int32], featureCount: Int, classCount: Int) {
        self.features = features
        self.labels = labels
        self.featureCount = featureCount
        self.classCount = classCount
    }

    /// A deterministic split: a `fraction` of the samples (shuffled with `seed`) become the
    /// second set, the rest the first.
    public func split(holdOut fraction: Double, seed: UInt64) throws -> (train: Dataset, test: Dataset) {
        guard fraction > 0, fraction < 1 else { throw LearnerError.invalidArgument("test fraction must be in (0, 1), got \(fraction)") }
        var order = Array(0..<count)
        var rng = SplitMix64(seed: seed)
        rng.shuffle(&order)
        let testCount = Int((Double(count) * fraction).rounded())
        guard testCount >= 1, testCount < count else {
            throw LearnerError.invalidArgument("a test fraction of \(fraction) of \(count) samples leaves one side empty")
        }
        return (try subset(Array(order[testCount...])), try subset(Array(order[..<testCount])))
    }

    /// How many samples of each class.
    public var classHistogram: [Int] {
        var h = [Int](repeating: 0, count: classCount)
        for y in labels { h[Int(y)] += 1 }
        return h
    }

    /// Applies `normalizer` to every row in place.
    public mutating func normalize(with normalizer: Normalizer) throws {
        try normalizer.apply(to: &features, featureCount: featureCount)
    }
}

/// Per-feature affine normalisation x' = (x − offset) · scale, fitted on training data and
/// stored in model files so inference sees the same inputs as training.
public struct Normalizer: Sendable, Equatable {
    public enum Kind: UInt8, Sendable, CaseIterable {
        /// Leave features as they are.
        case none = 0
        /// Map each feature's training range to [0, 1].
        case minMax = 1
        /// Zero mean and unit variance per feature.
        case standardize = 2

        public init(name: String) throws {
            switch name {
            case "none": self = .none
            case "minmax": self = .minMax
            case "standardize": self = .standardize
            default: throw LearnerError.invalidArgument("normalisation must be none, minmax or standardize, got '\(name)'")
            }
        }
    }

    /// A feature whose training spread is below this is constant: it is centred, not scaled,
    /// so that a dead pixel does not blow up to huge values on the test set.
    public static let minimumSpread: Float = 1e-6

    public let kind: Kind
    public let offsets: [Float]
    public let scales: [Float]

    public init(kind: Kind, offsets: [Float], scales: [Float]) throws {
        guard offsets.count == scales.count else { throw LearnerError.shapeMismatch("normaliser offsets and scales differ in length") }
        guard (offsets + scales).allSatisfy(\.isFinite) else { throw LearnerError.shapeMismatch("normaliser holds non-finite values") }
        self.kind = kind
        self.offsets = offsets
        self.scales = scales
    }

    /// Maps every feature's range [low, high] to [0, 1], the same on every peer (pixels:
    /// 0 to 255), so peers that average their models see their inputs alike.
    public static func range(low: Float, high: Float, featureCount: Int) throws -> Normalizer {
        guard low.isFinite, high.isFinite, high - low > minimumSpread else {
            throw LearnerError.invalidArgument("a normalisation range needs LOW below HIGH, both finite, got \(low) and \(high)")
        }
        return Normalizer(unchecked: .minMax, offsets: [Float](repeating: low, count: featureCount),
                          scales: [Float](repeating: 1 / (high - low), count: featureCount))
    }

    /// Whether `other` scales every feature as this one does, to `tolerance`: offsets within
    /// `tolerance` of one unit of the scaled feature, scales within `tolerance` relative.
    public func isClose(to other: Normalizer, tolerance: Float) -> Bool {
        guard kind == other.kind, offsets.count == other.offsets.count else { return false }
        for j in offsets.indices {
            let scale = max(abs(scales[j]), Normalizer.minimumSpread)
            guard abs(offsets[j] - other.offsets[j]) * scale <= tolerance,
                  abs(scales[j] - other.scales[j]) <= tolerance * scale else { return false }
        }
        return true
    }

    /// The identity for `featureCount` features.
    public static func identity(featureCount: Int) -> Normalizer {
        Normalizer(unchecked: .none, offsets: [Float](repeating: 0, count: featureCount), scales: [Float](repeating: 1, count: featureCount))
    }

    init(unchecked kind: Kind, offsets: [Float], scales: [Float]) {
        self.kind = kind
        self.offsets = offsets
        self.scales = scales
    }

    /// Fits per-feature statistics on `data` (use the training set only).
    public static func fit(_ kind: Kind, on data: Dataset) -> Normalizer {
        let d = data.featureCount
        guard kind != .none, data.count > 0 else { return .identity(featureCount: d) }
        var offsets = [Float](repeating: 0, count: d)
        var scales = [Float](repeating: 1, count: d)
        data.features.withUnsafeBufferPointer { x in
            switch kind {
            case .none:
                break
            case .minMax:
                var lo = [Float](repeating: .infinity, count: d)
                var hi = [Float](repeating: -.infinity, count: d)
                for r in 0..<data.count {
                    let row = r * d
                    for j in 0..<d {
                        let v = x[row + j]
                        if v < lo[j] { lo[j] = v }
                        if v > hi[j] { hi[j] = v }
                    }
                }
                for j in 0..<d {
                    offsets[j] = lo[j]
                    let spread = hi[j] - lo[j]
                    scales[j] = spread > minimumSpread ? 1 / spread : 1
                }
            case .standardize:
                var sum = [Double](repeating: 0, count: d)
                var sumSq = [Double](repeating: 0, count: d)
                for r in 0..<data.count {
                    let row = r * d
                    for j in 0..<d {
                        let v = Double(x[row + j])
                        sum[j] += v
                        sumSq[j] += v * v
                    }
                }
                let n = Double(data.count)
                for j in 0..<d {
                    let mean = sum[j] / n
                    let sd = max(0, sumSq[j] / n - mean * mean).squareRoot()
                    offsets[j] = Float(mean)
                    scales[j] = Float(sd) > minimumSpread ? Float(1 / sd) : 1
                }
            }
        }
        return Normalizer(unchecked: kind, offsets: offsets, scales: scales)
    }

    /// Normalises rows of `featureCount` values in place.
    public func apply(to features: inout [Float], featureCount: Int) throws {
        guard featureCount == offsets.count else {
            throw LearnerError.shapeMismatch("normaliser fitted on \(offsets.count) features, data has \(featureCount)")
        }
        guard kind != .none else { return }
        offsets.withUnsafeBufferPointer { o in
            scales.withUnsafeBufferPointer { s in
                features.withUnsafeMutableBufferPointer { x in
                    let rows = x.count / max(featureCount, 1)
                    for r in 0..<rows {
                        let row = r * featureCount
                        for j in 0..<featureCount { x[row + j] = (x[row + j] - o[j]) * s[j] }
                    }
                }
            }
        }
    }
}
