import Foundation
import Learner

/// Deployment benchmark: softmax regression and the MLP 784-128-10 trained on Fashion-MNIST
/// (the settings of the test suite's full runs), then every compressed form `peer compress`
/// makes, each through the `Predictor` a deployed model runs: size on disk, test accuracy and
/// batch-1 latency (p50 of many calls), the fp32 model measured in the same run being every
/// figure's baseline. Then the trained MLP is served (``ServingBench``: in process and over
/// HTTP, beside ONNX Runtime) and released to 8 real peers (``ReleaseSpreadBench``). Prints
/// the tables of docs/deployment.md and docs/benchmarks.md as Markdown too.
enum DeploymentBench {
    /// Fine-tuning after pruning: passes over the training set, at `peer compress`'s defaults.
    static let fineTuningEpochs = 2
    /// Single-sample latency: rounds of calls, each round timing every form in turn, so a
    /// neighbour's load on this shared machine falls on all forms alike.
    static let latencyRounds = 10
    static let callsPerRound = 1_000

    struct Row {
        let model: String
        let form: String
        let bytes: Int
        let accuracy: Double
        let latency: Double
    }

    static func run() throws {
        BLAS.setThreadCount(1)
        var report = BenchReport(suite: "deployment")
        let (train, loadedTest) = try DataSource.resolve("fashion-mnist").load()
        guard let test = loadedTest else { throw LearnerError.invalidArgument("fashion-mnist has no test set") }
        var rows: [Row] = []
        var trainedMLP: ModelFile.Contents?
        for (spec, normalize, lr) in [("softmax", Normalizer.Kind.minMax, Float(0.05)), ("mlp:128", .standardize, Float(0.01))] {
            let trained = try trainedContents(spec, on: train, normalize: normalize, lr: lr)
            if spec != "softmax" { trainedMLP = trained }
            var normalizedTrain = train
            try normalizedTrain.normalize(with: trained.normalizer)
            var forms: [(String, ModelFile.Contents)] = [
                ("fp32", trained),
                ("fp16", Compression.converted(trained, to: .fp16)),
                ("int8", Compression.converted(trained, to: .int8)),
            ]
            for fraction in [0.5, 0.8, 0.9] {
                let pruned = try Compression.pruned(trained.model, fraction: fraction)
                var tuned = pruned.model
                let config = TrainerConfig(sgd: SGDConfig(schedule: .cosine(totalSteps: fineTuningEpochs * ((normalizedTrain.count + 63) / 64), floor: 0.01)))
                try Compression.fineTune(&tuned, on: normalizedTrain, epochs: fineTuningEpochs, config: config, mask: pruned.mask)
                var contents = trained
                contents.model = tuned
                let percent = Int(fraction * 100)
                forms.append(("pruned \(percent) %", Compression.withSmallestLayout(contents)))
                if percent == 80 {
                    forms.append(("pruned 80 % + int8", Compression.withSmallestLayout(Compression.converted(contents, to: .int8))))
                }
            }
            let fp32Bytes = ModelFile.encode(trained).count
            // Measure what a deployment runs: the file's bytes, read back.
            let files = forms.map { ModelFile.encode($0.1) }
            let predictors = try files.map { Predictor(try ModelFile.decode($0)) }
            let latencies = try medianLatencies(predictors, test)
            let fp32Latency = latencies[0]
            for ((form, _), (bytes, (predictor, latency))) in zip(forms, zip(files, zip(predictors, latencies))) {
                let accuracy = try predictor.evaluate(on: test).accuracy
                rows.append(Row(model: spec, form: form, bytes: bytes.count, accuracy: accuracy, latency: latency))
                let note = "\(predictor.storage); \(bytes.count) bytes, \(String(format: "%.2f", Double(fp32Bytes) / Double(bytes.count)))x smaller than fp32"
                report.add(BenchFigure(name: "\(spec) \(form) test accuracy", value: accuracy, unit: "fraction",
                                       baseline: rows.first { $0.model == spec }?.accuracy, ratio: nil, note: note))
                report.add(BenchFigure(name: "\(spec) \(form) batch-1 latency p50", value: latency * 1e6, unit: "µs",
                                       baseline: fp32Latency * 1e6, ratio: fp32Latency / latency,
                                       note: "in-process Predictor, best p50 of \(latencyRounds) rounds of \(callsPerRound) calls, 1 BLAS thread; baseline: fp32"))
            }
        }
        guard let mlp = trainedMLP else { throw BenchFailure("the MLP was not trained") }
        let scratch = try Subprocess.scratchDirectory("murmur-deployment")
        defer { try? FileManager.default.removeItem(at: scratch) }
        // A part that fails is reported; the figures of the others are still written.
        var tables: [String] = [], failures: [String] = []
        do { tables.append(try ServingBench.run(mlp, test: test, scratch: scratch, into: &report)) } catch { failures.append("serving: \(error)") }
        do {
            let modelFile = scratch.appendingPathComponent("mlp-v1.model").path
            try ModelFile.write(mlp, to: modelFile)
            tables.append(try ReleaseSpreadBench.run(modelFile: modelFile, scratch: scratch, into: &report))
        } catch {
            failures.append("release spread: \(error)")
        }
        report.finish()
        printTable(rows)
        for table in tables { print("\n" + table) }
        if !failures.isEmpty { throw BenchFailure(failures.joined(separator: "; ")) }
    }

    /// The model trained on the full training set, 10 epochs at batch 64 with a cosine schedule.
    static func trainedContents(_ spec: String, on raw: Dataset, normalize: Normalizer.Kind, lr: Float) throws -> ModelFile.Contents {
        let epochs = 10
        var data = raw
        let normalizer = Normalizer.fit(normalize, on: data)
        try data.normalize(with: normalizer)
        let architecture = try Architecture.parse(spec, inputCount: data.featureCount, classCount: data.classCount)
        let sgd = SGDConfig(learningRate: lr, schedule: .cosine(totalSteps: epochs * ((data.count + 63) / 64), floor: 0.01))
        var trainer = try Trainer(architecture: architecture, config: TrainerConfig(batchSize: 64, sgd: sgd, seed: 1))
        var model = Model(architecture: architecture, seed: 1)
        for _ in 0..<epochs { try trainer.trainEpoch(&model, on: data) }
        return ModelFile.Contents(model: model, normalizer: normalizer)
    }

    /// For each predictor, the median time of one single-sample `predict` in a round of
    /// `callsPerRound` calls, the lowest over `latencyRounds` rounds that visit every
    /// predictor in turn (after one round to warm up). The calls cycle through test images
    /// prepared beforehand, so only the call is timed.
    static func medianLatencies(_ predictors: [Predictor], _ test: Dataset) throws -> [Double] {
        let d = test.featureCount
        let features = test.features
        let samples = (0..<256).map { Array(features[($0 * d)..<(($0 + 1) * d)]) }
        var best = [Double](repeating: .infinity, count: predictors.count)
        var times = [Double](repeating: 0, count: callsPerRound)
        for round in 0...latencyRounds {
            for (i, predictor) in predictors.enumerated() {
                for call in 0..<callsPerRound {
                    let sample = samples[call % samples.count]
                    let start = DispatchTime.now().uptimeNanoseconds
                    _ = try predictor.predict(sample, batch: 1)
                    times[call] = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                }
                times.sort()
                if round > 0 { best[i] = min(best[i], times[callsPerRound / 2]) }
            }
        }
        return best
    }

    /// The Markdown table of docs/deployment.md.
    static func printTable(_ rows: [Row]) {
        print("\n| model | form | size on disk | × smaller | test accuracy | batch-1 latency p50 |")
        print("|---|---|---:|---:|---:|---:|")
        for row in rows {
            let fp32 = rows.first { $0.model == row.model }?.bytes ?? row.bytes
            let name = row.model == "softmax" ? "softmax" : "MLP 784-128-10"
            print("| \(name) | \(row.form) | \(grouped(row.bytes)) B | " + String(format: "%.2f | %.4f | %.1f µs |",
                  Double(fp32) / Double(row.bytes), row.accuracy, row.latency * 1e6))
        }
    }

    /// 413399 as "413,399".
    static func grouped(_ n: Int) -> String {
        var digits = String(n)
        var index = digits.endIndex
        while digits.distance(from: digits.startIndex, to: index) > 3 {
            index = digits.index(index, offsetBy: -3)
            digits.insert(",", at: index)
        }
        return digits
    }
}
