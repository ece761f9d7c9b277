import CInference
import Foundation
import Testing
@testable import Learner

/// The deployment predictor: its fp32 path against `Model`, its int8 path against a plain
/// reference and against fp32, and its input checks.
struct PredictorTests {
    init() { BLAS.setThreadCount(1) }

    /// `CompressionTests.trained()` with a standardising normaliser, and the raw blobs.
    static func contents() throws -> (ModelFile.Contents, Dataset) {
        let (model, data) = try CompressionTests.trained()
        // The model was trained on the raw blobs; a normaliser fitted on them still exercises the path.
        return (ModelFile.Contents(model: model, normalizer: Normalizer.fit(.standardize, on: data)), data)
    }

    /// Softmax of one row of logits, as a reference.
    static func softmax(_ z: [Float]) -> [Float] {
        let m = z.max() ?? 0
        let e = z.map { expf($0 - m) }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
    }

    @Test func predictor_fp32_matchesModelPredictExactly() throws {
        let (contents, data) = try Self.contents()
        var normalized = data
        try normalized.normalize(with: contents.normalizer)
        let predictor = Predictor(contents)
        #expect(predictor.storage == .fp32 && predictor.architecture == contents.model.architecture)
        let (classes, probabilities) = try predictor.predict(data.features, batch: data.count)
        #expect(classes == (try contents.model.predict(normalized.features)))
        var logits: [[Float]] = []
        try contents.model.forEachLogits(normalized.features) { _, z in logits.append(Array(z)) }
        let k = contents.model.architecture.classCount
        for (r, z) in logits.enumerated() { #expect(Array(probabilities[(r * k)..<((r + 1) * k)]) == Self.softmax(z)) }
        #expect(try predictor.evaluate(on: data) == contents.model.evaluate(on: normalized))
        // One sample at a time (sgemv rather than sgemm) gives the same classes and probabilities to rounding.
        let d = data.featureCount
        for r in 0..<20 {
            let single = try predictor.predict(Array(data.features[(r * d)..<((r + 1) * d)]), batch: 1)
            #expect(single.classes == [classes[r]])
            for j in 0..<k { #expect(abs(single.probabilities[j] - probabilities[r * k + j]) < 1e-5) }
        }
    }

    /// The int8 path computed the plain way: per-sample activation scales, Int32 sums, the
    /// row scale times the activation scale, the bias, ReLU between layers.
    static func referenceInt8Logits(_ contents: ModelFile.Contents, _ features: [Float]) throws -> [Float] {
        var x = features
        try contents.normalizer.apply(to: &x, featureCount: contents.model.architecture.inputCount)
        let weights = contents.quantizedWeights
        let architecture = contents.model.architecture
        for (l, layer) in architecture.layers.enumerated() {
            let rows = x.count / layer.inputs
            var y = [Float](repeating: 0, count: rows * layer.outputs)
            for r in 0..<rows {
                let row = x[(r * layer.inputs)..<((r + 1) * layer.inputs)]
                let amax = row.map(abs).max() ?? 0
                let q = row.map { amax > 0 ? Int32(($0 * (127 / amax)).rounded(.toNearestOrEven)) : 0 }
                for o in 0..<layer.outputs {
                    var sum: Int32 = 0
                    for k in 0..<layer.inputs { sum += q[k] * Int32(weights.values[layer.valueOffset + o * layer.inputs + k]) }
                    let v = Float(sum) * (weights.scales[architecture.firstUnit(ofLayer: l) + o] * (amax / 127))
                        + contents.model.parameters[layer.biasOffset + o]
                    y[r * layer.outputs + o] = l < architecture.layerCount - 1 ? max(v, 0) : v
                }
            }
            x = y
        }
        return x
    }

    @Test(arguments: [1, 2, 5, 64, 65, 200])
    func predictor_int8_computesWhatTheReferenceDoes(batch: Int) throws {
        // Widths that are not multiples of the kernel's 8 lanes or 4 units, and odd batches.
        let data = try Dataset.gaussianBlobs(count: 200, featureCount: 13, classCount: 3, seed: 5)
        let architecture = try Architecture(inputCount: 13, hiddenSizes: [7, 9], classCount: 3)
        var model = Model(architecture: architecture, seed: 3)
        var trainer = try Trainer(architecture: architecture, config: TrainerConfig(batchSize: 16, seed: 3))
        try trainer.train(&model, on: data, steps: 40)
        let contents = Compression.converted(ModelFile.Contents(model: model, normalizer: Normalizer.fit(.minMax, on: data)), to: .int8)
        let predictor = Predictor(contents)
        #expect(predictor.storage == .int8)
        let features = Array(data.features[0..<(batch * 13)])
        let reference = try Self.referenceInt8Logits(contents, features)
        let (classes, probabilities) = try predictor.predict(features, batch: batch)
        for r in 0..<batch {
            let z = Array(reference[(3 * r)..<(3 * r + 3)])
            let p = Self.softmax(z)
            for j in 0..<3 { #expect(abs(probabilities[3 * r + j] - p[j]) < 1e-5, "sample \(r)") }
            if let top = z.max(), z.filter({ $0 == top }).count == 1 { #expect(classes[r] == z.firstIndex(of: top)) }
        }
    }

    /// An MLP with one hidden layer trained for 20 steps on Gaussian blobs, and the blobs.
    static func trainedOnBlobs(inputs: Int, hidden: Int, classes: Int, samples: Int, seed: UInt64) throws -> (Model, Dataset) {
        let architecture = try Architecture(inputCount: inputs, hiddenSizes: [hidden], classCount: classes)
        let data = try Dataset.gaussianBlobs(count: samples, featureCount: inputs, classCount: classes, seed: seed + 3)
        var model = Model(architecture: architecture, seed: seed)
        var trainer = try Trainer(architecture: architecture, config: TrainerConfig(batchSize: 32, seed: seed))
        try trainer.train(&model, on: data, steps: 20)
        return (model, data)
    }

    /// An MLP of the deployed shape (784-128-10) and 200 samples: a batch takes oneDNN's path,
    /// batches of 31 take OpenBLAS's and the int8 kernel's. int8 answers are the same to the
    /// bit (the sums are exact integers either way); fp32 ones agree to rounding, with the same
    /// classes as `Model.predict`.
    @Test func predictor_largeBatches_goThroughOneDNN_withTheSmallBatchesAnswers() throws {
        let (model, data) = try Self.trainedOnBlobs(inputs: 784, hidden: 128, classes: 10, samples: 200, seed: 4)
        let fp32 = ModelFile.Contents(model: model, normalizer: Normalizer.fit(.standardize, on: data))
        let int8 = Compression.converted(fp32, to: .int8)
        let d = 784, k = 10, small = OneDNN.minimumRows - 1
        func inSmallBatches(_ predictor: Predictor) throws -> (classes: [Int], probabilities: [Float]) {
            var classes: [Int] = [], probabilities: [Float] = []
            for start in stride(from: 0, to: data.count, by: small) {
                let rows = min(small, data.count - start)
                let part = try predictor.predict(Array(data.features[(start * d)..<((start + rows) * d)]), batch: rows)
                classes += part.classes
                probabilities += part.probabilities
            }
            return (classes, probabilities)
        }
        for contents in [fp32, int8] {
            let predictor = Predictor(contents)
            switch predictor.engine {
            case .float(_, let fast), .int8(_, let fast): #expect(fast?.count == 2, "oneDNN layers were built: \(OneDNN.summary)")
            }
            let whole = try predictor.predict(data.features, batch: data.count)
            let parts = try inSmallBatches(predictor)
            if predictor.storage == .int8 {
                #expect(whole.probabilities == parts.probabilities, "int8 through oneDNN and through the kernel, to the bit")
                #expect(whole.classes == parts.classes)
            } else {
                var normalized = data
                try normalized.normalize(with: contents.normalizer)
                #expect(whole.classes == (try model.predict(normalized.features)))
                #expect(zip(whole.probabilities, parts.probabilities).allSatisfy { abs($0 - $1) < 1e-5 })
                #expect(whole.classes == parts.classes)
            }
            #expect(whole.probabilities.count == data.count * k)
        }
    }

    /// The element-wise passes' AVX2 build and their baseline build answer alike, to the bit,
    /// fp32 and int8, one sample and a batch (the same operations in the same order, no fused
    /// multiply-adds). On a CPU without AVX2 both runs take the baseline build.
    @Test func predictor_avx2AndBaselinePasses_giveTheSameAnswers() throws {
        let (model, data) = try Self.trainedOnBlobs(inputs: 37, hidden: 19, classes: 4, samples: 100, seed: 5)
        let fp32 = ModelFile.Contents(model: model, normalizer: Normalizer.fit(.standardize, on: data))
        let build = String(cString: murmur_inference_build())
        for contents in [fp32, Compression.converted(fp32, to: .int8)] {
            let predictor = Predictor(contents)
            let single = try predictor.predict(Array(data.features[0..<37]), batch: 1)
            let batch = try predictor.predict(data.features, batch: data.count)
            murmur_inference_use_baseline(1)
            defer { murmur_inference_use_baseline(0) }
            #expect(String(cString: murmur_inference_build()) == "baseline")
            let singleBaseline = try predictor.predict(Array(data.features[0..<37]), batch: 1)
            let batchBaseline = try predictor.predict(data.features, batch: data.count)
            #expect(single.probabilities == singleBaseline.probabilities, "\(contents.storage), one sample, \(build) against baseline")
            #expect(batch.probabilities == batchBaseline.probabilities, "\(contents.storage), a batch, \(build) against baseline")
        }
    }

    @Test(.enabled(if: FashionMNISTTests.available))
    func predictor_int8_agreesWithFP32OnFashionMNIST() throws {
        let (train, test) = try FashionMNISTTests.load(.none)
        let normalizer = Normalizer.fit(.standardize, on: train)
        var normalized = train
        try normalized.normalize(with: normalizer)
        let architecture = try Architecture(inputCount: 784, hiddenSizes: [128], classCount: 10)
        var model = Model(architecture: architecture, seed: 1)
        var trainer = try Trainer(architecture: architecture, config: TrainerConfig(batchSize: 64, seed: 1))
        try trainer.trainEpoch(&model, on: normalized)
        let contents = ModelFile.Contents(model: model, normalizer: normalizer)
        let fp32 = try Predictor(contents).predict(test.features, batch: test.count).classes
        let int8Contents = try ModelFile.decode(ModelFile.encode(Compression.converted(contents, to: .int8)))
        let int8 = try Predictor(int8Contents).predict(test.features, batch: test.count).classes
        let agreement = Double(zip(fp32, int8).filter { $0 == $1 }.count) / Double(test.count)
        #expect(agreement >= 0.99, "int8 agrees with fp32 on \(agreement) of the test set")
    }

    @Test func predictor_concurrentCalls_giveTheSameAnswers() throws {
        let (contents, data) = try Self.contents()
        for predictor in [Predictor(contents), Predictor(Compression.converted(contents, to: .int8))] {
            let expected = try predictor.predict(data.features, batch: data.count)
            let answers = Answers(count: 16)
            DispatchQueue.concurrentPerform(iterations: 16) { i in
                let rows = 1 + i * 7
                answers.set(i, try? predictor.predict(Array(data.features[0..<(rows * data.featureCount)]), batch: rows).classes)
            }
            for i in 0..<16 { #expect(answers.get(i) == Array(expected.classes[0..<(1 + i * 7)])) }
        }
    }

    @Test func predictor_badInput_isRefused() throws {
        var (contents, data) = try Self.contents()
        // Scales of 4: 1e38 is finite, but not once normalised.
        contents.normalizer = try Normalizer(kind: .standardize, offsets: [Float](repeating: 0, count: 6), scales: [Float](repeating: 4, count: 6))
        for predictor in [Predictor(contents), Predictor(Compression.converted(contents, to: .int8))] {
            #expect(errorMessage { _ = try predictor.predict([1, 2, 3], batch: 1) }.contains("not a batch of 1 samples of 6 features"))
            #expect(errorMessage { _ = try predictor.predict([], batch: -1) }.contains("not a batch"))
            let empty = try predictor.predict([], batch: 0)
            #expect(empty.classes.isEmpty && empty.probabilities.isEmpty)
            for bad: Float in [.nan, .infinity, 1e38] {
                var features = Array(data.features[0..<(3 * 6)])
                features[13] = bad
                let message = errorMessage { _ = try predictor.predict(features, batch: 3) }
                #expect(message.contains("feature 1 of sample 2"), "\(bad): \(message)")
            }
        }
    }
}

/// Answers written by concurrent workers, one slot each.
final class Answers: @unchecked Sendable {
    private var slots: [[Int]?]
    private let lock = NSLock()

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ i: Int, _ value: [Int]?) { lock.withLock { slots[i] = value } }
    func get(_ i: Int) -> [Int]? { lock.withLock { slots[i] } }
}
