import CommandSupport
import FlyingFox
import FlyingSocks
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Learner
import Synchronization

/// A model being served: what answers for it, and which version of it that is.
struct ServedModel: Sendable {
    let name: String
    /// The release version, or another label (`file`, a training round).
    let version: String
    let predictor: Predictor
    let description: String
}

/// The models a server answers for, each replaced whole: a request takes one snapshot of its
/// model and is answered by it alone, so a swap (a new release, a rollback, a better trained
/// model) falls between requests and no answer mixes two models.
final class ModelRegistry: Sendable {
    private let models = Mutex<[String: ServedModel]>([:])

    func set(_ model: ServedModel) { models.withLock { $0[model.name] = model } }
    func remove(_ name: String) { _ = models.withLock { $0.removeValue(forKey: name) } }
    func model(_ name: String) -> ServedModel? { models.withLock { $0[name] } }
    var all: [ServedModel] { models.withLock { $0.values.sorted { $0.name < $1.name } } }
}

/// Limits of the prediction server; the defaults suit an edge device answering a few clients.
struct ServingLimits: Sendable {
    /// Largest request body: a batch of 1,000 Fashion-MNIST images as JSON is about 6 MB.
    var maxBodyBytes = 16 << 20
    /// Requests answered at once; beyond, a request gets 503 at once instead of queueing
    /// without bound.
    var maxConcurrentRequests = 64
    /// Most rows (samples) in one request.
    var maxRowsPerRequest = 4_096
    /// How long the first request of a batch waits for others to join it (0: no batching).
    var batchWindow: Duration = .microseconds(500)
    /// Most rows run together in one micro-batch.
    var maxBatchRows = 64
}

/// A request the server refuses, with its HTTP status and a message naming the problem.
struct ServingError: Error {
    let status: HTTPStatusCode
    let message: String
}

/// Micro-batching: requests for the same model that arrive within the batch window run as one
/// batch through one snapshot of the model (one matrix product instead of many), then each
/// gets its own rows back.
final class MicroBatcher: Sendable {
    typealias Answer = (model: ServedModel, classes: [Int], probabilities: [Float])
    private struct Waiting {
        var rows: [Float]
        var count: Int
        var continuation: CheckedContinuation<Answer, any Error>
    }

    private let registry: ModelRegistry
    private let limits: ServingLimits
    private let queues = Mutex<[String: [Waiting]]>([:])
    /// Batches run so far, and rows in them (for the server's status).
    let batches = Atomic<Int>(0)
    let rows = Atomic<Int>(0)

    init(registry: ModelRegistry, limits: ServingLimits) {
        self.registry = registry
        self.limits = limits
    }

    /// Predicts `count` rows of raw features with the model called `name`.
    func predict(_ features: [Float], count: Int, model name: String) async throws -> Answer {
        if limits.batchWindow == .zero || count >= limits.maxBatchRows {
            guard let model = registry.model(name) else { throw ServingError(status: .notFound, message: "no model named '\(name)' is served") }
            let (classes, probabilities) = try model.predictor.predict(features, batch: count)
            batches.add(1, ordering: .relaxed)
            rows.add(count, ordering: .relaxed)
            return (model, classes, probabilities)
        }
        return try await withCheckedThrowingContinuation { continuation in
            let (first, full) = queues.withLock { queues -> (Bool, Bool) in
                var queue = queues[name] ?? []
                queue.append(Waiting(rows: features, count: count, continuation: continuation))
                queues[name] = queue
                return (queue.count == 1, queue.reduce(0) { $0 + $1.count } >= limits.maxBatchRows)
            }
            if full {
                flush(name)
            } else if first {
                let window = limits.batchWindow
                Task { [self] in
                    try? await Task.sleep(for: window)
                    flush(name)
                }
            }
        }
    }

    /// Runs what waits for `name` as one batch through one snapshot of the model.
    private func flush(_ name: String) {
        let waiting = queues.withLock { $0.removeValue(forKey: name) ?? [] }
        guard !waiting.isEmpty else { return }
        guard let model = registry.model(name) else {
            for w in waiting { w.continuation.resume(throwing: ServingError(status: .notFound, message: "no model named '\(name)' is served")) }
            return
        }
        let total = waiting.reduce(0) { $0 + $1.count }
        var features: [Float] = []
        features.reserveCapacity(total * model.predictor.architecture.inputCount)
        for w in waiting { features += w.rows }
        do {
            let (classes, probabilities) = try model.predictor.predict(features, batch: total)
            batches.add(1, ordering: .relaxed)
            rows.add(total, ordering: .relaxed)
            let width = model.predictor.architecture.classCount
            var start = 0
            for w in waiting {
                w.continuation.resume(returning: (model, Array(classes[start..<(start + w.count)]),
                                                  Array(probabilities[(start * width)..<((start + w.count) * width)])))
                start += w.count
            }
        } catch {
            for w in waiting { w.continuation.resume(throwing: ServingError(status: .badRequest, message: "\(error)")) }
        }
    }
}

/// A KServe v2 style prediction endpoint over HTTP/1.1 (FlyingFox):
///
/// - `GET /v2/health/live`, `GET /v2/health/ready`: 200 when live / when a model is served.
/// - `GET /v2/models/{name}`: metadata (versions, input `input` FP32 [-1, features], outputs).
/// - `GET /v2/models/{name}/ready`: 200 when the model is served, 404 otherwise.
/// - `POST /v2/models/{name}/infer`: one input `input`, FP32, shape [batch, features], data
///   row-major; answers outputs `class` (INT64, [batch]) and `probabilities` (FP32, [batch,
///   classes]), with `model_version` naming the model that answered.
///
/// A malformed, oversized or wrong-shaped request gets a 4xx with `{"error": ...}`; more than
/// ``ServingLimits/maxConcurrentRequests`` at once get 503. Every refusal is counted.
final class InferenceServer: Sendable {
    let registry: ModelRegistry
    let limits: ServingLimits
    let batcher: MicroBatcher
    private let server: HTTPServer
    private let inFlight = Atomic<Int>(0)
    /// Requests answered, and refused (by status class).
    let answered = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    let busy = Atomic<Int>(0)

    init(host: String, port: UInt16, registry: ModelRegistry, limits: ServingLimits) throws {
        self.registry = registry
        self.limits = limits
        batcher = MicroBatcher(registry: registry, limits: limits)
        let pool = NoDelaySocketPool(base: HTTPServer.defaultPool())
        let config = host.contains(":") ? HTTPServer.Configuration(address: try sockaddr_in6.inet6(ip6: host, port: port), timeout: 30, pool: pool, logger: ServerLog())
                                        : HTTPServer.Configuration(address: try sockaddr_in.inet(ip4: host, port: port), timeout: 30, pool: pool, logger: ServerLog())
        server = HTTPServer(config: config)
    }

    /// Starts listening; returns the port (useful with port 0) once the socket is bound.
    func start() async throws -> UInt16 {
        await addRoutes()
        let server = self.server
        Task { try await server.run() }
        try await server.waitUntilListening(timeout: 10)
        guard case .ip4(_, let port)? = await server.listeningAddress else {
            if case .ip6(_, let port)? = await server.listeningAddress { return port }
            throw ServingError(status: .internalServerError, message: "the server reports no listening address")
        }
        return port
    }

    func stop() async { await server.stop(timeout: 1) }

    /// Counters for `peer status`: requests answered, refused (4xx) and turned away busy (503),
    /// micro-batches run and rows in them, the models served.
    var status: [String: Any] {
        ["answered": answered.load(ordering: .relaxed), "refused": refused.load(ordering: .relaxed), "busy": busy.load(ordering: .relaxed),
         "batches": batcher.batches.load(ordering: .relaxed), "rows": batcher.rows.load(ordering: .relaxed),
         "models": registry.all.map { "\($0.name) \($0.version)" }]
    }

    private func addRoutes() async {
        await server.appendRoute("GET /v2/health/live") { _ in Self.json(.ok, ["live": true]) }
        await server.appendRoute("GET /v2/health/ready") { [registry] _ in
            registry.all.isEmpty ? Self.json(.serviceUnavailable, ["ready": false, "error": "no model is served yet"]) : Self.json(.ok, ["ready": true])
        }
        await server.appendRoute("GET /v2") { [registry] _ in
            Self.json(.ok, ["name": "murmuration", "extensions": [] as [String], "models": registry.all.map(\.name)])
        }
        await server.appendRoute("GET /v2/models/:name/ready") { [registry] request in
            let name = request.routeParameters["name"] ?? ""
            guard let model = registry.model(name) else { return Self.json(.notFound, ["error": "no model named '\(name)' is served"]) }
            return Self.json(.ok, ["name": name, "ready": true, "version": model.version])
        }
        await server.appendRoute("GET /v2/models/:name") { [registry] request in
            let name = request.routeParameters["name"] ?? ""
            guard let model = registry.model(name) else { return Self.json(.notFound, ["error": "no model named '\(name)' is served"]) }
            let a = model.predictor.architecture
            return Self.json(.ok, [
                "name": name, "versions": [model.version], "platform": "murmuration", "description": model.description,
                "inputs": [["name": "input", "datatype": "FP32", "shape": [-1, a.inputCount]]],
                "outputs": [["name": "class", "datatype": "INT64", "shape": [-1]], ["name": "probabilities", "datatype": "FP32", "shape": [-1, a.classCount]]],
            ])
        }
        await server.appendRoute("POST /v2/models/:name/infer") { [self] request in
            await infer(request)
        }
    }

    private func infer(_ request: HTTPRequest) async -> HTTPResponse {
        let name = request.routeParameters["name"] ?? ""
        guard inFlight.add(1, ordering: .relaxed).newValue <= limits.maxConcurrentRequests else {
            inFlight.subtract(1, ordering: .relaxed)
            busy.add(1, ordering: .relaxed)
            return Self.json(.serviceUnavailable, ["error": "the server is busy: \(limits.maxConcurrentRequests) requests in flight; retry shortly"])
        }
        defer { inFlight.subtract(1, ordering: .relaxed) }
        do {
            let body = try await Self.body(of: request, limit: limits.maxBodyBytes)
            guard let model = registry.model(name) else { throw ServingError(status: .notFound, message: "no model named '\(name)' is served") }
            let (features, rows, id) = try Self.parse(body, inputs: model.predictor.architecture.inputCount, maxRows: limits.maxRowsPerRequest)
            let answer = try await batcher.predict(features, count: rows, model: name)
            answered.add(1, ordering: .relaxed)
            let classes = answer.model.predictor.architecture.classCount
            let response = InferResponse(
                modelName: name, modelVersion: answer.model.version, id: id,
                outputs: [.init(name: "class", datatype: "INT64", shape: [rows], data: .integers(answer.classes)),
                          .init(name: "probabilities", datatype: "FP32", shape: [rows, classes], data: .floats(answer.probabilities))])
            let data = try JSONEncoder().encode(response)
            return HTTPResponse(statusCode: .ok, headers: [.contentType: "application/json"], body: data)
        } catch let error as ServingError {
            refused.add(1, ordering: .relaxed)
            return Self.json(error.status, ["error": error.message])
        } catch {
            refused.add(1, ordering: .relaxed)
            return Self.json(.badRequest, ["error": "\(error)"])
        }
    }

    /// The body, refused past `limit` bytes before it is read whole.
    static func body(of request: HTTPRequest, limit: Int) async throws -> Data {
        if let declared = request.bodySequence.count, declared > limit {
            throw ServingError(status: .payloadTooLarge, message: "the request body has \(declared) bytes; the limit is \(limit)")
        }
        var body = Data()
        for try await piece in request.bodySequence {
            body.append(piece)
            guard body.count <= limit else { throw ServingError(status: .payloadTooLarge, message: "the request body exceeds the limit of \(limit) bytes") }
        }
        return body
    }

    /// The request's one FP32 input as row-major features, its row count, checked against the
    /// model's input width, and the request's `id` (echoed back as KServe does).
    static func parse(_ body: Data, inputs: Int, maxRows: Int) throws -> ([Float], Int, String?) {
        let request: InferRequest
        do { request = try JSONDecoder().decode(InferRequest.self, from: body) } catch {
            throw ServingError(status: .badRequest, message: "the body is not a KServe v2 inference request: \(Self.reason(error)); expected {\"inputs\": [{\"name\": \"input\", \"datatype\": \"FP32\", \"shape\": [BATCH, \(inputs)], \"data\": [...]}]}")
        }
        guard request.inputs.count == 1, let input = request.inputs.first else {
            throw ServingError(status: .badRequest, message: "expected exactly one input named 'input', got \(request.inputs.count)")
        }
        guard input.name == "input" else { throw ServingError(status: .badRequest, message: "the input is named '\(input.name)'; this model takes one input named 'input'") }
        guard input.datatype == "FP32" else { throw ServingError(status: .badRequest, message: "input datatype \(input.datatype); this model takes FP32") }
        guard input.shape.count == 2, input.shape[1] == inputs, input.shape[0] >= 1 else {
            throw ServingError(status: .badRequest, message: "input shape \(input.shape); this model takes [BATCH, \(inputs)] with BATCH ≥ 1")
        }
        let rows = input.shape[0]
        guard rows <= maxRows else { throw ServingError(status: .payloadTooLarge, message: "a batch of \(rows) rows; at most \(maxRows) per request") }
        guard input.data.count == rows * inputs else {
            throw ServingError(status: .badRequest, message: "input data has \(input.data.count) values; shape \(input.shape) needs \(rows * inputs)")
        }
        guard input.data.allSatisfy(\.isFinite) else { throw ServingError(status: .badRequest, message: "input data holds a value that is not a finite number") }
        return (input.data, rows, request.id)
    }

    static func reason(_ error: any Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c), DecodingError.dataCorrupted(let c):
            return c.codingPath.map(\.stringValue).joined(separator: ".") + (c.codingPath.isEmpty ? "" : ": ") + c.debugDescription
        case DecodingError.keyNotFound(let key, _): return "no '\(key.stringValue)' field"
        default: return "\(error)"
        }
    }

    static func json(_ status: HTTPStatusCode, _ object: [String: Any]) -> HTTPResponse {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return HTTPResponse(statusCode: status, headers: [.contentType: "application/json"], body: data)
    }
}

/// FlyingFox's socket pool, turning Nagle's algorithm off (TCP_NODELAY) on every socket it
/// waits on: the listening socket first, whose accepted connections inherit the option, and
/// each connection. FlyingFox writes a response's head and body in two writes; with Nagle on,
/// the body waits for the client's delayed acknowledgement of the head (40 ms on Linux), so
/// every request after the first on a keep-alive connection took over 40 ms.
struct NoDelaySocketPool: AsyncSocketPool {
    let base: any AsyncSocketPool

    func prepare() async throws { try await base.prepare() }
    func run() async throws { try await base.run() }

    func suspendSocket(_ socket: Socket, untilReadyFor events: Socket.Events) async throws {
        var on: Int32 = 1
        // Fails harmlessly on a socket that is not TCP.
        _ = setsockopt(socket.file.rawValue, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        try await base.suspendSocket(socket, untilReadyFor: events)
    }
}

/// FlyingFox's log, kept off standard output, which carries only the server's URL: its
/// warnings and errors go to standard error as notes; its line per connection and per
/// request is dropped.
struct ServerLog: Logging {
    func logDebug(_ debug: @autoclosure () -> String) {}
    func logInfo(_ info: @autoclosure () -> String) {}
    func logWarning(_ warning: @autoclosure () -> String) { printNote("HTTP server: \(warning())") }
    func logError(_ error: @autoclosure () -> String) { printNote("HTTP server: \(error())") }
    func logCritical(_ critical: @autoclosure () -> String) { printNote("HTTP server: \(critical())") }
}

/// The inference request's shape (KServe v2): inputs with name, datatype, shape and flat data.
struct InferRequest: Decodable {
    struct Input: Decodable {
        let name: String
        let datatype: String
        let shape: [Int]
        let data: [Float]
    }
    let id: String?
    let inputs: [Input]
}

/// The inference response: one output per named tensor.
struct InferResponse: Encodable {
    struct Output: Encodable {
        enum Values: Encodable {
            case integers([Int]), floats([Float])
            func encode(to encoder: any Encoder) throws {
                var container = encoder.singleValueContainer()
                switch self {
                case .integers(let v): try container.encode(v)
                case .floats(let v): try container.encode(v)
                }
            }
        }
        let name: String
        let datatype: String
        let shape: [Int]
        let data: Values
    }
    let modelName: String
    let modelVersion: String
    let id: String?
    let outputs: [Output]

    enum CodingKeys: String, CodingKey {
        case modelName = "model_name", modelVersion = "model_version", id, outputs
    }
}
