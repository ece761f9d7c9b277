import DeterministicRandom
import Testing
@testable import Learner

/// Three Gaussian blobs in six dimensions, one class per blob.
func blobs(count: Int, seed: UInt64) throws -> Dataset { try Dataset.gaussianBlobs(count: count, seed: seed) }

struct TrainingTests {
    /// Bit-for-bit results need one OpenBLAS thread, which the program (here the test run) sets.
    init() { BLAS.setThreadCount(1) }

    static func train(seed: UInt64, steps: Int = 60) throws -> Model {
        let data = try blobs(count: 300, seed: 3)
        let arch = try Architecture(inputCount: 6, hiddenSizes: [16, 8], classCount: 3)
        var model = Model(architecture: arch, seed: seed)
        var trainer = try Trainer(architecture: arch, config: TrainerConfig(batchSize: 32, seed: seed))
        try trainer.train(&model, on: data, steps: steps)
        return model
    }

    @Test func trainer_sameSeed_sameParametersBitForBit() throws {
        let a = try Self.train(seed: 11), b = try Self.train(seed: 11)
        #expect(a.parameters.map(\.bitPattern) == b.parameters.map(\.bitPattern))
        #expect(BLAS.threadCount == 1)
    }

    @Test func trainer_differentSeed_differentParameters() throws {
        #expect(try Self.train(seed: 11).parameters != Self.train(seed: 12).parameters)
    }

    @Test func trainer_blobs_learnsToHighAccuracy() throws {
        let model = try Self.train(seed: 5, steps: 200)
        let test = try blobs(count: 300, seed: 99)
        let evaluation = try model.evaluate(on: test)
        #expect(evaluation.accuracy > 0.95)
        #expect(evaluation.confusion.flatMap { $0 }.reduce(0, +) == 300)
        #expect(evaluation.perClassAccuracy.allSatisfy { ($0 ?? 0) > 0.9 })
    }

    @Test func trainer_interleavedParameterReplacement_keepsOptimizerState() throws {
        let data = try blobs(count: 120, seed: 4)
        let arch = try Architecture(inputCount: 6, hiddenSizes: [8], classCount: 3)
        var model = Model(architecture: arch, seed: 1)
        var trainer = try Trainer(architecture: arch, config: TrainerConfig(batchSize: 16, seed: 1))
        try trainer.train(&model, on: data, steps: 5)
        let other = Model(architecture: arch, seed: 2)
        // What a gossip node does: average with a peer, then keep training.
        let averaged = zip(model.flatten(), other.flatten()).map { ($0 + $1) / 2 }
        try model.load(flat: averaged)
        #expect(trainer.optimizer.state.step == 5)
        #expect(trainer.optimizer.state.velocity.contains { $0 != 0 })
        try trainer.train(&model, on: data, steps: 3)
        #expect(trainer.optimizer.state.step == 8)
    }

    @Test func trainer_hugeLearningRate_stopsBeforeParametersTurnNonFinite() throws {
        let data = try blobs(count: 90, seed: 4)
        let arch = try Architecture(inputCount: 6, hiddenSizes: [8], classCount: 3)
        var model = Model(architecture: arch, seed: 1)
        var trainer = try Trainer(architecture: arch, config: TrainerConfig(batchSize: 30, sgd: SGDConfig(learningRate: 1e30), seed: 1))
        #expect(throws: LearnerError.self) { try trainer.train(&model, on: data, steps: 20) }
        #expect(VectorMath.allFinite(model.parameters))
    }

    @Test func trainEpoch_visitsEverySampleOnce() throws {
        let data = try blobs(count: 100, seed: 4)
        let arch = try Architecture(inputCount: 6, classCount: 3)
        var model = Model(architecture: arch, seed: 1)
        var trainer = try Trainer(architecture: arch, config: TrainerConfig(batchSize: 32, seed: 1))
        // Start mid-pass: the epoch must still be one whole fresh pass.
        try trainer.step(&model, on: data)
        #expect(trainer.cursor == 32)
        let stats = try trainer.trainEpoch(&model, on: data)
        #expect(stats.steps == 4)
        #expect(stats.samples == 100)
        // The steps walked the whole of one permutation of the samples: each visited once.
        #expect(trainer.order.sorted() == Array(0..<100))
        #expect(trainer.cursor == 100)
        #expect(trainer.order != Array(0..<100), "the order is shuffled")
    }

    @Test func model_loadFlat_wrongLengthOrNaN_isRefused() throws {
        let arch = try Architecture(inputCount: 3, hiddenSizes: [2], classCount: 2)
        var model = Model(architecture: arch, seed: 1)
        #expect(arch.parameterCount == 3 * 2 + 2 + 2 * 2 + 2)
        #expect(throws: LearnerError.self) { try model.load(flat: [Float](repeating: 0, count: 5)) }
        var bad = model.flatten()
        bad[0] = .nan
        #expect(throws: LearnerError.self) { try model.load(flat: bad) }
        let before = model.flatten()
        try model.load(flat: before.map { $0 * 2 })
        #expect(model.flatten() == before.map { $0 * 2 })
    }

    @Test func architecture_parse_acceptsSoftmaxAndMLPAndRejectsNonsense() throws {
        #expect(try Architecture.parse("softmax", inputCount: 784, classCount: 10).parameterCount == 7850)
        #expect(try Architecture.parse("mlp:128", inputCount: 784, classCount: 10).parameterCount == 101_770)
        #expect(try Architecture.parse("mlp:32,16", inputCount: 4, classCount: 3).hiddenSizes == [32, 16])
        for spec in ["mlp:", "mlp:0", "mlp:a", "cnn", "mlp:10,,2"] {
            #expect(throws: LearnerError.self) { try Architecture.parse(spec, inputCount: 4, classCount: 3) }
        }
    }

    @Test func schedules_cosineAndStep_decayAsDocumented() {
        #expect(LearningRateSchedule.constant.rate(base: 0.1, step: 1000) == 0.1)
        #expect(LearningRateSchedule.step(every: 10, factor: 0.5).rate(base: 0.1, step: 25) == 0.025)
        let cosine = LearningRateSchedule.cosine(totalSteps: 100, floor: 0.01)
        #expect(abs(cosine.rate(base: 1, step: 0) - 1) < 1e-6)
        #expect(abs(cosine.rate(base: 1, step: 50) - 0.505) < 1e-4)
        #expect(abs(cosine.rate(base: 1, step: 500) - 0.01) < 1e-6)
    }
}

struct TensorTests {
    @Test func matrix_product_matchesNaiveLoops() throws {
        var rng = SplitMix64(seed: 1)
        let a = try Matrix(rows: 3, columns: 4, values: (0..<12).map { _ in Float(rng.normal()) })
        let b = try Matrix(rows: 5, columns: 4, values: (0..<20).map { _ in Float(rng.normal()) })
        let c = try a.multiplied(by: b, transposeOther: true)
        #expect(c.rows == 3 && c.columns == 5)
        for i in 0..<3 {
            for j in 0..<5 {
                let naive = (0..<4).reduce(Float(0)) { $0 + a[i, $1] * b[j, $1] }
                #expect(abs(c[i, j] - naive) < 1e-5)
            }
        }
        let g = try a.multiplied(by: a, transposeSelf: true) // 4×4 Gram matrix
        #expect(g.rows == 4 && abs(g[1, 2] - g[2, 1]) < 1e-6)
        #expect(throws: LearnerError.self) { try a.multiplied(by: b) }
    }

    @Test func vectorMath_axpyScaleNorm() throws {
        var y: [Float] = [1, 2, 3]
        try VectorMath.axpy(2, [1, 1, 1], &y)
        #expect(y == [3, 4, 5])
        VectorMath.scale(0.5, &y)
        #expect(y == [1.5, 2, 2.5])
        #expect(abs(VectorMath.norm([3, 4]) - 5) < 1e-12)
        #expect(try VectorMath.difference([3, 4], [1, 1]) == [2, 3])
        #expect(!VectorMath.allFinite([1, .nan]))
        #expect(throws: LearnerError.self) { try VectorMath.axpy(1, [1], &y) }
    }
}

struct LocalStepsWithAveragingTests {
    /// Bit-for-bit results need one OpenBLAS thread, which the program (here the test run) sets.
    init() { BLAS.setThreadCount(1) }

    /// What a gossip node does, in miniature: four peers on Dirichlet-skewed shares train
    /// locally, send int8 deltas with error feedback, and replace their parameters with the
    /// average, keeping their own optimizer state.
    @Test func peers_localStepsAndAveragedInt8Deltas_learnTheWholeTask() throws {
        let data = try blobs(count: 600, seed: 21)
        let test = try blobs(count: 300, seed: 22)
        let arch = try Architecture(inputCount: 6, hiddenSizes: [16], classCount: 3)
        let partition = try Partition(labels: data.labels, classCount: 3, peers: 4, scheme: .dirichlet(alpha: 0.3), seed: 3)
        let shares = try (0..<4).map { try partition.dataset(forPeer: $0, of: data) }.filter { $0.count > 0 }
        var global = Model(architecture: arch, seed: 1)
        var trainers = try shares.indices.map { try Trainer(architecture: arch, config: TrainerConfig(batchSize: 16, seed: UInt64($0))) }
        var feedback = shares.map { _ in ErrorFeedback(codec: Int8Codec(), count: arch.parameterCount) }
        for _ in 0..<15 {
            var sum = [Float](repeating: 0, count: arch.parameterCount)
            var weight = 0
            for p in shares.indices {
                var local = global
                try trainers[p].train(&local, on: shares[p], steps: 5)
                let delta = try VectorMath.difference(local.flatten(), global.flatten())
                let (bytes, _, report) = try feedback[p].encode(delta)
                #expect(report.ratio > 3.5)
                let received = try Codecs.decode(bytes, expectedCount: arch.parameterCount)
                try VectorMath.axpy(Float(shares[p].count), received, &sum)
                weight += shares[p].count
            }
            VectorMath.scale(1 / Float(weight), &sum)
            try VectorMath.axpy(1, global.flatten(), &sum)
            try global.load(flat: sum)
        }
        #expect(try global.evaluate(on: test).accuracy > 0.95)
    }
}

/// Many models evaluated together (shared first-layer products) agree with one at a time.
struct ManyModelEvaluationTests {
    init() { BLAS.setThreadCount(1) }

    @Test(arguments: [[Int](), [5], [16, 8]])
    func evaluateMany_agreesWithEachModelAlone(hidden: [Int]) throws {
        let data = try Dataset.gaussianBlobs(count: 700, featureCount: 9, classCount: 4, seed: 3)
        let arch = try Architecture(inputCount: 9, hiddenSizes: hidden, classCount: 4)
        // Enough models for several groups, each trained a little differently.
        let count = Model.stackedColumns / arch.layerSizes[1] * 2 + 3
        let models = try (0..<count).map { i -> Model in
            var model = Model(architecture: arch, seed: UInt64(i))
            var trainer = try Trainer(architecture: arch, config: TrainerConfig(batchSize: 16, seed: UInt64(i)))
            try trainer.train(&model, on: data, steps: i % 7)
            return model
        }
        let together = try Model.evaluate(models, on: data)
        #expect(together.count == count)
        for (model, evaluation) in zip(models, together) {
            let alone = try model.evaluate(on: data)
            #expect(abs(evaluation.accuracy - alone.accuracy) <= 2.0 / Double(data.count), "\(evaluation.accuracy) against \(alone.accuracy)")
            #expect(abs(evaluation.loss - alone.loss) <= 1e-5 * max(1, alone.loss), "\(evaluation.loss) against \(alone.loss)")
            #expect(evaluation.sampleCount == data.count)
        }
        #expect(try Model.evaluate([], on: data).isEmpty)
        let other = Model(architecture: try Architecture(inputCount: 9, hiddenSizes: [3], classCount: 4), seed: 1)
        #expect(throws: LearnerError.self) { try Model.evaluate([models[0], other], on: data) }
    }
}

/// Byte-backed data sets, views and in-place row orders behave as the same rows in floats.
struct ByteBackedDatasetTests {
    /// 40 rows of 5 byte values and their labels, as bytes and as floats.
    static func pair() throws -> (bytes: Dataset, floats: Dataset) {
        var rng = SplitMix64(seed: 12)
        let values = (0..<200).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let labels = (0..<40).map { Int32($0 % 3) }
        return (try Dataset(bytes: values, labels: labels, featureCount: 5, classCount: 3),
                try Dataset(features: values.map(Float.init), labels: labels, featureCount: 5, classCount: 3))
    }

    @Test func bytes_readLikeFloats_throughSubsetsViewsAndPermutations() throws {
        let (bytes, floats) = try Self.pair()
        #expect(bytes.isByteBacked && !floats.isByteBacked)
        #expect(bytes == floats && bytes.features == floats.features)
        let picked = [39, 0, 7, 7, 21]
        #expect(try bytes.subset(picked).features == floats.subset(picked).features)
        let view = try bytes.view(picked)
        #expect(view.isByteBacked && view.count == 5 && view.labels == picked.map { floats.labels[$0] })
        #expect(view.features == (try floats.subset(picked)).features)
        // A view of a view, and a subset of a view, follow both maps.
        #expect(try view.view([4, 1]).features == floats.subset([21, 0]).features)
        #expect(try view.subset([2, 0]).features == floats.subset([7, 39]).features)
        // Rows gathered in any order, and chunks of rows, are the same floats.
        var gathered = [Float](repeating: 0, count: 15)
        gathered.withUnsafeMutableBufferPointer { bytes.gatherRows([3, 1, 2], into: $0.baseAddress!) }
        #expect(gathered == (try floats.subset([3, 1, 2])).features)
        var chunks: [Float] = []
        bytes.forEachRowChunk(7) { start, rows in
            #expect(start % 7 == 0)
            chunks += rows
        }
        #expect(chunks == floats.features)
        // Put in another order in place, rows and labels move together.
        var order = Array(0..<40)
        var rng = SplitMix64(seed: 3)
        rng.shuffle(&order)
        var moved = bytes
        try moved.permuteRows(order)
        let reordered = try floats.subset(order)
        #expect(moved.isByteBacked && moved.features == reordered.features && moved.labels == reordered.labels)
        #expect(throws: LearnerError.self) { try moved.permuteRows([0, 0] + Array(2..<40)) }
        #expect(throws: LearnerError.self) { try bytes.view([40]) }
    }

    @Test func normalisingBytes_changesOnlyTheMap_andAgreesWithFloatsToRounding() throws {
        let (bytes, floats) = try Self.pair()
        for kind in [Normalizer.Kind.minMax, .standardize] {
            let normalizer = Normalizer.fit(kind, on: floats)
            #expect(Normalizer.fit(kind, on: bytes) == normalizer)
            var a = bytes, b = floats
            try a.normalize(with: normalizer)
            try b.normalize(with: normalizer)
            #expect(a.isByteBacked)
            for (x, y) in zip(a.features, b.features) { #expect(abs(x - y) <= 1e-5 * max(1, abs(y)), "\(kind): \(x) against \(y)") }
            // Twice in a row composes the two maps.
            try a.normalize(with: normalizer)
            try b.normalize(with: normalizer)
            for (x, y) in zip(a.features, b.features) { #expect(abs(x - y) <= 1e-4 * max(1, abs(y)), "\(kind), twice: \(x) against \(y)") }
        }
        // A view of floats normalises rows of its own, leaving its parent as it was.
        var view = try floats.view([1, 2])
        try view.normalize(with: Normalizer.fit(.minMax, on: floats))
        #expect(floats == (try Self.pair()).floats)
        #expect(throws: LearnerError.self) { var wrong = bytes; try wrong.normalize(with: .identity(featureCount: 4)) }
    }
}
