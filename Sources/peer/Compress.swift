import ArgumentParser
import CommandSupport
import Foundation
import Learner

/// `peer compress`: a smaller model file for deployment, by pruning, fine-tuning and
/// quantization, in that order.
struct Compress: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a model file smaller for deployment: prune, fine-tune, then quantize.",
        discussion: """
        --prune FRACTION sets that share of the weights to zero, the smallest magnitudes across \
        all layers (biases are kept); with --structured it removes that share of every hidden \
        layer's units instead, leaving a smaller dense model. --finetune-epochs E then trains \
        on --data (the forms peer train takes) with pruned weights held at zero. --quantize \
        stores int8 weights with one scale per output unit (run by an int8 inference path) or \
        fp16 values; without it the input's precision is kept. A pruned model is stored sparse \
        (a bitmap per layer and the nonzero values) when that is smaller. Standard output gets \
        the storage, size and, with --test, accuracy before and after, one `name: value` per line. \
        The output is an ordinary model file for peer predict.
        """
    )

    @Option(help: ArgumentHelp("The model file to compress.", valueName: "IN"))
    var model: String
    @Option(help: ArgumentHelp("Where to write the compressed model file.", valueName: "OUT"))
    var out: String
    @Option(help: ArgumentHelp("Store the parameters as int8 or fp16 (default: the input's precision).", valueName: "int8|fp16"))
    var quantize: String?
    @Option(parsing: .unconditional, help: ArgumentHelp("Share of the weights to set to zero, at least 0 and below 1 (with --structured: of every hidden layer's units to remove).", valueName: "FRACTION"))
    var prune: Double?
    @Flag(help: "With --prune: remove whole hidden units (smallest ‖incoming‖·‖outgoing‖ first) instead of single weights.")
    var structured = false
    @Option(name: .customLong("finetune-epochs"), parsing: .unconditional, help: ArgumentHelp("After pruning, train this many passes over --data, pruned weights held at zero.", valueName: "E"))
    var finetuneEpochs: Int?
    @Option(help: ArgumentHelp("Data to fine-tune on: fashion-mnist, mnist:DIR, an IDX prefix or a CSV file (its training set).", valueName: "PATH"))
    var data: String?
    @Option(help: ArgumentHelp("Labelled data to measure accuracy on before and after (its test set when it has one).", valueName: "PATH"))
    var test: String?
    @Option(parsing: .unconditional, help: "Fine-tuning learning rate, decayed by a cosine schedule over the fine-tuning steps (default: \(SGDConfig().learningRate)).")
    var lr: Float?
    @Option(parsing: .unconditional, help: "Fine-tuning mini-batch size (default: \(TrainerConfig().batchSize)).")
    var batch: Int?
    @Option(parsing: .unconditional, help: "Seed of the fine-tuning order (0 to 2^64-1; default: 1).")
    var seed: UInt64?
    @Option(name: .customLong("label-column"), parsing: .unconditional,
            help: "CSV label column of --data and --test, counted from 0 (default: a 'label' header; column 0 when there is no header).")
    var labelColumn: Int?
    @Option(parsing: .unconditional, help: "OpenBLAS threads for fine-tuning (at least 1).")
    var threads: Int = 1

    /// Every flag is checked here, before the model or any data is read.
    func validate() throws {
        guard quantize != nil || prune != nil || finetuneEpochs != nil else {
            throw ValidationError("nothing to do: give --quantize int8|fp16, --prune FRACTION or --finetune-epochs E")
        }
        if let quantize, Self.precision(quantize) == nil {
            throw ValidationError("--quantize must be int8 or fp16, got '\(quantize)'")
        }
        if let prune {
            guard prune >= 0, prune < 1 else { throw ValidationError("--prune must be at least 0 and below 1 (the share of weights set to zero), got \(prune)") }
        } else if structured {
            throw ValidationError("--structured needs --prune FRACTION (the share of every hidden layer's units to remove)")
        }
        if let finetuneEpochs {
            guard finetuneEpochs >= 1 else { throw ValidationError("--finetune-epochs must be at least 1, got \(finetuneEpochs)") }
            guard data != nil else { throw ValidationError("--finetune-epochs needs --data PATH to fine-tune on") }
        } else {
            if data != nil { throw ValidationError("--data is what fine-tuning trains on; give --finetune-epochs E too") }
            for (flag, given) in [("--lr", lr != nil), ("--batch", batch != nil), ("--seed", seed != nil)] where given {
                throw ValidationError("\(flag) sets fine-tuning; give --finetune-epochs E and --data PATH too")
            }
        }
        if let lr { guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be a positive number, got \(lr)") } }
        if let batch { guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") } }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1, got \(threads)") }
        if let labelColumn {
            guard labelColumn >= 0 else { throw ValidationError("--label-column counts columns from 0, got \(labelColumn)") }
            guard data != nil || test != nil else { throw ValidationError("--label-column names a column of --data or --test; give one of them") }
        }
    }

    static func precision(_ name: String) -> ModelFile.Storage.Precision? {
        switch name {
        case "int8": return .int8
        case "fp16": return .fp16
        default: return nil
        }
    }

    func run() throws {
        try checkWritableFile(out, flag: "--out")
        let input = try ModelFile.read(model)
        let architecture = input.model.architecture
        // The data is loaded and checked before any long work.
        let fineTuningSet = try data.map { try labelledSet($0, flag: "--data", useTestSet: false, for: architecture) }
        let testSet = try test.map { try labelledSet($0, flag: "--test", useTestSet: true, for: architecture) }
        let accuracyBefore = try testSet.map { try Predictor(input).evaluate(on: $0).accuracy }

        var working = input
        var mask = input.mask
        if let prune {
            if structured {
                working.model = try Compression.prunedUnits(input.model, fraction: prune)
                mask = nil
                printNote("removed \(Int((prune * 100).rounded())) % of every hidden layer's units: \(architecture.name) -> \(working.model.architecture.name)")
            } else {
                let pruned = try Compression.pruned(input.model, fraction: prune)
                (working.model, mask) = (pruned.model, pruned.mask)
                printNote("pruned \(pruned.mask.prunedCount) of \(architecture.weightCount) weights, the smallest magnitudes across all layers")
            }
        }
        if let finetuneEpochs, var fineTuningSet {
            try fineTuningSet.normalize(with: input.normalizer)
            var normalizedTest = testSet
            try normalizedTest?.normalize(with: input.normalizer)
            try fineTune(&working.model, on: fineTuningSet, epochs: finetuneEpochs, mask: mask, testingOn: normalizedTest)
        }
        let precision = quantize.flatMap(Self.precision) ?? input.storage.precision
        let output = Compression.withSmallestLayout(Compression.converted(working, to: ModelFile.Storage(precision: precision)))
        try ModelFile.write(output, to: out)
        let written = try ModelFile.read(out)
        printNote("wrote \(out): \(written.model.architecture), \(written.storage)")

        var report: [(String, String)] = [
            ("architecture before", architecture.name), ("architecture after", written.model.architecture.name),
            ("storage before", "\(input.storage)"), ("storage after", "\(written.storage)"),
        ]
        let bytesBefore = try fileSize(model), bytesAfter = try fileSize(out)
        report += [("bytes before", "\(bytesBefore)"), ("bytes after", "\(bytesAfter)"),
                   ("ratio", String(format: "%.2f", Double(bytesBefore) / Double(max(bytesAfter, 1))))]
        if let testSet, let accuracyBefore {
            let accuracyAfter = try Predictor(written).evaluate(on: testSet).accuracy
            report += [("accuracy before", String(format: "%.4f", accuracyBefore)), ("accuracy after", String(format: "%.4f", accuracyAfter))]
        }
        print(report.map { "\($0.0): \($0.1)" }.joined(separator: "\n"))
    }

    /// Fine-tunes with a cosine schedule from --lr over all the fine-tuning steps, one line per epoch.
    func fineTune(_ net: inout Model, on data: Dataset, epochs: Int, mask: WeightMask?, testingOn testSet: Dataset?) throws {
        let batchSize = batch ?? TrainerConfig().batchSize
        let steps = epochs * ((data.count + batchSize - 1) / batchSize)
        let rate = lr ?? SGDConfig().learningRate
        let config = TrainerConfig(batchSize: batchSize, sgd: SGDConfig(learningRate: rate, schedule: .cosine(totalSteps: steps, floor: 0.01)),
                                   seed: seed ?? 1)
        BLAS.setThreadCount(threads)
        printNote("fine-tuning on \(data.count) samples for \(epochs) epoch\(epochs == 1 ? "" : "s"); batch \(batchSize), lr \(rate)"
                  + (mask.map { String(format: ", %.1f %% of weights held at zero", 100 * $0.sparsity) } ?? ""))
        try Compression.fineTune(&net, on: data, epochs: epochs, config: config, mask: mask) { epoch, stats, tuned in
            let accuracy = try testSet.map { String(format: "  test accuracy %.4f", try tuned.evaluate(on: $0).accuracy) } ?? ""
            printNote(String(format: "fine-tuning epoch %d/%d  loss %.4f", epoch, epochs, stats.meanLoss) + accuracy)
        }
    }

    /// The labelled samples of `spec`: its training set, or with `useTestSet` its test set when
    /// it has one; the width is checked against the model before the labels.
    func labelledSet(_ spec: String, flag: String, useTestSet: Bool, for architecture: Architecture) throws -> Dataset {
        let loaded = try DataSource.resolve(spec).load(labelColumn: labelColumn)
        let set = useTestSet ? (loaded.test ?? loaded.train) : loaded.train
        guard set.featureCount == architecture.inputCount else {
            throw LearnerError.shapeMismatch("\(flag) \(spec) has \(set.featureCount) features per sample, the model takes \(architecture.inputCount)")
        }
        if let largest = set.labels.max(), Int(largest) >= architecture.classCount {
            throw LearnerError.invalidArgument("\(flag) \(spec) has label \(largest), but the model has only \(architecture.classCount) classes (labels 0 to \(architecture.classCount - 1))")
        }
        return set
    }

    func fileSize(_ path: String) throws -> Int {
        guard let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue else {
            throw CommandFailure("cannot tell the size of \(path)")
        }
        return size
    }
}
