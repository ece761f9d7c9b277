import Foundation

/// How a model does on a labelled data set.
public struct Evaluation: Sendable, Equatable {
    public let sampleCount: Int
    /// Fraction of samples whose predicted class is the label.
    public let accuracy: Double
    /// Mean softmax cross-entropy.
    public let loss: Double
    /// confusion[label][predicted] = number of samples.
    public let confusion: [[Int]]

    /// Accuracy within each true class (nil for a class with no samples).
    public var perClassAccuracy: [Double?] {
        confusion.enumerated().map { c, row in
            let total = row.reduce(0, +)
            return total > 0 ? Double(row[c]) / Double(total) : nil
        }
    }

    /// The confusion matrix as an aligned table (rows: true class, columns: predicted), with
    /// per-class accuracy at the end of each row.
    public func confusionTable() -> String {
        let n = confusion.count
        let width = max(5, String(confusion.flatMap { $0 }.max() ?? 0).count + 1)
        func pad(_ s: String, _ w: Int = width) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
        let first = "true\\pred".count
        var out = pad("true\\pred", first) + (0..<n).map { pad(String($0)) }.joined() + "  accuracy\n"
        for (c, row) in confusion.enumerated() {
            let acc = perClassAccuracy[c].map { String(format: "%.3f", $0) } ?? "-"
            out += pad(String(c), first) + row.map { pad(String($0)) }.joined() + "  " + pad(acc, 8) + "\n"
        }
        return out
    }
}

extension Model {
    /// Rows evaluated per forward pass: big enough for efficient matrix products, small enough
    /// that the scratch space stays a few megabytes.
    static let inferenceBatch = 1024

    /// Class scores (softmax probabilities are not needed: argmax of logits) for every row of
    /// `features` (rows × inputCount), calling `body(row, logits)` in order.
    func forEachLogits(_ features: [Float], _ body: (Int, UnsafeBufferPointer<Float>) -> Void) throws {
        try features.withUnsafeBufferPointer { try forEachLogits($0, body) }
    }

    /// ``forEachLogits(_:_:)`` over rows in a buffer.
    func forEachLogits(_ features: UnsafeBufferPointer<Float>, _ body: (Int, UnsafeBufferPointer<Float>) -> Void) throws {
        let d = architecture.inputCount, k = architecture.classCount
        guard features.count % d == 0 else {
            throw LearnerError.shapeMismatch("\(features.count) values are not whole rows of \(d) features")
        }
        let rows = features.count / d
        var ws = Workspace(architecture: architecture, capacity: min(Self.inferenceBatch, max(rows, 1)))
        let lastOffset = ws.offsets[architecture.layerCount - 1]
        guard let base = features.baseAddress else { return }
        var start = 0
        while start < rows {
            let n = min(ws.capacity, rows - start)
            forward(base + start * d, rows: n, workspace: &ws)
            try ws.activations.withUnsafeBufferPointer { act in
                guard let a = act.baseAddress else { throw LearnerError.shapeMismatch("empty workspace") }
                for r in 0..<n { body(start + r, UnsafeBufferPointer(start: a + lastOffset + r * k, count: k)) }
            }
            start += n
        }
    }

    /// The predicted class of every row of `features` (rows × inputCount).
    public func predict(_ features: [Float]) throws -> [Int] {
        var out = [Int](repeating: 0, count: features.count / max(architecture.inputCount, 1))
        try forEachLogits(features) { r, z in out[r] = Self.argmax(z) }
        return out
    }

    static func argmax(_ z: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        for j in 1..<z.count where z[j] > z[best] { best = j }
        return best
    }

    /// Accuracy, loss and confusion matrix on `data`.
    public func evaluate(on data: Dataset) throws -> Evaluation {
        guard data.featureCount == architecture.inputCount, data.classCount <= architecture.classCount else {
            throw LearnerError.shapeMismatch("data has \(data.featureCount) features and \(data.classCount) classes; model \(architecture)")
        }
        var tally = EvaluationTally(classCount: architecture.classCount)
        try data.forEachRowChunk(Self.inferenceBatch) { start, rows in
            try forEachLogits(rows) { r, z in tally.add(logits: z, label: Int(data.labels[start + r])) }
        }
        return tally.evaluation
    }
}

/// An evaluation under way: each sample's logits and label go in one at a time.
struct EvaluationTally {
    private var confusion: [[Int]]
    private var samples = 0
    private var correct = 0
    private var loss = 0.0

    init(classCount: Int) { confusion = [[Int]](repeating: [Int](repeating: 0, count: classCount), count: classCount) }

    /// Counts one sample: its predicted class (argmax of `z`) against label `y`, and its
    /// cross-entropy, computed stably (the largest logit subtracted).
    mutating func add(logits z: UnsafeBufferPointer<Float>, label y: Int) {
        let p = Model.argmax(z)
        confusion[y][p] += 1
        if p == y { correct += 1 }
        samples += 1
        var sum: Float = 0
        for j in 0..<z.count { sum += expf(z[j] - z[p]) }
        loss += Double(logf(sum) - (z[y] - z[p]))
    }

    var evaluation: Evaluation {
        let n = Double(max(samples, 1))
        return Evaluation(sampleCount: samples, accuracy: Double(correct) / n, loss: loss / n, confusion: confusion)
    }
}

extension Model {
    /// Columns of the first layer's shared product in ``evaluate(_:on:)``: a few megabytes of
    /// stacked weights and outputs, wide enough for an efficient matrix product.
    static let stackedColumns = 1_024

    /// Evaluates many models of one architecture on `data` (a simulation's nodes on a test
    /// set): the first layers of a group of models are stacked into one matrix, so one wide
    /// product computes them for every model of the group, instead of one narrow product each
    /// (a softmax model has only 10 outputs); the later layers run per model. The results are
    /// those of ``evaluate(on:)`` up to the rounding of sums taken in another order.
    public static func evaluate(_ models: [Model], on data: Dataset) throws -> [Evaluation] {
        guard let architecture = models.first?.architecture else { return [] }
        guard models.allSatisfy({ $0.architecture == architecture }) else {
            throw LearnerError.shapeMismatch("models of different architectures cannot be evaluated together")
        }
        guard data.featureCount == architecture.inputCount, data.classCount <= architecture.classCount else {
            throw LearnerError.shapeMismatch("data has \(data.featureCount) features and \(data.classCount) classes; model \(architecture)")
        }
        let din = architecture.inputCount, width = architecture.layerSizes[1], k = architecture.classCount
        let group = max(1, min(models.count, stackedColumns / width))
        let chunk = min(256, max(1, data.count))
        var tallies = models.map { _ in EvaluationTally(classCount: architecture.classCount) }
        var stacked = [Float](repeating: 0, count: group * width * din)
        var bias = [Float](repeating: 0, count: group * width)
        var out = [Float](repeating: 0, count: chunk * group * width)
        var ws = Workspace(architecture: architecture, capacity: chunk)
        let lastOffset = ws.offsets[architecture.layerCount - 1]
        for first in stride(from: 0, to: models.count, by: group) {
            let members = min(group, models.count - first)
            let columns = members * width
            for i in 0..<members {
                models[first + i].parameters.withUnsafeBufferPointer { p in
                    stacked.replaceSubrange((i * width * din)..<((i + 1) * width * din), with: p[0..<(width * din)])
                    bias.replaceSubrange((i * width)..<((i + 1) * width), with: p[(width * din)..<(width * din + width)])
                }
            }
            data.forEachRowChunk(chunk) { start, x in
                guard let xBase = x.baseAddress else { return }
                let rows = x.count / din
                out.withUnsafeMutableBufferPointer { o in
                    stacked.withUnsafeBufferPointer { w in
                        bias.withUnsafeBufferPointer { b in
                            guard let oBase = o.baseAddress, let wBase = w.baseAddress, let bBase = b.baseAddress else { return }
                            for r in 0..<rows { (oBase + r * columns).update(from: bBase, count: columns) }
                            BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: columns, k: din,
                                      a: xBase, lda: din, b: wBase, ldb: din, beta: 1, c: oBase, ldc: columns)
                        }
                    }
                    guard let oBase = o.baseAddress else { return }
                    if architecture.layerCount == 1 {
                        for i in 0..<members {
                            for r in 0..<rows {
                                tallies[first + i].add(logits: UnsafeBufferPointer(start: oBase + r * columns + i * width, count: k),
                                                       label: Int(data.labels[start + r]))
                            }
                        }
                        return
                    }
                    for j in 0..<(rows * columns) where oBase[j] < 0 { oBase[j] = 0 }
                    for i in 0..<members {
                        models[first + i].forward(oBase + i * width, rows: rows, workspace: &ws, from: 1, stride: columns)
                        ws.activations.withUnsafeBufferPointer { act in
                            guard let a = act.baseAddress else { return }
                            for r in 0..<rows {
                                tallies[first + i].add(logits: UnsafeBufferPointer(start: a + lastOffset + r * k, count: k),
                                                       label: Int(data.labels[start + r]))
                            }
                        }
                    }
                }
            }
        }
        return tallies.map(\.evaluation)
    }
}
