import Crypto
import Gossip
import Learner

/// A whole model sent to a neighbour by the algorithms that exchange copies rather than mass
/// (gossip learning, D-PSGD). A lost copy loses nothing: the sender keeps its model.
public struct ModelCopy: Sendable, Equatable {
    /// Training rounds behind the model (gossip learning merges by it).
    public var age: UInt64
    /// The sender's number of neighbours (D-PSGD's Metropolis–Hastings weights need it).
    public var degree: UInt32
    /// Parameters in the model.
    public var count: Int
    /// The codec that produced `payload`.
    public var codec: UInt8
    public var payload: SharePayload
}

/// What model-exchanging nodes send each other.
public enum ModelExchangeMessage: Sendable, Equatable, WireSized, TraceIdentified {
    case model(ModelCopy)

    /// Kind, age, degree, count and codec.
    public static let headerSize = 1 + 8 + 4 + 4 + 1

    public var wireSize: Int {
        switch self {
        case .model(let copy): return Self.headerSize + copy.payload.byteCount
        }
    }

    public var traceWord: UInt64 {
        switch self {
        case .model(let copy): return traceMix(0x51, copy.age, UInt64(copy.degree), UInt64(copy.count))
        }
    }
}

/// Local SGD steps as work for the driver: a pure job from a starting model, shared by every
/// learning algorithm.
enum LocalTraining {
    /// What a training round sends back.
    struct Outcome: Sendable {
        var parameters: [Float]
        var trainer: Trainer
        var loss: Double
    }

    /// A request to run `steps` steps of `trainer` on `data` from `start`; its cost is about six
    /// multiply-adds per parameter per sample (a forward and a backward pass).
    static func request(id: UInt64, trainer: Trainer, data: Dataset, architecture: Architecture, start: [Float], steps: Int) -> ComputeRequest {
        let cost = Double(steps * trainer.config.batchSize * architecture.parameterCount * 6)
        return ComputeRequest(id: id, cost: cost) {
            var trainer = trainer
            guard var model = try? Model(architecture: architecture, parameters: start),
                  let loss = try? trainer.train(&model, on: data, steps: steps) else {
                return Outcome(parameters: [], trainer: trainer, loss: .nan)
            }
            return Outcome(parameters: model.flatten(), trainer: trainer, loss: loss)
        }
    }

    /// The parameters of a finished round, if it succeeded with a model of `count` parameters.
    static func parameters(of result: any Sendable, count: Int) -> Outcome? {
        guard let outcome = result as? Outcome, outcome.parameters.count == count, outcome.loss.isFinite else { return nil }
        return outcome
    }
}

/// Decodes model copies, refusing what does not fit (wrong codec or size, non-finite values).
struct ModelCopyCodec: Sendable {
    let codec: any ShareCodec
    let count: Int

    func encode(_ parameters: [Float], age: UInt64, degree: Int) -> ModelCopy {
        ModelCopy(age: age, degree: UInt32(clamping: degree), count: parameters.count, codec: codec.identifier,
                  payload: codec.encode(parameters).payload)
    }

    func decode(_ copy: ModelCopy) -> [Float]? {
        guard copy.codec == codec.identifier, copy.count == count,
              let values = try? codec.decode(copy.payload, count: count), values.allSatisfy(\.isFinite) else { return nil }
        return values
    }
}
