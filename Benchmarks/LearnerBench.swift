import DeterministicRandom
import Foundation
import Learner

/// Learner benchmark: MLP 784-128-10 on Fashion-MNIST for 10 epochs, ours against
/// scikit-learn's MLPClassifier run in the same session by `scripts/sklearn_baseline.py`;
/// softmax regression; delta codec sizes and speeds.
func runLearnerBench() throws {
    var report = BenchReport(suite: "learner")
    /// Settings shared with the scikit-learn run: 10 epochs at its default batch size of 200.
    let epochs = 10, batch = 200
    let threads = 1

    let (rawTrain, rawTest) = try DataSource.resolve("fashion-mnist").load()
    guard let rawTest else { throw LearnerError.invalidArgument("fashion-mnist has no test set") }

    func train(_ spec: String, normalize: Normalizer.Kind, lr: Float) throws -> (seconds: Double, accuracy: Double) {
        var trainSet = rawTrain, testSet = rawTest
        let normalizer = Normalizer.fit(normalize, on: trainSet)
        try trainSet.normalize(with: normalizer)
        try testSet.normalize(with: normalizer)
        let arch = try Architecture.parse(spec, inputCount: trainSet.featureCount, classCount: trainSet.classCount)
        let steps = epochs * ((trainSet.count + batch - 1) / batch)
        let sgd = SGDConfig(learningRate: lr, schedule: .cosine(totalSteps: steps, floor: 0.01))
        var model = Model(architecture: arch, seed: 1)
        var trainer = try Trainer(architecture: arch, config: TrainerConfig(batchSize: batch, sgd: sgd, seed: 1))
        BLAS.setThreadCount(threads)
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<epochs { try trainer.trainEpoch(&model, on: trainSet) }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return (seconds, try model.evaluate(on: testSet).accuracy)
    }

    let mlp = try train("mlp:128", normalize: .standardize, lr: 0.05)
    let baseline = runScikitLearn(epochs: epochs, batch: batch, threads: threads)
    let note = "fit only, \(epochs) epochs, batch \(batch), \(threads) BLAS thread, OpenBLAS \(BLASKernel.description); ours: SGD momentum 0.9, lr 0.05 cosine, fp32; sklearn: adam, fp64"
    report.add(BenchFigure(name: "mlp784-128-10 train time", value: mlp.seconds, unit: "s",
                           baseline: baseline?.seconds, ratio: baseline.map { $0.seconds / mlp.seconds }, note: note))
    report.add(BenchFigure(name: "mlp784-128-10 test accuracy", value: mlp.accuracy, unit: "fraction",
                           baseline: baseline?.accuracy, ratio: baseline.map { mlp.accuracy / $0.accuracy },
                           note: baseline == nil ? "scikit-learn baseline unavailable" : "baseline: \(baseline?.library ?? "")"))
    let softmax = try train("softmax", normalize: .minMax, lr: 0.05)
    report.add(BenchFigure(name: "softmax regression train time", value: softmax.seconds, unit: "s", note: "10 epochs; scikit-learn LogisticRegression: 17.8 s (shared REFERENCES.md, not rerun)"))
    report.add(BenchFigure(name: "softmax regression test accuracy", value: softmax.accuracy, unit: "fraction", note: "scikit-learn: 0.844"))

    // Codecs on a delta the size of the MLP (101,770 parameters).
    var rng = SplitMix64(seed: 1)
    let delta = (0..<101_770).map { _ in Float(rng.normal() * 0.01) }
    let fp32Time = try bestTime(repeats: 5) { _ = try Fp32Codec().decode(Fp32Codec().encode(delta), expectedCount: delta.count) }
    for codec in [Fp16Codec(), Int8Codec(), TopKCodec(fraction: 0.01)] as [any DeltaCodec] {
        let bytes = codec.encode(delta)
        let seconds = try bestTime(repeats: 5) { _ = try codec.decode(codec.encode(delta), expectedCount: delta.count) }
        let ratio = CodecReport(count: delta.count, encodedBytes: bytes.count).ratio
        report.add(BenchFigure(name: "codec \(codec.name) encode+decode", value: seconds * 1e3, unit: "ms",
                               baseline: fp32Time * 1e3, ratio: fp32Time / seconds,
                               note: String(format: "%d bytes, %.2fx smaller than fp32; baseline: fp32 codec", bytes.count, ratio)))
    }
    report.add(BenchFigure(name: "peak resident memory", value: Double(peakResidentBytes()) / 1e6, unit: "MB"))
    report.finish()
}

/// Runs `scripts/sklearn_baseline.py` with BLAS limited to `threads`; nil (and a message on
/// stderr) if python3 or the script fails, so the rest of the suite still reports.
private func runScikitLearn(epochs: Int, batch: Int, threads: Int) -> (seconds: Double, accuracy: Double, library: String)? {
    var environment = ProcessInfo.processInfo.environment
    for name in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"] { environment[name] = String(threads) }
    guard let object = Subprocess.pythonBaseline("sklearn_baseline.py", ["--epochs", String(epochs), "--batch", String(batch)], environment: environment),
          let seconds = object["fit_seconds"] as? Double, let accuracy = object["test_accuracy"] as? Double else {
        FileHandle.standardError.write(Data("learner bench: scikit-learn baseline failed\n".utf8))
        return nil
    }
    return (seconds, accuracy, object["library"] as? String ?? "scikit-learn")
}
