import ArgumentParser
import Foundation
import Learner

/// `peer train`: centralized training of a model on one data set, saved to a model file.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model on a data set (no network) and save it.",
        discussion: """
        DATA is `fashion-mnist` (Debian's copy in /usr/share/datasets/fashion-mnist), `mnist:DIR`, \
        an IDX prefix P (P-images-idx3-ubyte[.gz], P-labels-idx1-ubyte[.gz]) or a CSV file \
        (a label column plus numeric features, header optional). Without a test set of its own, \
        --test or --test-fraction provides one.
        """
    )

    @Option(help: "Data set: fashion-mnist, mnist:DIR, an IDX prefix or a CSV file.")
    var data: String
    @Option(help: "Model: softmax or mlp:H1[,H2...] (e.g. mlp:128).")
    var model: String
    @Option(help: "Passes over the training set.")
    var epochs: Int
    @Option(help: "Mini-batch size.")
    var batch: Int = TrainerConfig().batchSize
    @Option(help: "Learning rate.")
    var lr: Float = SGDConfig().learningRate
    @Option(help: "Momentum.")
    var momentum: Float = SGDConfig().momentum
    @Option(name: .customLong("weight-decay"), help: "L2 penalty on weights.")
    var weightDecay: Float = SGDConfig().weightDecay
    @Option(help: "Learning-rate schedule: cosine (to 1% over the run), constant or step:EPOCHS:FACTOR.")
    var schedule: String = "cosine"
    @Option(help: "Seed for initialisation, shuffling and splits.")
    var seed: UInt64 = 1
    @Option(help: "Input normalisation fitted on the training set: standardize, minmax or none.")
    var normalize: String = "standardize"
    @Option(help: "Test data (same forms as --data) when DATA has no test set.")
    var test: String?
    @Option(name: .customLong("test-fraction"), help: "Hold out this fraction of DATA for testing when there is no test set.")
    var testFraction: Double = 0.2
    @Option(name: .customLong("label-column"), help: "CSV label column, counted from 0 (default: a 'label' header, else 0).")
    var labelColumn: Int?
    @Option(help: "OpenBLAS threads; more than 1 can be faster on an idle machine but is not bit-for-bit reproducible.")
    var threads: Int = 1
    @Flag(help: "Show a progress bar on stderr even when it is not a terminal.")
    var progress = false
    @Option(help: "Where to write the model file.")
    var out: String

    func run() throws {
        do {
            try train()
        } catch let error as LearnerError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }

    func train() throws {
        guard epochs >= 1 else { throw LearnerError.invalidArgument("--epochs must be at least 1") }
        let outDirectory = (out as NSString).deletingLastPathComponent
        guard access(outDirectory.isEmpty ? "." : outDirectory, W_OK) == 0 else {
            throw LearnerError.io(path: out, reason: "its directory does not exist or is not writable")
        }
        let normalizerKind = try Normalizer.Kind(name: normalize)
        let source = try DataSource.resolve(data)
        var (trainSet, testSet) = try source.load(labelColumn: labelColumn)
        if let test {
            let loaded = try DataSource.resolve(test).load(labelColumn: labelColumn, classCount: trainSet.classCount)
            testSet = loaded.train
        } else if testSet == nil {
            let parts = try trainSet.split(holdOut: testFraction, seed: seed)
            (trainSet, testSet) = (parts.train, parts.test)
        }
        guard var testSet else { throw LearnerError.invalidArgument("no test set") }
        let normalizer = Normalizer.fit(normalizerKind, on: trainSet)
        try trainSet.normalize(with: normalizer)
        try testSet.normalize(with: normalizer)
        let classes = max(trainSet.classCount, testSet.classCount)
        let architecture = try Architecture.parse(model, inputCount: trainSet.featureCount, classCount: classes)

        var config = TrainerConfig(batchSize: batch, seed: seed)
        config.sgd = SGDConfig(learningRate: lr, momentum: momentum, weightDecay: weightDecay)
        let stepsPerEpoch = (trainSet.count + batch - 1) / max(batch, 1)
        config.sgd.schedule = try Self.parseSchedule(schedule, stepsPerEpoch: stepsPerEpoch, epochs: epochs)
        var trainer = try Trainer(architecture: architecture, config: config)
        BLAS.setThreadCount(threads)

        var net = Model(architecture: architecture, seed: seed)
        print("training \(architecture) on \(trainSet.count) samples, testing on \(testSet.count); batch \(batch), lr \(lr), momentum \(momentum), seed \(seed)")
        var bar = ProgressBar(enabled: progress || isatty(STDERR_FILENO) == 1)
        let started = Date()
        var evaluation = try net.evaluate(on: testSet)
        for e in 1...epochs {
            let epochStart = Date()
            bar.start()
            let stats = try trainer.trainEpoch(&net, on: trainSet) { done, total in
                bar.update(label: "epoch \(e)/\(epochs)", done: done, total: total)
            }
            bar.finish()
            evaluation = try net.evaluate(on: testSet)
            print(String(format: "epoch %d/%d  loss %.4f  test accuracy %.4f  test loss %.4f  (%.1f s)",
                         e, epochs, stats.meanLoss, evaluation.accuracy, evaluation.loss, Date().timeIntervalSince(epochStart)))
        }
        try ModelFile.write(ModelFile.Contents(model: net, normalizer: normalizer), to: out)
        print(String(format: "test accuracy %.4f after %d epochs in %.1f s; model written to %@",
                     evaluation.accuracy, epochs, Date().timeIntervalSince(started), out))
    }

    /// `constant`, `cosine` or `step:EPOCHS:FACTOR`, converted to optimizer steps.
    static func parseSchedule(_ spec: String, stepsPerEpoch: Int, epochs: Int) throws -> LearningRateSchedule {
        let parts = spec.split(separator: ":").map(String.init)
        switch parts.first {
        case "constant" where parts.count == 1:
            return .constant
        case "cosine" where parts.count == 1:
            return .cosine(totalSteps: stepsPerEpoch * epochs, floor: 0.01)
        case "step" where parts.count == 3:
            if let every = Int(parts[1]), every >= 1, let factor = Float(parts[2]), factor > 0, factor <= 1 {
                return .step(every: every * stepsPerEpoch, factor: factor)
            }
        default:
            break
        }
        throw LearnerError.invalidArgument("--schedule must be constant, cosine or step:EPOCHS:FACTOR (e.g. step:3:0.5), got '\(spec)'")
    }
}

/// A one-line progress bar on stderr, redrawn in place, with the time left in the epoch.
struct ProgressBar {
    let enabled: Bool
    private var started = Date()
    /// Cells in the bar: fits an 80-column terminal with the label and figures beside it.
    static let width = 30

    init(enabled: Bool) { self.enabled = enabled }

    mutating func start() { started = Date() }

    func update(label: String, done: Int, total: Int) {
        guard enabled, total > 0 else { return }
        // Redraw about 100 times per epoch at most, so the terminal is not the bottleneck.
        guard done == total || done % max(1, total / 100) == 0 else { return }
        let filled = Self.width * done / total
        let line = "\r\(label) [" + String(repeating: "#", count: filled) + String(repeating: "-", count: Self.width - filled)
            + "] \(100 * done / total)%"
            + String(format: "  %.1f s left", Date().timeIntervalSince(started) * Double(total - done) / Double(done))
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
