import Foundation
import Testing

/// The `name: value` lines `peer compress` prints on standard output.
func compressReport(_ result: RunResult) -> [String: String] {
    var report: [String: String] = [:]
    for line in result.stdout.split(separator: "\n") {
        guard let colon = line.range(of: ": ") else { continue }
        report[String(line[..<colon.lowerBound])] = String(line[colon.upperBound...])
    }
    return report
}

/// Runs `peer` with `arguments` in `scratch` and requires success.
@discardableResult
func runPeer(_ arguments: [String], in scratch: Scratch, sourceLocation: SourceLocation = #_sourceLocation) throws -> RunResult {
    let result = try CommandRunner.run("peer", arguments, in: scratch.url)
    #expect(result.status == 0, "peer \(arguments.joined(separator: " ")) failed: \(result.stderr)", sourceLocation: sourceLocation)
    return result
}

@Suite("peer compress")
struct CompressCommandTests {
    static let fashionMNIST = FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

    /// A figure of the report as a number (nan when it is missing, which fails every comparison).
    static func figure(_ report: [String: String], _ name: String) -> Double { report[name].flatMap(Double.init) ?? .nan }

    /// The issue's figures through the real commands: softmax and MLP 784-128-10 trained on
    /// Fashion-MNIST (3 epochs), int8 loses at most 1 point on both, pruning 80 % with 2
    /// epochs of fine-tuning at most 1.5 points on the MLP, and the MLP's files are at least
    /// 3.5 times (int8) and 4 times (pruned 80 % + int8) smaller than fp32.
    @Test("int8 and pruning keep Fashion-MNIST accuracy and shrink the files as promised", .enabled(if: fashionMNIST))
    func deploymentFigures() throws {
        let scratch = try Scratch()
        try runPeer(["train", "--data", "fashion-mnist", "--model", "softmax", "--normalize", "minmax", "--lr", "0.05",
                     "--epochs", "3", "--out", "softmax.model"], in: scratch)
        try runPeer(["train", "--data", "fashion-mnist", "--model", "mlp:128", "--epochs", "3", "--out", "mlp.model"], in: scratch)

        var int8: [String: [String: String]] = [:]
        for model in ["softmax", "mlp"] {
            let report = compressReport(try runPeer(["compress", "--model", "\(model).model", "--out", "\(model)-int8.model",
                                                     "--quantize", "int8", "--test", "fashion-mnist"], in: scratch))
            let before = Self.figure(report, "accuracy before"), after = Self.figure(report, "accuracy after")
            #expect(before >= (model == "mlp" ? 0.86 : 0.83), "\(model) trained to \(before) only")
            #expect(after >= before - 0.01, "int8 \(model): accuracy \(before) -> \(after)")
            #expect(report["storage after"] == "int8")
            int8[model] = report
        }
        let mlpBytes = Self.figure(int8["mlp"] ?? [:], "bytes before"), int8Bytes = Self.figure(int8["mlp"] ?? [:], "bytes after")
        #expect(mlpBytes / int8Bytes >= 3.5, "MLP int8: \(mlpBytes) -> \(int8Bytes) bytes")

        let pruned = compressReport(try runPeer(["compress", "--model", "mlp.model", "--out", "p80.model", "--prune", "0.8",
                                                 "--finetune-epochs", "2", "--data", "fashion-mnist", "--test", "fashion-mnist"], in: scratch))
        let before = Self.figure(pruned, "accuracy before"), after = Self.figure(pruned, "accuracy after")
        #expect(after >= before - 0.015, "MLP pruned 80 % and fine-tuned: accuracy \(before) -> \(after)")
        #expect(pruned["storage after"] == "sparse fp32")

        let both = compressReport(try runPeer(["compress", "--model", "p80.model", "--out", "p80-int8.model", "--quantize", "int8",
                                               "--test", "fashion-mnist"], in: scratch))
        #expect(both["storage after"] == "sparse int8")
        let bothBytes = Self.figure(both, "bytes after")
        #expect(mlpBytes / bothBytes >= 4, "MLP pruned 80 % + int8: \(mlpBytes) -> \(bothBytes) bytes")
        #expect(Self.figure(both, "accuracy after") >= before - 0.015, "pruned 80 % + int8: \(before) -> \(both["accuracy after"] ?? "?")")

        // Every output is an ordinary model file.
        for file in ["softmax-int8.model", "mlp-int8.model", "p80.model", "p80-int8.model"] {
            let predicted = try runPeer(["predict", "--model", file, "--input", "fashion-mnist"], in: scratch)
            #expect(predicted.stdout.split(separator: "\n").count == 10_000 && predicted.stderr.contains("accuracy"))
        }
    }

    @Test("flags are checked before anything is read: a clear message and exit 64", arguments: [
        ([String](), "nothing to do"),
        (["--quantize", "int4"], "--quantize must be int8 or fp16, got 'int4'"),
        (["--prune", "1"], "--prune must be at least 0 and below 1"),
        (["--prune", "-0.1"], "--prune must be at least 0 and below 1"),
        (["--structured", "--quantize", "int8"], "--structured needs --prune"),
        (["--finetune-epochs", "2"], "--finetune-epochs needs --data"),
        (["--finetune-epochs", "0", "--data", "fashion-mnist"], "--finetune-epochs must be at least 1"),
        (["--quantize", "int8", "--data", "fashion-mnist"], "--data is what fine-tuning trains on"),
        (["--quantize", "int8", "--lr", "0.1"], "--lr sets fine-tuning"),
        (["--prune", "0.5", "--finetune-epochs", "1", "--data", "d.csv", "--lr", "-1"], "--lr must be a positive number"),
        (["--prune", "0.5", "--finetune-epochs", "1", "--data", "d.csv", "--batch", "0"], "--batch must be at least 1"),
        (["--quantize", "int8", "--threads", "0"], "--threads must be at least 1"),
        (["--quantize", "int8", "--label-column", "2"], "--label-column names a column of --data or --test"),
    ])
    func badFlags(flags: [String], message: String) throws {
        let scratch = try Scratch()
        let result = try CommandRunner.run("peer", ["compress", "--model", "missing.model", "--out", "out.model"] + flags, in: scratch.url)
        expectError(result, status: 64, mentions: [message])
        #expect(result.stderr.contains("Usage: peer compress"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out.model")))
    }

    @Test("an unwritable --out or a missing --model fails before any data is read, exit 1")
    func badFiles() throws {
        let scratch = try Scratch()
        let model = try trainIrisModel(in: scratch)
        let noDirectory = try CommandRunner.peer("compress", "--model", model, "--out", "nowhere/out.model", "--quantize", "int8", in: scratch.url)
        expectError(noDirectory, status: 1, mentions: ["--out nowhere/out.model", "does not exist or is not writable"])
        let missing = try CommandRunner.peer("compress", "--model", "missing.model", "--out", "out.model", "--quantize", "int8", in: scratch.url)
        expectError(missing, status: 1, mentions: ["missing.model", "no such file"])
        try Data("not a model".utf8).write(to: URL(fileURLWithPath: scratch.path("junk.model")))
        let junk = try CommandRunner.peer("compress", "--model", "junk.model", "--out", "out.model", "--quantize", "int8", in: scratch.url)
        expectError(junk, status: 1, mentions: ["junk.model", "not a usable model file"])
        let wide = try scratch.write("wide.csv", "label,a,b,c,d,e\n0,1,2,3,4,5\n1,1,2,3,4,5\n")
        let wrongWidth = try CommandRunner.peer("compress", "--model", model, "--out", "out.model", "--quantize", "int8", "--test", wide, in: scratch.url)
        expectError(wrongWidth, status: 1, mentions: ["--test", "wide.csv", "5 features", "takes 4"])
        #expect(!FileManager.default.fileExists(atPath: scratch.path("out.model")))
    }

    @Test("every option gives a model file that peer predict reads; standard output holds the report alone", arguments: [
        ["--quantize", "fp16"],
        ["--quantize", "int8"],
        ["--prune", "0.5"],
        ["--prune", "0.5", "--quantize", "int8"],
        ["--prune", "0.5", "--finetune-epochs", "2", "--data", "iris.csv", "--lr", "0.05", "--batch", "8", "--seed", "3"],
        ["--finetune-epochs", "1", "--data", "iris.csv"],
    ])
    func everyOptionPredicts(flags: [String]) throws {
        let scratch = try Scratch()
        let model = try trainIrisModel(in: scratch)
        let result = try runPeer(["compress", "--model", model, "--out", "small.model", "--test", "iris.csv"] + flags, in: scratch)
        let report = compressReport(result)
        #expect(Set(report.keys) == ["architecture before", "architecture after", "storage before", "storage after",
                                     "bytes before", "bytes after", "ratio", "accuracy before", "accuracy after"], "\(result.stdout)")
        #expect(result.stdout.split(separator: "\n").count == report.count, "stdout must hold the report alone: \(result.stdout)")
        #expect(result.stderr.contains("wrote small.model"))
        let predicted = try runPeer(["predict", "--model", "small.model", "--input", "iris.csv"], in: scratch)
        #expect(predicted.stdout.split(separator: "\n").count == 30)
        if flags.contains("--prune") {
            #expect(result.stderr.contains("pruned 6 of 12 weights"), "\(result.stderr)")
        }
    }

    @Test("--structured removes hidden units: a smaller ordinary MLP; a softmax has none to remove")
    func structured() throws {
        let scratch = try Scratch()
        let data = try scratch.write("iris.csv", irisLikeCSV())
        try runPeer(["train", "--data", data, "--model", "mlp:8", "--epochs", "2", "--out", "mlp.model"], in: scratch)
        let result = try runPeer(["compress", "--model", "mlp.model", "--out", "small.model", "--prune", "0.5", "--structured",
                                  "--finetune-epochs", "2", "--data", "iris.csv"], in: scratch)
        let report = compressReport(result)
        #expect(report["architecture before"] == "mlp:8" && report["architecture after"] == "mlp:4" && report["storage after"] == "fp32")
        #expect(try runPeer(["predict", "--model", "small.model", "--input", "iris.csv"], in: scratch).stderr.contains("mlp:4"))
        let softmax = try trainIrisModel(in: scratch)
        let refused = try CommandRunner.peer("compress", "--model", softmax, "--out", "s.model", "--prune", "0.5", "--structured", in: scratch.url)
        expectError(refused, status: 1, mentions: ["softmax has no hidden units to remove"])
    }
}
