import Foundation
import Histogram
import Learner

/// Serving the deployment suite's MLP, one thread each: our in-process `Predictor` (fp32 and
/// int8) beside ONNX Runtime running the same weights and normaliser in process
/// (`scripts/onnx_baseline.py`, in the same run), and our HTTP endpoint (`peer serve`) from one
/// client on one keep-alive connection. Batch-1 latencies are recorded into HdrHistogram
/// (nanoseconds, three significant digits); throughput is at batch 1,000.
/// Targets: in-process p50 latency and batch throughput at least ONNX Runtime's.
enum ServingBench {
    static let warmupCalls = 1_000
    static let timedCalls = 10_000
    /// Round trips timed with the default micro-batching window, which each one waits out.
    static let windowedCalls = 2_000
    static let throughputBatch = 1_000
    static let throughputRepeats = 20
    /// Distinct test images the batch-1 calls cycle through, prepared beforehand.
    static let sampleCount = 256

    /// Batch-1 latency percentiles, in microseconds.
    struct Latency {
        let p50: Double
        let p99: Double
    }

    /// One form of the model measured in one runtime.
    struct Measured {
        let latency: Latency
        let throughput: Double
        /// For ONNX Runtime: the share of test images on which its class is ours.
        var agreement: Double?
    }

    /// Measures everything, adds the figures to `report` and returns the Markdown table of
    /// docs/benchmarks.md. `scratch` takes the files handed to the baseline and the server.
    static func run(_ mlp: ModelFile.Contents, test: Dataset, scratch: URL, into report: inout BenchReport) throws -> String {
        let file = ModelFile.encode(mlp)
        // What a deployment runs: the file's bytes, read back.
        let fp32 = Predictor(try ModelFile.decode(file))
        let int8 = Predictor(try ModelFile.decode(ModelFile.encode(Compression.converted(mlp, to: .int8))))
        let features = test.features
        let samples = (0..<sampleCount).map { Array(features[($0 * test.featureCount)..<(($0 + 1) * test.featureCount)]) }
        var ours: [(form: String, measured: Measured, classes: [Int])] = []
        for (form, predictor) in [("fp32", fp32), ("int8", int8)] {
            let latency = try timeCalls(timedCalls) { call in _ = try predictor.predict(samples[call % samples.count], batch: 1) }
            let measured = Measured(latency: latency, throughput: try throughput(predictor, test))
            ours.append((form, measured, try predictor.predict(features, batch: test.count).classes))
        }

        let weights = scratch.appendingPathComponent("mlp-for-onnx.bin")
        try baselineInput(mlp, test: test, classes: ours.map { ($0.form, $0.classes) }).write(to: weights)
        let onnx = onnxRuntime(weights: weights.path)

        let modelPath = scratch.appendingPathComponent("mlp.model").path
        try Data(file).write(to: URL(fileURLWithPath: modelPath))
        let expected = Array(ours[0].classes.prefix(sampleCount))
        let unbatched = try http(modelPath, samples: samples, expected: expected, batchWindow: 0, calls: timedCalls, scratch: scratch)
        let windowed = try http(modelPath, samples: samples, expected: expected, batchWindow: nil, calls: windowedCalls, scratch: scratch)

        let library = onnx?.library ?? "ONNX Runtime"
        let baselineNote = onnx == nil ? "ONNX Runtime baseline unavailable (see stderr)"
            : "baseline: \(library) in process, the same weights and normaliser, 1 thread, sequential"
        var table = ["| figure | ours | \(library) | ours / ONNX Runtime |", "|---|---:|---:|---:|"]
        func row(_ name: String, _ value: Double, _ baseline: Double?, unit: String, higherIsBetter: Bool) {
            let ratio = baseline.map { higherIsBetter ? value / $0 : $0 / value }
            let shown = { (x: Double) in unit == "µs" ? String(format: "%.1f µs", x) : "\(DeploymentBench.grouped(Int(x.rounded())))/s" }
            table.append("| \(name) | \(shown(value)) | \(baseline.map(shown) ?? "-") | \(ratio.map { String(format: "%.2f×", $0) } ?? "-") |")
        }
        for (form, measured, _) in ours {
            let theirs = onnx?.forms[form]
            let agreement = theirs?.agreement.map { String(format: "; ONNX Runtime's class is ours on %.2f %% of the %d test images", $0 * 100, test.count) } ?? ""
            for (percentile, value, baseline) in [("p50", measured.latency.p50, theirs?.latency.p50), ("p99", measured.latency.p99, theirs?.latency.p99)] {
                report.add(BenchFigure(name: "mlp \(form) batch-1 latency \(percentile), in process", value: value, unit: "µs",
                                       baseline: baseline, ratio: baseline.map { $0 / value },
                                       note: "Predictor, HdrHistogram of \(timedCalls) calls after \(warmupCalls), 1 BLAS thread; \(baselineNote)\(agreement)"))
                row("batch-1 latency \(percentile), \(form), in process", value, baseline, unit: "µs", higherIsBetter: false)
            }
            report.add(BenchFigure(name: "mlp \(form) throughput at batch \(throughputBatch)", value: measured.throughput, unit: "predictions/s",
                                   baseline: theirs?.throughput, ratio: theirs.map { measured.throughput / $0.throughput },
                                   note: "best of \(throughputRepeats) batches, \(OneDNN.summary); \(baselineNote)"))
            row("predictions/s at batch \(DeploymentBench.grouped(throughputBatch)), \(form)", measured.throughput, theirs?.throughput, unit: "/s", higherIsBetter: true)
        }
        let onnxFP32 = onnx?.forms["fp32"]?.latency
        for (window, latency, calls) in [("--batch-window 0", unbatched, timedCalls), ("default --batch-window (500 µs)", windowed, windowedCalls)] {
            for (percentile, value, baseline) in [("p50", latency.p50, onnxFP32?.p50), ("p99", latency.p99, onnxFP32?.p99)] {
                report.add(BenchFigure(name: "mlp fp32 batch-1 latency \(percentile), HTTP, \(window)", value: value, unit: "µs",
                                       baseline: baseline, ratio: baseline.map { $0 / value },
                                       note: "peer serve, KServe v2 JSON, one client, one keep-alive connection, \(calls) round trips after \(warmupCalls); baseline: ONNX Runtime fp32 in process"))
                row("batch-1 round trip \(percentile), HTTP, \(window)", value, baseline, unit: "µs", higherIsBetter: false)
            }
        }
        return table.joined(separator: "\n")
    }

    /// Times `count` calls of `body` (given the call's number) after `warmupCalls` untimed
    /// ones; the percentiles of their durations.
    static func timeCalls(_ count: Int, _ body: (Int) throws -> Void) throws -> Latency {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for call in 0..<(warmupCalls + count) {
            let start = DispatchTime.now().uptimeNanoseconds
            try body(call)
            let elapsed = DispatchTime.now().uptimeNanoseconds - start
            if call >= warmupCalls { _ = histogram.record(elapsed) }
        }
        return Latency(p50: Double(histogram.valueAtPercentile(50)) / 1e3, p99: Double(histogram.valueAtPercentile(99)) / 1e3)
    }

    /// Predictions per second for batches of `throughputBatch` test images, the best of
    /// `throughputRepeats` batches.
    static func throughput(_ predictor: Predictor, _ test: Dataset) throws -> Double {
        let batch = Array(test.features[0..<(throughputBatch * test.featureCount)])
        let seconds = try bestTime(repeats: throughputRepeats) { _ = try predictor.predict(batch, batch: throughputBatch) }
        return Double(throughputBatch) / seconds
    }

    /// What `scripts/onnx_baseline.py` reads: one JSON line naming the arrays, then each
    /// array's values, little-endian: the normaliser, every layer's weights (out × in,
    /// row-major) and biases, the raw test images, and our classes for them in each form.
    static func baselineInput(_ contents: ModelFile.Contents, test: Dataset, classes: [(form: String, classes: [Int])]) throws -> Data {
        let architecture = contents.model.architecture
        let sizes = architecture.layerSizes
        let parameters = contents.model.parameters
        var floats: [(String, [Int], [Float])] = [
            ("offsets", [architecture.inputCount], contents.normalizer.offsets),
            ("scales", [architecture.inputCount], contents.normalizer.scales),
        ]
        for l in 0..<architecture.layerCount {
            let weights = architecture.weightOffset(l), biases = weights + sizes[l + 1] * sizes[l]
            floats.append(("layer\(l).weights", [sizes[l + 1], sizes[l]], Array(parameters[weights..<biases])))
            floats.append(("layer\(l).biases", [sizes[l + 1]], Array(parameters[biases..<(biases + sizes[l + 1])])))
        }
        floats.append(("test.features", [test.count, test.featureCount], test.features))
        var entries = floats.map { ["name": $0.0, "dtype": "<f4", "shape": $0.1] as [String: Any] }
        entries += classes.map { ["name": "\($0.form).classes", "dtype": "<i4", "shape": [$0.classes.count]] }
        let header = ["format": "murmur-bench mlp", "layers": architecture.layerCount, "classes": architecture.classCount, "arrays": entries] as [String: Any]
        var data = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        data.append(UInt8(ascii: "\n"))
        for (_, _, values) in floats {
            for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        }
        for (_, values) in classes {
            for v in values { withUnsafeBytes(of: Int32(v).littleEndian) { data.append(contentsOf: $0) } }
        }
        return data
    }

    /// ONNX Runtime's figures for each form it measured, and its name and version; nil when
    /// the baseline could not run (pip could not install it, say).
    static func onnxRuntime(weights: String) -> (library: String, forms: [String: Measured])? {
        var environment = ProcessInfo.processInfo.environment
        // A current numpy and onnxruntime run slowly with the old kernel family this machine's
        // environment pins for Debian's OpenBLAS: the baseline runs without it.
        environment["OPENBLAS_CORETYPE"] = nil
        environment["OPENBLAS_L2_SIZE"] = nil
        for name in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"] { environment[name] = "1" }
        let arguments = ["--weights", weights, "--calls", String(timedCalls), "--warmup", String(warmupCalls),
                         "--batch", String(throughputBatch), "--repeats", String(throughputRepeats)]
        guard let object = Subprocess.pythonBaseline("onnx_baseline.py", arguments, environment: environment) else { return nil }
        var forms: [String: Measured] = [:]
        for form in ["fp32", "int8"] {
            guard let figures = object[form] as? [String: Any], let p50 = figures["latency_p50_us"] as? Double,
                  let p99 = figures["latency_p99_us"] as? Double, let perSecond = figures["throughput_per_second"] as? Double else { continue }
            forms[form] = Measured(latency: Latency(p50: p50, p99: p99), throughput: perSecond, agreement: figures["agreement_with_ours"] as? Double)
        }
        if let problem = object["int8_error"] as? String { FileHandle.standardError.write(Data("onnx_baseline.py: no int8 baseline: \(problem)\n".utf8)) }
        return (object["library"] as? String ?? "onnxruntime", forms)
    }

    /// Batch-1 round trips to `peer serve` with `modelPath` (`batchWindow` µs, or the default
    /// window when nil), one keep-alive connection: their percentiles. The warm-up calls
    /// check each answer's class against `expected`, the in-process class of each sample.
    static func http(_ modelPath: String, samples: [[Float]], expected: [Int], batchWindow: Int?, calls: Int, scratch: URL) throws -> Latency {
        var arguments = ["serve", "--model", modelPath, "--listen", "127.0.0.1:0", "--name", "mlp"]
        if let batchWindow { arguments += ["--batch-window", String(batchWindow)] }
        let output = scratch.appendingPathComponent("serve.out")
        let server = try Subprocess.start(Subprocess.sibling("peer"), arguments, stdout: try Subprocess.log("serve.out", in: scratch),
                                          stderr: try Subprocess.log("serve.log", in: scratch))
        defer { Subprocess.stop([server]) }
        let url = try Subprocess.waitForLine(containing: "http://", in: output.path, from: server)
        guard let address = url.split(separator: "/").last, let colon = address.lastIndex(of: ":"),
              let port = UInt16(address[address.index(after: colon)...]) else { throw BenchFailure("peer serve printed '\(url)', not http://HOST:PORT") }
        let host = String(address[..<colon])
        let client = try KeepAliveHTTPClient(host: host, port: port)
        let requests = samples.map { sample in
            KeepAliveHTTPClient.post("/v2/models/mlp/infer", host: String(address),
                                     json: #"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,\#(sample.count)],"data":[\#(sample.map { "\($0)" }.joined(separator: ","))]}]}"#)
        }
        return try timeCalls(calls) { call in
            let (status, body) = try client.send(requests[call % requests.count])
            guard status == 200 else { throw BenchFailure("peer serve answered \(status): \(String(decoding: body, as: UTF8.self))") }
            if call < requests.count {
                let answer = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
                let outputs = answer?["outputs"] as? [[String: Any]]
                let classes = outputs?.first { $0["name"] as? String == "class" }?["data"] as? [Int]
                guard classes == [expected[call]] else {
                    throw BenchFailure("peer serve's class for test image \(call) is \(classes ?? []), in process \(expected[call])")
                }
            }
        }
    }
}
