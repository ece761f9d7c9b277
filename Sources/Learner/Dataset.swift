import DeterministicRandom
import Foundation

/// Labelled samples: `count` rows of `featureCount` values, row-major, and one label in
/// 0..<classCount per row.
///
/// The values are kept as 32-bit floats, or, for data that comes as bytes (IDX images), as one
/// byte each with a per-feature affine map `value = byte · scale_j + shift_j`: four times less
/// memory, which matters on edge devices and for thousands of simulated peers. Normalising a
/// byte-backed set only changes its map, and training and evaluation turn rows into floats as
/// they read them (``gatherRows(_:into:)``, ``withFloatRows(_:_:)``). A ``view(_:)`` shows some
/// rows of another set without copying them: a simulation's thousands of peers share one
/// training set.
public struct Dataset: Sendable, Equatable {
    /// How the feature values are kept.
    enum Storage: Sendable, Equatable {
        case floats([Float])
        /// One byte per value; feature `j` of a row is `byte · scales[j] + shifts[j]`.
        case bytes([UInt8], scales: [Float], shifts: [Float])
    }

    private(set) var storage: Storage
    /// The storage rows this set shows, in order; nil for all of them (see ``view(_:)``).
    private var rowMap: [Int32]?
    public private(set) var labels: [Int32]
    public let featureCount: Int
    public let classCount: Int

    public var count: Int { labels.count }

    /// Checks that the buffers agree and every label is in range.
    public init(features: [Float], labels: [Int32], featureCount: Int, classCount: Int) throws {
        try self.init(checking: .floats(features), valueCount: features.count, labels: labels, featureCount: featureCount, classCount: classCount)
    }

    /// A byte-backed set whose values are the bytes themselves (as IDX images are), checked
    /// like ``init(features:labels:featureCount:classCount:)``.
    public init(bytes: [UInt8], labels: [Int32], featureCount: Int, classCount: Int) throws {
        let storage = Storage.bytes(bytes, scales: [Float](repeating: 1, count: max(featureCount, 0)), shifts: [Float](repeating: 0, count: max(featureCount, 0)))
        try self.init(checking: storage, valueCount: bytes.count, labels: labels, featureCount: featureCount, classCount: classCount)
    }

    private init(checking storage: Storage, valueCount: Int, labels: [Int32], featureCount: Int, classCount: Int) throws {
        guard featureCount >= 1, valueCount == labels.count * featureCount else {
            throw LearnerError.shapeMismatch("\(valueCount) feature values for \(labels.count) samples of \(featureCount) features")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || Int($0) >= classCount }) {
            throw LearnerError.shapeMismatch("label \(labels[bad]) of sample \(bad) is outside 0..<\(classCount)")
        }
        self.init(unchecked: storage, labels: labels, featureCount: featureCount, classCount: classCount)
    }

    init(unchecked storage: Storage, labels: [Int32], featureCount: Int, classCount: Int) {
        self.storage = storage
        self.labels = labels
        self.featureCount = featureCount
        self.classCount = classCount
    }

    init(unchecked features: [Float], labels: [Int32], featureCount: Int, classCount: Int) {
        self.init(unchecked: .floats(features), labels: labels, featureCount: featureCount, classCount: classCount)
    }

    /// Whether the values are kept as bytes (see the type's description).
    public var isByteBacked: Bool {
        if case .bytes = storage { return true }
        return false
    }

    /// Every value as a float, row-major. A byte-backed set builds this array anew on each
    /// call: training and evaluation read rows with ``gatherRows(_:into:)`` and
    /// ``withFloatRows(_:_:)`` instead.
    public var features: [Float] {
        switch storage {
        case .floats(let values) where rowMap == nil: return values
        case .floats, .bytes:
            return [Float](unsafeUninitializedCapacity: count * featureCount) { buffer, initialized in
                if let base = buffer.baseAddress { gatherRows(0..<count, into: base) }
                initialized = count * featureCount
            }
        }
    }

    /// Writes the rows at `indices`, in that order, as floats to `destination`
    /// (`indices.count × featureCount` values). Indices must be below ``count``.
    public func gatherRows<Indices: Collection<Int>>(_ indices: Indices, into destination: UnsafeMutablePointer<Float>) {
        gatherStored(rowMap.map { m in indices.map { Int(m[$0]) } } ?? Array(indices), into: destination)
    }

    /// ``gatherRows(_:into:)`` by storage row.
    private func gatherStored(_ indices: [Int], into destination: UnsafeMutablePointer<Float>) {
        let d = featureCount
        switch storage {
        case .floats(let values):
            values.withUnsafeBufferPointer { src in
                guard let s = src.baseAddress else { return }
                for (row, i) in indices.enumerated() { (destination + row * d).update(from: s + i * d, count: d) }
            }
        case let .bytes(bytes, scales, shifts):
            bytes.withUnsafeBufferPointer { src in
                scales.withUnsafeBufferPointer { a in
                    shifts.withUnsafeBufferPointer { c in
                        guard let s = src.baseAddress, let a = a.baseAddress, let c = c.baseAddress else { return }
                        for (row, i) in indices.enumerated() {
                            let from = s + i * d, to = destination + row * d
                            for j in 0..<d { to[j] = Float(from[j]) * a[j] + c[j] }
                        }
                    }
                }
            }
        }
    }

    /// Calls `body` with the rows of `range` as floats, row-major: the stored floats
    /// themselves, or, byte-backed, a converted copy of just those rows.
    public func withFloatRows<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        let d = featureCount
        switch storage {
        case .floats(let values) where rowMap == nil:
            return try values.withUnsafeBufferPointer { all in
                try body(UnsafeBufferPointer(rebasing: all[(range.lowerBound * d)..<(range.upperBound * d)]))
            }
        case .floats, .bytes:
            let rows = [Float](unsafeUninitializedCapacity: range.count * d) { buffer, initialized in
                if let base = buffer.baseAddress { gatherRows(range, into: base) }
                initialized = range.count * d
            }
            return try rows.withUnsafeBufferPointer(body)
        }
    }

    /// Calls `body(first row, rows as floats)` for consecutive chunks of at most `chunk` rows.
    public func forEachRowChunk(_ chunk: Int = 256, _ body: (Int, UnsafeBufferPointer<Float>) throws -> Void) rethrows {
        var start = 0
        while start < count {
            let end = min(count, start + max(1, chunk))
            try withFloatRows(start..<end) { try body(start, $0) }
            start = end
        }
    }

    public static func == (a: Dataset, b: Dataset) -> Bool {
        guard a.featureCount == b.featureCount, a.classCount == b.classCount, a.labels == b.labels else { return false }
        if a.storage == b.storage, a.rowMap == b.rowMap { return true }
        return a.features == b.features
    }

    /// Puts the rows in the order `order` (a permutation of 0..<count: row `i` becomes the old
    /// row `order[i]`), in place: with storage of its own the set moves its rows without a
    /// second copy of them.
    public mutating func permuteRows(_ order: [Int]) throws {
        guard order.count == count, Set(order).count == count, order.allSatisfy({ (0..<count).contains($0) }) else {
            throw LearnerError.invalidArgument("a row order must be a permutation of 0..<\(count)")
        }
        labels = order.map { labels[$0] }
        if let map = rowMap {
            rowMap = order.map { map[$0] }
            return
        }
        switch storage {
        case .floats(var values):
            storage = .floats([])
            Self.permute(&values, rowLength: featureCount, order: order)
            storage = .floats(values)
        case .bytes(var bytes, let scales, let shifts):
            storage = .floats([])
            Self.permute(&bytes, rowLength: featureCount, order: order)
            storage = .bytes(bytes, scales: scales, shifts: shifts)
        }
    }

    /// Moves rows of `values` along the cycles of `order`, one row of scratch at a time.
    private static func permute<T>(_ values: inout [T], rowLength d: Int, order: [Int]) {
        var placed = [Bool](repeating: false, count: order.count)
        values.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress, let first = buffer.first else { return }
            var held = [T](repeating: first, count: d)
            held.withUnsafeMutableBufferPointer { scratch in
                guard let t = scratch.baseAddress else { return }
                for start in 0..<order.count where !placed[start] {
                    // Row `start` is saved, then each row takes the one `order` names for it.
                    t.update(from: base + start * d, count: d)
                    var i = start
                    while true {
                        placed[i] = true
                        let from = order[i]
                        if from == start {
                            (base + i * d).update(from: t, count: d)
                            break
                        }
                        (base + i * d).update(from: base + from * d, count: d)
                        i = from
                    }
                }
            }
        }
    }

    /// The samples at `indices`, in that order, sharing this set's storage instead of copying
    /// it: what a simulation hands each of its peers. A view keeps the whole storage alive, so
    /// a program that keeps only a small part of a large set copies it with ``subset(_:)``.
    public func view(_ indices: [Int]) throws -> Dataset {
        if let bad = indices.first(where: { $0 < 0 || $0 >= count }) {
            throw LearnerError.shapeMismatch("sample index \(bad) is outside 0..<\(count)")
        }
        var view = self
        view.labels = indices.map { labels[$0] }
        view.rowMap = indices.map { i in rowMap.map { $0[i] } ?? Int32(truncatingIfNeeded: i) }
        return view
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

    /// The samples at `indices`, in that order (used by partitioners and splits); a
    /// byte-backed set stays byte-backed.
    public func subset(_ indices: [Int]) throws -> Dataset {
        if let bad = indices.first(where: { $0 < 0 || $0 >= count }) {
            throw LearnerError.shapeMismatch("sample index \(bad) is outside 0..<\(count)")
        }
        let d = featureCount
        let y = indices.map { labels[$0] }
        let stored = rowMap.map { m in indices.map { Int(m[$0]) } } ?? indices
        // Rows and labels come from a valid data set, so the invariants hold.
        switch storage {
        case .floats:
            let f = [Float](unsafeUninitializedCapacity: indices.count * d) { buffer, initialized in
                if let base = buffer.baseAddress { gatherStored(stored, into: base) }
                initialized = indices.count * d
            }
            return Dataset(unchecked: f, labels: y, featureCount: d, classCount: classCount)
        case let .bytes(bytes, scales, shifts):
            var picked = [UInt8](repeating: 0, count: indices.count * d)
            bytes.withUnsafeBufferPointer { src in
                picked.withUnsafeMutableBufferPointer { dst in
                    guard let s = src.baseAddress, let t = dst.baseAddress else { return }
                    for (row, i) in stored.enumerated() { (t + row * d).update(from: s + i * d, count: d) }
                }
            }
            return Dataset(unchecked: .bytes(picked, scales: scales, shifts: shifts), labels: y, featureCount: d, classCount: classCount)
        }
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

    /// Applies `normalizer` to every row in place (a byte-backed set changes only its map).
    public mutating func normalize(with normalizer: Normalizer) throws {
        switch storage {
        case .floats where rowMap != nil:
            // A view of floats gets rows of its own rather than changing its parent's.
            storage = .floats(features)
            rowMap = nil
            try normalize(with: normalizer)
        case .floats(var values):
            storage = .floats([])
            defer { storage = .floats(values) }
            try normalizer.apply(to: &values, featureCount: featureCount)
        case let .bytes(bytes, scales, shifts):
            guard featureCount == normalizer.offsets.count else {
                throw LearnerError.shapeMismatch("normaliser fitted on \(normalizer.offsets.count) features, data has \(featureCount)")
            }
            guard normalizer.kind != .none else { return }
            // (byte · a + c − o) · s = byte · (a · s) + (c − o) · s
            let o = normalizer.offsets, n = normalizer.scales
            storage = .bytes(bytes, scales: (0..<featureCount).map { scales[$0] * n[$0] },
                             shifts: (0..<featureCount).map { (shifts[$0] - o[$0]) * n[$0] })
        }
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
        switch kind {
        case .none:
            break
        case .minMax:
            var lo = [Float](repeating: .infinity, count: d)
            var hi = [Float](repeating: -.infinity, count: d)
            data.forEachRowChunk { _, x in
                for r in 0..<(x.count / d) {
                    let row = r * d
                    for j in 0..<d {
                        let v = x[row + j]
                        if v < lo[j] { lo[j] = v }
                        if v > hi[j] { hi[j] = v }
                    }
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
            data.forEachRowChunk { _, x in
                for r in 0..<(x.count / d) {
                    let row = r * d
                    for j in 0..<d {
                        let v = Double(x[row + j])
                        sum[j] += v
                        sumSq[j] += v * v
                    }
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
