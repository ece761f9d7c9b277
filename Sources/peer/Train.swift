import ArgumentParser
import CommandSupport
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

    @Option(name: .customLong("init-model"), help: "Fine-tune this model file (of the --model architecture) instead of starting from random weights; its input normalisation is kept.")
    var initModel: String?
    // Numbers are parsed unconditionally, so `--lr -1` reaches validate() instead of being
    // taken for a flag.
    @Option(parsing: .unconditional, help: "Passes over the training set.")
    var epochs: Int
    @Option(parsing: .unconditional, help: "Mini-batch size.")
    var batch: Int = TrainerConfig().batchSize
    @Option(parsing: .unconditional, help: "Learning rate.")
    var lr: Float = SGDConfig().learningRate
    @Option(parsing: .unconditional, help: "Momentum (0 to below 1).")
    var momentum: Float = SGDConfig().momentum
    @Option(name: .customLong("weight-decay"), parsing: .unconditional, help: "L2 penalty on weights.")
    var weightDecay: Float = SGDConfig().weightDecay
    @Option(help: "Learning-rate schedule: cosine (to 1% over the run), constant or step:EPOCHS:FACTOR.")
    var schedule: String = "cosine"
    @Option(parsing: .unconditional, help: "Seed for initialisation, shuffling and splits (0 to 2^64-1).")
    var seed: UInt64 = 1
    @Option(help: "Input normalisation fitted on the training set: standardize, minmax or none.")
    var normalize: String = "standardize"
    @Option(help: "Test data (same forms as --data) when DATA has no test set.")
    var test: String?
    @Option(name: .customLong("test-fraction"), parsing: .unconditional,
            help: "Hold out this fraction of DATA for testing when it has no test set and no --test is given (default: \(Train.defaultTestFraction)).")
    var testFraction: Double?
    @Option(name: .customLong("label-column"), parsing: .unconditional, help: "CSV label column, counted from 0 (default: a 'label' header; column 0 when there is no header).")
    var labelColumn: Int?
    @Option(parsing: .unconditional, help: "OpenBLAS threads (at least 1); more than 1 can be faster on an idle machine but is not bit-for-bit reproducible.")
    var threads: Int = 1
    @Flag(help: "Also say which BLAS kernels and how many threads do the products.")
    var verbose = false
    @Flag(help: "Show a progress bar on stderr even when it is not a terminal.")
    var progress = false
    @Option(help: "Where to write the model file.")
    var out: String

    /// Share of DATA held out for testing when nothing else provides a test set.
    static let defaultTestFraction = 0.2

    /// Every flag is checked here, before any data is read or any epoch is trained.
    func validate() throws {
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be a positive number, got \(lr)") }
        guard momentum >= 0, momentum < 1 else { throw ValidationError("--momentum must be at least 0 and below 1, got \(momentum)") }
        guard weightDecay >= 0, weightDecay.isFinite else { throw ValidationError("--weight-decay must be 0 or positive, got \(weightDecay)") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if let labelColumn, labelColumn < 0 {
            throw ValidationError("--label-column counts columns from 0, got \(labelColumn)")
        }
        if let testFraction {
            guard testFraction > 0, testFraction < 1 else { throw ValidationError("--test-fraction must be between 0 and 1 (exclusive), got \(testFraction)") }
            guard test == nil else { throw ValidationError("give --test or --test-fraction, not both") }
        }
        do {
            _ = try Normalizer.Kind(name: normalize)
            _ = try Architecture.parse(model, inputCount: 1, classCount: 2)
            _ = try Self.parseSchedule(schedule, stepsPerEpoch: 1, epochs: epochs)
        } catch let error as LearnerError {
            throw ValidationError("\(error)")
        }
    }

    func run() throws {
        try checkWritableFile(out, flag: "--out")
        let source = try DataSource.resolve(data)
        if testFraction != nil, case .idx(_, test: .some) = source {
            throw LearnerError.invalidArgument("--test-fraction: \(data) has its own test set, which is used; leave out --test-fraction (or give --test to use another)")
        }
        let testSource = try test.map { try DataSource.resolve($0) }
        var (trainSet, testSet) = try source.load(labelColumn: labelColumn)
        if let testSource, let test {
            // The shape first, then the labels: a wrong file is reported as such.
            let loaded = try testSource.load(labelColumn: labelColumn).train
            guard loaded.featureCount == trainSet.featureCount else {
                throw LearnerError.shapeMismatch("--test \(test) has \(loaded.featureCount) features per sample, --data \(data) has \(trainSet.featureCount)")
            }
            if let largest = loaded.labels.max(), Int(largest) >= trainSet.classCount {
                throw LearnerError.invalidArgument("--test \(test) has label \(largest), but --data \(data) has only \(trainSet.classCount) classes (labels 0 to \(trainSet.classCount - 1))")
            }
            testSet = try Dataset(features: loaded.features, labels: loaded.labels, featureCount: loaded.featureCount, classCount: trainSet.classCount)
        } else if testSet == nil {
            let parts = try trainSet.split(holdOut: testFraction ?? Self.defaultTestFraction, seed: seed)
            (trainSet, testSet) = (parts.train, parts.test)
        }
        guard var testSet else { throw LearnerError.invalidArgument("no test set") }
        try train(on: &trainSet, testingOn: &testSet)
    }

    func train(on trainSet: inout Dataset, testingOn testSet: inout Dataset) throws {
        let start = try initModel.map { try ModelFile.read($0) }
        let normalizer = try start?.normalizer ?? Normalizer.fit(try Normalizer.Kind(name: normalize), on: trainSet)
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
        if verbose { printNote("BLAS: OpenBLAS with \(BLASKernel.description) kernels, \(BLAS.threadCount) thread(s)") }

        if let start, let initModel, start.model.architecture != architecture {
            throw LearnerError.shapeMismatch("--init-model \(initModel) holds \(start.model.architecture); --model \(model) on this data makes \(architecture)")
        }
        var net = start?.model ?? Model(architecture: architecture, seed: seed)
        if let initModel { printNote("fine-tuning \(initModel)") }
        printNote("training \(architecture) on \(trainSet.count) samples, testing on \(testSet.count); batch \(batch), lr \(lr), momentum \(momentum), seed \(seed)")
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
            printNote(String(format: "epoch %d/%d  loss %.4f  test accuracy %.4f  test loss %.4f  (%.1f s)",
                         e, epochs, stats.meanLoss, evaluation.accuracy, evaluation.loss, Date().timeIntervalSince(epochStart)))
        }
        try ModelFile.write(ModelFile.Contents(model: net, normalizer: normalizer), to: out)
        printNote(String(format: "test accuracy %.4f after %d epochs in %.1f s; model written to %@",
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
