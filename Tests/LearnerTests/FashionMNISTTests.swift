import Foundation
import Testing
@testable import Learner

/// Centralized training on the full Fashion-MNIST training set (60,000 images), scored on the
/// 10,000 test images. Settings match docs/learner.md; thresholds are scikit-learn's figures
/// on this data (0.844 softmax regression, 0.875 MLP 784-128-10).
@Suite(.serialized)
struct FashionMNISTTests {
    /// Bit-for-bit results need one OpenBLAS thread, which the program (here the test run) sets.
    init() { BLAS.setThreadCount(1) }

    static let available = FileManager.default.fileExists(atPath: DataSource.fashionMNISTDirectory + "/train-images-idx3-ubyte.gz")

    /// The training and test sets, normalised with `kind` fitted on the training set.
    static func load(_ kind: Normalizer.Kind) throws -> (Dataset, Dataset) {
        var (train, loadedTest) = try DataSource.resolve("fashion-mnist").load()
        guard var test = loadedTest else { throw LearnerError.invalidArgument("fashion-mnist has no test set") }
        let normalizer = Normalizer.fit(kind, on: train)
        try train.normalize(with: normalizer)
        try test.normalize(with: normalizer)
        #expect(train.count == 60_000 && test.count == 10_000 && train.featureCount == 784 && train.classCount == 10)
        return (train, test)
    }

    static func train(_ spec: String, epochs: Int, batch: Int, lr: Float, normalize: Normalizer.Kind) throws -> Evaluation {
        let (train, test) = try load(normalize)
        let arch = try Architecture.parse(spec, inputCount: 784, classCount: 10)
        let steps = epochs * ((train.count + batch - 1) / batch)
        let sgd = SGDConfig(learningRate: lr, schedule: .cosine(totalSteps: steps, floor: 0.01))
        var trainer = try Trainer(architecture: arch, config: TrainerConfig(batchSize: batch, sgd: sgd, seed: 1))
        var model = Model(architecture: arch, seed: 1)
        for _ in 0..<epochs { try trainer.trainEpoch(&model, on: train) }
        return try model.evaluate(on: test)
    }

    @Test(.enabled(if: available))
    func softmaxRegression_fullTrainingSet_reachesScikitLearnAccuracy() throws {
        let evaluation = try Self.train("softmax", epochs: 10, batch: 64, lr: 0.05, normalize: .minMax)
        #expect(evaluation.accuracy >= 0.84, "softmax test accuracy \(evaluation.accuracy)")
    }

    @Test(.enabled(if: available))
    func mlp128_tenEpochs_reachesScikitLearnAccuracy() throws {
        let evaluation = try Self.train("mlp:128", epochs: 10, batch: 64, lr: 0.01, normalize: .standardize)
        #expect(evaluation.accuracy >= 0.87, "MLP test accuracy \(evaluation.accuracy)")
    }
}
