import ArgumentParser
import CommandSupport
import Dispatch
import Foundation
import Gossip
import Learner
import Synchronization

/// The serving flags `peer serve` and `peer join --serve` share.
struct ServingOptions: ParsableArguments {
    @Option(name: .customLong("batch-window"), parsing: .unconditional,
            help: "Microseconds the first request of a micro-batch waits for others to join it (0: no batching).")
    var batchWindow: Int = 500
    @Option(name: .customLong("max-batch"), help: "Most rows run together in one micro-batch.")
    var maxBatch: Int = 64
    @Option(name: .customLong("max-body"), help: "Largest request body in bytes.")
    var maxBody: Int = 16 << 20
    @Option(name: .customLong("max-concurrent"), help: "Requests answered at once; more get 503.")
    var maxConcurrent: Int = 64

    func validate() throws {
        guard (0...1_000_000).contains(batchWindow) else { throw ValidationError("--batch-window is microseconds from 0 to 1000000, got \(batchWindow)") }
        guard maxBatch >= 1 else { throw ValidationError("--max-batch must be at least 1, got \(maxBatch)") }
        guard maxBody >= 1_024 else { throw ValidationError("--max-body must be at least 1024 bytes, got \(maxBody)") }
        guard maxConcurrent >= 1 else { throw ValidationError("--max-concurrent must be at least 1, got \(maxConcurrent)") }
    }

    var limits: ServingLimits {
        var l = ServingLimits()
        l.batchWindow = .microseconds(batchWindow)
        l.maxBatchRows = maxBatch
        l.maxBodyBytes = maxBody
        l.maxConcurrentRequests = maxConcurrent
        return l
    }

    /// Starts a server on `address` for `registry`, says where on standard error, and returns
    /// it with its URL (`peer serve` prints that on standard output; `peer join`'s standard
    /// output stays its peer ID).
    func startServer(at address: String, flag: String, registry: ModelRegistry) throws -> (server: InferenceServer, url: String) {
        let hostPort = try HostPort(parsing: address, flag: flag).resolved()
        let server = try userFacing { try InferenceServer(host: hostPort.host, port: hostPort.port, registry: registry, limits: limits) }
        let started = DispatchSemaphore(value: 0)
        let outcome = Mutexed<Result<UInt16, any Error>?>(nil)
        Task {
            do { outcome.set(.success(try await server.start())) } catch { outcome.set(.failure(error)) }
            started.signal()
        }
        started.wait()
        switch outcome.get() {
        case .success(let port)?:
            let host = hostPort.host.contains(":") ? "[\(hostPort.host)]" : hostPort.host
            printNote("serving predictions on http://\(host):\(port)/v2 (KServe v2: POST /v2/models/NAME/infer); batches: \(OneDNN.summary)")
            return (server, "http://\(host):\(port)")
        case .failure(let error)?:
            throw UserFacingError("\(flag) \(address): cannot listen (\(error)); is the port in use?")
        case nil:
            throw UserFacingError("\(flag) \(address): the server did not start")
        }
    }
}

/// A value shared between a task and the thread that waits for it.
final class Mutexed<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ initial: Value) { value = Mutex(initial) }
    func set(_ v: Value) { value.withLock { $0 = v } }
    func get() -> Value { value.withLock { $0 } }
}

/// What `peer join --serve` serves: every model's active release, swapped in when a release
/// activates or is rolled back (and, on a training peer, its own model as `local`).
enum NetworkServing {
    /// Serves the active releases of `runtime`'s node now, and follows their changes.
    static func follow<Node>(_ runtime: OverlayRuntime<Node>, into registry: ModelRegistry) {
        guard let releases = runtime.node.overlay.releases else { return }
        for (name, version) in releases.active.sorted(by: { $0.key < $1.key }) { serve(ReleaseKey(name: name, version: version), of: runtime, into: registry) }
        let previous = runtime.onEvent
        runtime.onEvent = { [unowned runtime] event in
            previous?(event)
            guard case .release(let e)? = Node.overlayEvent(event) else { return }
            switch e {
            case .activated(let key, _): serve(key, of: runtime, into: registry)
            case .rolledBack(let notice, let active):
                if let active { serve(ReleaseKey(name: notice.key.name, version: active), of: runtime, into: registry) } else { registry.remove(notice.key.name) }
            default: break
            }
        }
    }

    /// Builds the predictor of release `key` and swaps it in.
    static func serve<Node>(_ key: ReleaseKey, of runtime: OverlayRuntime<Node>, into registry: ModelRegistry) {
        guard let file = runtime.node.overlay.releases?.holdings[key]?.file else { return }
        do {
            let contents = try ModelFile.decode(file, path: "release \(key)")
            registry.set(ServedModel(name: key.name, version: "\(key.version)", predictor: Predictor(contents), description: ReleaseControl.describe(contents)))
            printNote("serving \(key)")
        } catch {
            printNote("release \(key) is not a model this peer can serve (\(error)); still serving what it served before")
        }
    }
}

/// `peer serve`: answer predictions over HTTP with one model file, no network needed.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve predictions over HTTP (KServe v2 inference protocol) with one model file.",
        discussion: """
        POST /v2/models/NAME/infer with {"inputs": [{"name": "input", "datatype": "FP32", "shape": [BATCH, FEATURES], "data": [...]}]} \
        answers the outputs "class" (INT64, [BATCH]) and "probabilities" (FP32, [BATCH, CLASSES]). Also \
        GET /v2/health/live, /v2/health/ready, /v2/models/NAME and /v2/models/NAME/ready. Requests \
        arriving within --batch-window run as one batch. When the model file changes (a new \
        `peer train` or `peer compress` output written over it), the new model replaces the old \
        one between requests; a file that does not load is reported and the old model kept. Prints \
        the server's URL on standard output; SIGINT or SIGTERM stops it. See docs/deployment.md.

        Example:
          peer serve --model model.bin --listen 127.0.0.1:8080
        """
    )

    @Option(help: "Model file (any encoding: fp32, fp16, int8, pruned).")
    var model: String
    @Option(help: "HOST:PORT to listen on (port 0 picks a free one).")
    var listen: String = "127.0.0.1:8080"
    @Option(help: "The model's name in the URL (default: the file name without its extension).")
    var name: String?
    @OptionGroup var serving: ServingOptions

    var modelName: String { name ?? URL(fileURLWithPath: model).deletingPathExtension().lastPathComponent }

    func validate() throws {
        _ = try HostPort(parsing: listen, flag: "--listen")
        guard !modelName.isEmpty, !modelName.contains("/") else { throw ValidationError("--name must be a non-empty name without '/'") }
    }

    func run() throws {
        let registry = ModelRegistry()
        var loaded = try load()
        registry.set(loaded.model)
        printNote("serving \(modelName): \(loaded.model.description)")
        let (server, url) = try serving.startServer(at: listen, flag: "--listen", registry: registry)
        FileHandle.standardOutput.write(Data((url + "\n").utf8))
        let stop = DispatchSemaphore(value: 0)
        let watchers = [SIGINT, SIGTERM].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stop.signal() }
            source.resume()
            return source
        }
        // Reloads the file when it changes: whole, checked, then swapped in.
        while stop.wait(timeout: .now() + 1) == .timedOut {
            guard let stamp = Self.stamp(model), stamp != loaded.stamp else { continue }
            do {
                loaded = try load()
                registry.set(loaded.model)
                printNote("reloaded \(model): \(loaded.model.description)")
            } catch {
                loaded.stamp = stamp
                printNote("\(model) changed but does not load (\(error)); still serving the previous model")
            }
        }
        for w in watchers { w.cancel() }
        let done = DispatchSemaphore(value: 0)
        Task {
            await server.stop()
            done.signal()
        }
        done.wait()
        printNote("stopped: \(server.answered.load(ordering: .relaxed)) requests answered, \(server.refused.load(ordering: .relaxed)) refused, \(server.busy.load(ordering: .relaxed)) turned away busy")
    }

    /// The model and the file's modification stamp.
    func load() throws -> (model: ServedModel, stamp: String?) {
        let stamp = Self.stamp(model)
        let contents = try ModelFile.read(model)
        let predictor = Predictor(contents)
        return (ServedModel(name: modelName, version: "file", predictor: predictor, description: ReleaseControl.describe(contents)), stamp)
    }

    /// Size and modification time of `path`, to notice a rewrite.
    static func stamp(_ path: String) -> String? {
        guard let a = try? FileManager.default.attributesOfItem(atPath: path) else { return nil }
        return "\(a[.size] ?? 0)-\((a[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)-\(a[.systemFileNumber] ?? 0)"
    }
}
