import DeterministicRandom
import Foundation

/// How the learning rate changes with the optimizer's step count.
public enum LearningRateSchedule: Hashable, Sendable {
    /// The base rate throughout.
    case constant
    /// Multiply the rate by `factor` every `every` steps.
    case step(every: Int, factor: Float)
    /// Cosine decay from the base rate to `floor` × base over `totalSteps`, then stay there.
    case cosine(totalSteps: Int, floor: Float)

    /// The rate at `step` (counted from 0) for base rate `base`.
    public func rate(base: Float, step: Int) -> Float {
        switch self {
        case .constant:
            return base
        case let .step(every, factor):
            return base * powf(factor, Float(step / max(1, every)))
        case let .cosine(totalSteps, floor):
            let t = min(1, Double(step) / Double(max(1, totalSteps)))
            return base * (floor + (1 - floor) * Float(0.5 * (1 + cos(Double.pi * t))))
        }
    }
}

/// Mini-batch SGD settings. Defaults suit the image classifiers here (inputs standardised).
public struct SGDConfig: Hashable, Sendable {
    /// Base learning rate; 0.01 with momentum 0.9 trains the MLPs here stably on standardised
    /// inputs at batch 64 (0.05 already makes the Fashion-MNIST MLP's loss jump about).
    public var learningRate: Float = 0.01
    /// Heavy-ball momentum; 0.9 is the usual choice and averages out mini-batch noise.
    public var momentum: Float = 0.9
    /// L2 penalty on weights (not biases); small, it only curbs overfitting in long runs.
    public var weightDecay: Float = 1e-4
    public var schedule: LearningRateSchedule = .constant

    public init(learningRate: Float = 0.01, momentum: Float = 0.9, weightDecay: Float = 1e-4, schedule: LearningRateSchedule = .constant) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.schedule = schedule
    }
}

/// The optimizer's own state, kept apart from the model: a gossip node can replace the model's
/// parameters with an average and keep its momentum and step count.
public struct SGDState: Hashable, Sendable {
    public var step: Int = 0
    /// The momentum, one value per parameter; empty while it is all zeros (an optimizer without
    /// momentum never keeps one, so a thousand simulated nodes do not hold a model's worth of zeros each).
    public var velocity: [Float]

    public init(parameterCount: Int) { velocity = [Float](repeating: 0, count: parameterCount) }

    /// A state with no momentum yet, at step 0.
    public init() { velocity = [] }
}

/// Mini-batch SGD with momentum (v ← μv + g + λw; w ← w − ηv), weight decay and a schedule.
public struct SGD: Sendable {
    public var config: SGDConfig
    public var state: SGDState

    public init(config: SGDConfig, parameterCount: Int) {
        self.config = config
        self.state = config.momentum > 0 ? SGDState(parameterCount: parameterCount) : SGDState()
    }

    /// The rate the next step will use.
    public var currentLearningRate: Float { config.schedule.rate(base: config.learningRate, step: state.step) }

    /// Applies one update to `model` from `gradient` (same length as its parameters).
    public mutating func apply(_ gradient: UnsafeBufferPointer<Float>, to model: inout Model) throws {
        guard gradient.count == model.parameters.count && (state.velocity.isEmpty || state.velocity.count == gradient.count) else {
            throw LearnerError.shapeMismatch("optimizer state (\(state.velocity.count)), gradient (\(gradient.count)) and model (\(model.parameters.count)) disagree in length")
        }
        let lr = currentLearningRate, mu = config.momentum, wd = config.weightDecay
        let weightRanges = model.architecture.weightRanges
        guard mu != 0 || !state.velocity.isEmpty else {
            // No momentum kept: the update v = g + λw of the loop below, without storing v.
            model.parameters.withUnsafeMutableBufferPointer { w in
                // Weight ranges come in layer order, biases between them.
                var next = 0
                for range in wd == 0 ? [] : weightRanges {
                    for i in next..<range.lowerBound { w[i] -= lr * gradient[i] }
                    for i in range { w[i] -= lr * (gradient[i] + wd * w[i]) }
                    next = range.upperBound
                }
                for i in next..<w.count { w[i] -= lr * gradient[i] }
            }
            state.step += 1
            return
        }
        if state.velocity.isEmpty { state.velocity = [Float](repeating: 0, count: gradient.count) }
        model.parameters.withUnsafeMutableBufferPointer { w in
            state.velocity.withUnsafeMutableBufferPointer { v in
                for i in 0..<w.count { v[i] = mu * v[i] + gradient[i] }
                if wd != 0 {
                    for range in weightRanges {
                        for i in range { v[i] += wd * w[i] }
                    }
                }
                for i in 0..<w.count { w[i] -= lr * v[i] }
            }
        }
        state.step += 1
    }
}

/// Settings for a `Trainer`.
public struct TrainerConfig: Hashable, Sendable {
    /// Samples per step; 64 gives good accuracy per epoch on Fashion-MNIST at little cost.
    public var batchSize: Int = 64
    public var sgd: SGDConfig = SGDConfig()
    /// Seeds the order in which samples are visited. The same seed gives the same parameters
    /// bit for bit when OpenBLAS runs one thread, which the program sets once
    /// (``BLAS/setThreadCount(_:)``); a trainer never changes it.
    public var seed: UInt64 = 1

    public init(batchSize: Int = 64, sgd: SGDConfig = SGDConfig(), seed: UInt64 = 1) {
        self.batchSize = batchSize
        self.sgd = sgd
        self.seed = seed
    }
}

/// What one pass over the data produced.
public struct EpochStats: Sendable {
    public var steps: Int
    public var samples: Int
    /// Mean training loss over the epoch's batches, weighted by batch size.
    public var meanLoss: Double
}

/// Trains a model value on a data set, one mini-batch at a time.
///
/// The trainer owns the visiting order, the optimizer state and scratch buffers, never the
/// model: `step(&model, on:)` can be interleaved with anything that replaces the model's
/// parameters (gossip averaging) between steps.
public struct Trainer: Sendable {
    public let config: TrainerConfig
    public private(set) var optimizer: SGD
    public let architecture: Architecture
    /// The weights of a pruned model that stay zero: set to zero again after every step, so
    /// fine-tuning never revives them. Nil trains every weight.
    public let mask: WeightMask?
    private var rng: SplitMix64
    /// The current pass's sample order and how far into it the steps are (tests read both).
    private(set) var order: [Int] = []
    private(set) var cursor = 0

    public init(architecture: Architecture, config: TrainerConfig = TrainerConfig(), mask: WeightMask? = nil) throws {
        guard config.batchSize >= 1 && config.batchSize <= 1 << 16 else {
            throw LearnerError.invalidArgument("batch size must be between 1 and 65536, got \(config.batchSize)")
        }
        guard config.sgd.learningRate > 0, config.sgd.learningRate.isFinite else {
            throw LearnerError.invalidArgument("learning rate must be positive, got \(config.sgd.learningRate)")
        }
        guard (0..<1).contains(config.sgd.momentum), config.sgd.weightDecay >= 0 else {
            throw LearnerError.invalidArgument("momentum must be in [0, 1) and weight decay non-negative")
        }
        if let mask, mask.architecture != architecture {
            throw LearnerError.shapeMismatch("a mask for \(mask.architecture) cannot train \(architecture)")
        }
        self.config = config
        self.architecture = architecture
        self.mask = mask
        optimizer = SGD(config: config.sgd, parameterCount: architecture.parameterCount)
        rng = SplitMix64(seed: config.seed)
    }

    /// Resumes the optimizer from a checkpoint of its state (step count and momentum), taken
    /// from a trainer of the same architecture.
    public mutating func restore(_ state: SGDState) throws {
        guard state.velocity.isEmpty || state.velocity.count == architecture.parameterCount else {
            throw LearnerError.shapeMismatch("optimizer state of \(state.velocity.count) parameters, the model has \(architecture.parameterCount)")
        }
        guard state.step >= 0, state.velocity.allSatisfy(\.isFinite) else {
            throw LearnerError.invalidArgument("optimizer state with a negative step or non-finite momentum")
        }
        optimizer.state = state
    }

    /// Number of steps in one pass over `data` (the last batch may be short).
    public func stepsPerEpoch(_ data: Dataset) -> Int { (data.count + config.batchSize - 1) / config.batchSize }

    func checkShape(_ model: Model, _ data: Dataset) throws {
        guard model.architecture == architecture else {
            throw LearnerError.shapeMismatch("trainer built for \(architecture), model is \(model.architecture)")
        }
        guard data.featureCount == architecture.inputCount, data.classCount <= architecture.classCount, data.count > 0 else {
            throw LearnerError.shapeMismatch("data has \(data.count) samples of \(data.featureCount) features and \(data.classCount) classes; model \(architecture)")
        }
    }

    /// One SGD step on the next mini-batch of `data` (reshuffled with the seed at each epoch);
    /// returns the batch's mean loss. Steps continue across epoch boundaries.
    @discardableResult
    public mutating func step(_ model: inout Model, on data: Dataset) throws -> Double {
        try TrainingScratch.borrowing(architecture: architecture, batchSize: config.batchSize) { try step(&model, on: data, scratch: $0) }
    }

    private mutating func step(_ model: inout Model, on data: Dataset, scratch: TrainingScratch) throws -> Double {
        try checkShape(model, data)
        if order.count != data.count || cursor >= order.count {
            if order.count != data.count { order = Array(0..<data.count) }
            rng.shuffle(&order)
            cursor = 0
        }
        let rows = min(config.batchSize, order.count - cursor)
        let batch = order[cursor..<(cursor + rows)]
        scratch.batchFeatures.withUnsafeMutableBufferPointer { dst in
            if let t = dst.baseAddress { data.gatherRows(batch, into: t) }
        }
        for (r, i) in batch.enumerated() { scratch.batchLabels[r] = data.labels[i] }
        cursor += rows
        return try applyBatch(&model, rows: rows, scratch: scratch)
    }

    /// One SGD step on an explicit batch (rows × inputCount features and their labels).
    @discardableResult
    public mutating func step(_ model: inout Model, features: [Float], labels: [Int32]) throws -> Double {
        let rows = labels.count
        guard rows >= 1, rows <= config.batchSize, features.count == rows * architecture.inputCount,
              model.architecture == architecture else {
            throw LearnerError.shapeMismatch("a batch of \(rows) labels and \(features.count) values does not fit \(architecture) with batch size \(config.batchSize)")
        }
        if let bad = labels.first(where: { $0 < 0 || Int($0) >= architecture.classCount }) {
            throw LearnerError.shapeMismatch("label \(bad) is outside 0..<\(architecture.classCount)")
        }
        return try TrainingScratch.borrowing(architecture: architecture, batchSize: config.batchSize) { scratch in
            scratch.batchFeatures.replaceSubrange(0..<features.count, with: features)
            scratch.batchLabels.replaceSubrange(0..<rows, with: labels)
            return try applyBatch(&model, rows: rows, scratch: scratch)
        }
    }

    private mutating func applyBatch(_ model: inout Model, rows: Int, scratch: TrainingScratch) throws -> Double {
        var loss = 0.0
        scratch.batchFeatures.withUnsafeBufferPointer { x in
            scratch.batchLabels.withUnsafeBufferPointer { y in
                scratch.gradient.withUnsafeMutableBufferPointer { g in
                    guard let xb = x.baseAddress, let yb = y.baseAddress else { return }
                    loss = model.lossAndGradient(xb, labels: yb, rows: rows, workspace: &scratch.workspace, gradient: g)
                }
            }
        }
        // A non-finite loss means training has diverged: refuse this update rather than spread NaN.
        guard loss.isFinite else {
            throw LearnerError.invalidArgument("training diverged (loss \(loss)) at step \(optimizer.state.step); lower the learning rate")
        }
        try scratch.gradient.withUnsafeBufferPointer { try optimizer.apply($0, to: &model) }
        mask?.apply(to: &model)
        return loss
    }

    /// `steps` SGD steps; returns the mean batch loss.
    @discardableResult
    public mutating func train(_ model: inout Model, on data: Dataset, steps: Int) throws -> Double {
        try TrainingScratch.borrowing(architecture: architecture, batchSize: config.batchSize) { scratch in
            var total = 0.0
            for _ in 0..<steps { total += try step(&model, on: data, scratch: scratch) }
            return steps > 0 ? total / Double(steps) : 0
        }
    }

    /// One pass over `data` from a fresh shuffle. `progress` is told after each step how many
    /// of the epoch's steps are done.
    @discardableResult
    public mutating func trainEpoch(_ model: inout Model, on data: Dataset, progress: (Int, Int) -> Void = { _, _ in }) throws -> EpochStats {
        try checkShape(model, data)
        if order.count == data.count && cursor > 0 && cursor < order.count { cursor = order.count } // start a fresh pass
        let steps = stepsPerEpoch(data)
        var weighted = 0.0
        var samples = 0
        try TrainingScratch.borrowing(architecture: architecture, batchSize: config.batchSize) { scratch in
            for s in 0..<steps {
                let rows = min(config.batchSize, data.count - samples)
                weighted += try step(&model, on: data, scratch: scratch) * Double(rows)
                samples += rows
                progress(s + 1, steps)
            }
        }
        return EpochStats(steps: steps, samples: samples, meanLoss: weighted / Double(max(samples, 1)))
    }
}

/// The scratch buffers of training steps (a batch, its activations and the gradient),
/// borrowed for a step or a run of steps from a pool the process's trainers share: a trainer
/// holds none between rounds, so a thousand simulated nodes' trainers cost the buffers of the
/// few that run at once, and a step still allocates nothing.
final class TrainingScratch: @unchecked Sendable {
    // Used by one thread at a time: the borrower, between borrowing and giving back.
    var workspace: Workspace
    var gradient: [Float]
    var batchFeatures: [Float]
    var batchLabels: [Int32]

    private init(architecture: Architecture, batchSize: Int) {
        workspace = Workspace(architecture: architecture, capacity: batchSize)
        gradient = [Float](repeating: 0, count: architecture.parameterCount)
        batchFeatures = [Float](repeating: 0, count: batchSize * architecture.inputCount)
        batchLabels = [Int32](repeating: 0, count: batchSize)
    }

    private struct Shape: Hashable {
        var architecture: Architecture
        var batchSize: Int
    }

    /// Scratch kept per shape, beyond which returned scratch is freed: more than the threads
    /// that train at once anywhere in the project.
    private static let kept = max(8, 2 * ProcessInfo.processInfo.activeProcessorCount)
    private static let lock = NSLock()
    nonisolated(unsafe) private static var free: [Shape: [TrainingScratch]] = [:]

    /// Runs `body` with scratch for `architecture` and `batchSize`, from the pool or new.
    static func borrowing<R>(architecture: Architecture, batchSize: Int, _ body: (TrainingScratch) throws -> R) rethrows -> R {
        let shape = Shape(architecture: architecture, batchSize: batchSize)
        let scratch = lock.withLock { free[shape]?.popLast() } ?? TrainingScratch(architecture: architecture, batchSize: batchSize)
        defer {
            lock.withLock {
                if free[shape, default: []].count < kept { free[shape, default: []].append(scratch) }
            }
        }
        return try body(scratch)
    }
}
