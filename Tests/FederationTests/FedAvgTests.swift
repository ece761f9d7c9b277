import DeterministicRandom
import Federation
import Foundation
import Learner
import Testing

/// Whether Debian's Fashion-MNIST is installed (`make deps`).
let fashionMNISTAvailable = FileManager.default.fileExists(atPath: DataSource.fashionMNISTDirectory + "/train-images-idx3-ubyte.gz")

/// Fashion-MNIST's training and test sets, pixels scaled to [0, 1] by the training set's range.
func fashionMNIST() throws -> (train: Dataset, test: Dataset) {
    var (train, loadedTest) = try DataSource.resolve("fashion-mnist").load()
    var test = try #require(loadedTest)
    let normalizer = Normalizer.fit(.minMax, on: train)
    try train.normalize(with: normalizer)
    try test.normalize(with: normalizer)
    return (train, test)
}

/// Three Gaussian blobs in six dimensions, one class per blob.
func blobs(count: Int, seed: UInt64) throws -> Dataset { try Dataset.gaussianBlobs(count: count, seed: seed) }

/// The FedAvg reference: the server's rounds, its sampling and its determinism.
@Suite(.serialized)
struct FedAvgTests {
    /// Bit-for-bit results need one OpenBLAS thread, which the program (here the test run) sets.
    init() { BLAS.setThreadCount(1) }

    static func clients(_ data: Dataset, count: Int, alpha: Double, seed: UInt64) throws -> [Dataset] {
        let partition = try Partition(labels: data.labels, classCount: data.classCount, peers: count, scheme: .dirichlet(alpha: alpha), seed: seed)
        return try (0..<count).map { try partition.dataset(forPeer: $0, of: data) }
    }

    @Test func nonIIDClients_learnTheWholeTask() throws {
        let clients = try Self.clients(try blobs(count: 1_200, seed: 1), count: 8, alpha: 0.3, seed: 2)
        let arch = try Architecture(inputCount: 6, hiddenSizes: [], classCount: 3)
        var server = try FedAvg(architecture: arch, clients: clients, settings: .init(clientFraction: 0.5), seed: 3)
        let before = try server.model.evaluate(on: try blobs(count: 600, seed: 9)).accuracy
        for _ in 0..<20 { try server.runRound() }
        let after = try server.model.evaluate(on: try blobs(count: 600, seed: 9)).accuracy
        #expect(before < 0.6 && after > 0.95, "accuracy \(before) before, \(after) after 20 rounds")
    }

    @Test func eachRound_samplesTheClientFraction_andCountsTheModelBytes() throws {
        var clients = try Self.clients(try blobs(count: 600, seed: 1), count: 10, alpha: 1, seed: 2)
        clients[4] = try clients[4].subset([])
        let arch = try Architecture(inputCount: 6, hiddenSizes: [], classCount: 3)
        var server = try FedAvg(architecture: arch, clients: clients, settings: .init(clientFraction: 0.3), seed: 3)
        var seen = Set<Int>()
        for r in 1...30 {
            let round = try server.runRound()
            #expect(round.number == r)
            #expect(round.clients.count == 3 && Set(round.clients).count == 3, "round(0.3 × 9 clients with data) = 3, distinct")
            #expect(!round.clients.contains(4), "a client without data is never sampled")
            #expect(round.bytes == 2 * 3 * arch.parameterCount * 4)
            seen.formUnion(round.clients)
        }
        #expect(seen.count == 9, "every client with data is sampled at some point")
    }

    @Test func aSeed_reproducesTheRun_bitForBit() throws {
        let clients = try Self.clients(try blobs(count: 600, seed: 1), count: 6, alpha: 0.5, seed: 2)
        let arch = try Architecture(inputCount: 6, hiddenSizes: [8], classCount: 3)
        func run(seed: UInt64) throws -> [Float] {
            var server = try FedAvg(architecture: arch, clients: clients, seed: seed)
            for _ in 0..<5 { try server.runRound() }
            return server.model.flatten()
        }
        #expect(try run(seed: 4) == run(seed: 4))
        #expect(try run(seed: 4) != run(seed: 5))
    }

    @Test func invalidSettings_areRefusedWithTheirName() throws {
        let clients = [try blobs(count: 30, seed: 1)]
        let arch = try Architecture(inputCount: 6, hiddenSizes: [], classCount: 3)
        #expect(throws: LearnerError.self) { try FedAvg(architecture: arch, clients: clients, settings: .init(clientFraction: 0), seed: 1) }
        #expect(throws: LearnerError.self) { try FedAvg(architecture: arch, clients: clients, settings: .init(localEpochs: 0), seed: 1) }
        #expect(throws: LearnerError.self) { try FedAvg(architecture: arch, clients: [try clients[0].subset([])], seed: 1) }
    }

    /// The reference of the decentralized-learning scenario: 32 clients, Dirichlet α = 0.5 over
    /// Fashion-MNIST's training set, softmax regression, C = 0.25, E = 1, B = 32, lr 0.05.
    @Test(.enabled(if: fashionMNISTAvailable))
    func fashionMNIST_32DirichletClients_softmax() throws {
        let (train, test) = try fashionMNIST()
        let clients = try Self.clients(train, count: 32, alpha: 0.5, seed: 1)
        let arch = try Architecture(inputCount: 784, hiddenSizes: [], classCount: 10)
        var server = try FedAvg(architecture: arch, clients: clients, seed: 1)
        var curve: [Double] = []
        for r in 1...40 {
            try server.runRound()
            if r % 10 == 0 { curve.append(try server.model.evaluate(on: test).accuracy) }
        }
        print("FedAvg, 32 Dirichlet(0.5) clients, softmax: accuracy every 10 rounds \(curve)")
        #expect((curve.last ?? 0) >= 0.80, "\(curve)")
    }
}
