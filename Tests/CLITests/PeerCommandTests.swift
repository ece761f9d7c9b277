import Foundation
import Testing

/// A small labelled CSV in the shape of Iris: four features, three classes, `rows` rows,
/// with a header naming the label column last.
func irisLikeCSV(rows: Int = 30, quotedHeader: Bool = false) -> String {
    var text = quotedHeader ? "\"sepal length\",\"sepal, width\",\"petal \"\"length\"\"\",\"petal width\",\"label\"\n"
                            : "f1,f2,f3,f4,label\n"
    for i in 0..<rows {
        let c = i % 3
        text += "\(Double(c) + 0.5),\(Double(i % 5) * 0.1),\(Double(c) * 2 + 0.25),\(Double(i % 7) * 0.3),\(c)\n"
    }
    return text
}

/// Writes `csv` to `name` in a fresh directory and runs a one-epoch softmax `peer train` on it.
func trainOnCSV(_ name: String, _ csv: String) throws -> RunResult {
    let scratch = try Scratch()
    let data = try scratch.write(name, csv)
    return try CommandRunner.peer("train", "--data", data, "--model", "softmax", "--epochs", "1", "--out", "m.model", in: scratch.url)
}

/// Runs a one-epoch softmax `peer train` on `irisLikeCSV()` with `--test` a file `name` holding `csv`.
func trainOnIris(testing name: String, _ csv: String) throws -> RunResult {
    let scratch = try Scratch()
    let data = try scratch.write("iris.csv", irisLikeCSV())
    let test = try scratch.write(name, csv)
    return try CommandRunner.peer("train", "--data", data, "--test", test, "--model", "softmax", "--epochs", "1", "--out", "m.model", in: scratch.url)
}

/// Trains a softmax model on `irisLikeCSV()` in `scratch`; returns the model's path.
func trainIrisModel(in scratch: Scratch) throws -> String {
    let data = try scratch.write("iris.csv", irisLikeCSV())
    let result = try CommandRunner.peer("train", "--data", data, "--model", "softmax", "--epochs", "2", "--out", "iris.model", in: scratch.url)
    #expect(result.status == 0, "training the small model failed: \(result.stderr)")
    return scratch.path("iris.model")
}

@Suite("peer train and peer predict")
struct TrainPredictTests {
    @Test("--verbose names the BLAS kernels and threads; a kernel family set in OPENBLAS_CORETYPE is kept, never replaced")
    func verboseNamesTheBLASKernels() throws {
        let scratch = try Scratch()
        let data = try scratch.write("iris.csv", irisLikeCSV())
        let result = try CommandRunner.run("peer", ["train", "--data", data, "--model", "softmax", "--epochs", "1", "--out", "m.model", "--verbose"],
                                           in: scratch.url, environment: ["OPENBLAS_CORETYPE": "Prescott"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("BLAS: OpenBLAS with Prescott (set by OPENBLAS_CORETYPE) kernels, 1 thread(s)"), "\(result.stderr)")
    }

    @Test("negative numbers reach validation and get a clear message, exit 64", arguments: [
        (["--lr", "-1"], "--lr must be a positive number"),
        (["--epochs", "-1"], "--epochs must be at least 1"),
        (["--label-column", "-1"], "--label-column counts columns from 0"),
        (["--seed", "-1"], "--seed"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--test-fraction", "1.5"], "--test-fraction must be between 0 and 1"),
        (["--model", "mlp:0"], "layer widths"),
    ])
    func badNumbers(flags: [String], message: String) throws {
        let scratch = try Scratch()
        let base = ["train", "--data", "fashion-mnist", "--model", "softmax", "--epochs", "1", "--out", "m.model"]
        // A later flag replaces the earlier value, so each case overrides one default.
        let result = try CommandRunner.run("peer", base + flags, in: scratch.url)
        expectError(result, status: 64, mentions: [message])
        #expect(!result.stderr.contains("Missing value"))
        #expect(!FileManager.default.fileExists(atPath: scratch.path("m.model")))
    }

    @Test("an unknown flag is a usage error in the same form")
    func unknownFlag() throws {
        let scratch = try Scratch()
        let result = try CommandRunner.peer("train", "--data", "d.csv", "--model", "softmax", "--epochs", "1", "--out", "m", "--bogus", in: scratch.url)
        expectError(result, status: 64, mentions: ["--bogus"])
        #expect(result.stderr.contains("Usage: peer train"))
    }

    @Test("--out naming a directory fails before any training")
    func outIsDirectory() throws {
        let scratch = try Scratch()
        let data = try scratch.write("iris.csv", irisLikeCSV())
        try FileManager.default.createDirectory(atPath: scratch.path("models"), withIntermediateDirectories: false)
        let result = try CommandRunner.peer("train", "--data", data, "--model", "softmax", "--epochs", "1", "--out", "models", in: scratch.url)
        expectError(result, status: 1, mentions: ["--out models is a directory"])
        #expect(!result.stderr.contains("epoch"), "training ran before the output was checked")
    }

    @Test("training reports progress on stderr, nothing on stdout, and writes the model")
    func trainOutput() throws {
        let scratch = try Scratch()
        let model = try trainIrisModel(in: scratch)
        #expect(FileManager.default.fileExists(atPath: model))
        // A one-letter name once crashed Foundation's path handling.
        let again = try CommandRunner.peer("train", "--data", "iris.csv", "--model", "softmax", "--epochs", "1", "--out", "m", in: scratch.url)
        #expect(again.status == 0 && again.stdout.isEmpty, "\(again.stderr)")
        #expect(again.stderr.contains("epoch 1/1") && again.stderr.contains("model written to m"))
        #expect(FileManager.default.fileExists(atPath: scratch.path("m")))
    }

    @Test("a quoted CSV header (RFC 4180) is recognised, so its 'label' column is the label")
    func quotedHeader() throws {
        // Column 0 holds 0.5, 1.5, 2.5: read as labels it would fail as "not a class number".
        let result = try trainOnCSV("quoted.csv", irisLikeCSV(quotedHeader: true))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("on 24 samples, testing on 6"), "\(result.stderr)")
    }

    @Test("a header without a 'label' column says so and points to --label-column")
    func missingLabelColumn() throws {
        let result = try trainOnCSV("nolabel.csv", "a,b,c\n0.5,1,2\n1.5,0,1\n2.5,1,0\n")
        expectError(result, status: 1, mentions: ["nolabel.csv", "no 'label' column", "--label-column"])
    }

    @Test("a label that would build an absurd number of classes states the class limit")
    func classLimit() throws {
        let result = try trainOnCSV("big.csv", "label,a\n0,1\n65535,2\n1,3\n")
        expectError(result, status: 1, mentions: ["label 65535", "1000 classes", "line 3"])
    }

    @Test("--test with another feature count names both files before training")
    func testSetShape() throws {
        let result = try trainOnIris(testing: "wide.csv", "label,a,b,c,d,e\n0,1,2,3,4,5\n1,1,2,3,4,5\n")
        expectError(result, status: 1, mentions: ["wide.csv", "5 features", "iris.csv", "4"])
        #expect(!result.stderr.contains("epoch"))
    }

    @Test("--test of the right width but with labels the training data lacks says so")
    func testSetLabels() throws {
        let result = try trainOnIris(testing: "more.csv", "label,a,b,c,d\n0,1,2,3,4\n7,1,2,3,4\n")
        expectError(result, status: 1, mentions: ["--test", "more.csv", "label 7", "only 3 classes"])
    }

    @Test("--test-fraction is refused when the data has its own test set")
    func testFractionWithOwnTestSet() throws {
        let scratch = try Scratch()
        let result = try CommandRunner.peer("train", "--data", "fashion-mnist", "--test-fraction", "0.1", "--model", "softmax",
                                            "--epochs", "1", "--out", "m.model", in: scratch.url)
        expectError(result, status: 1, mentions: ["--test-fraction", "its own test set"])
    }

    @Test("predict checks the feature count before the labels")
    func predictShapeFirst() throws {
        let scratch = try Scratch()
        let model = try trainIrisModel(in: scratch)
        let result = try CommandRunner.peer("predict", "--model", model, "--input", "fashion-mnist", in: scratch.url)
        expectError(result, status: 1, mentions: ["784 features", "the model takes 4"])
        #expect(!result.stderr.contains("label 9"))
    }

    @Test("predict refuses --label-column on input that has no label column")
    func predictLabelColumnOnUnlabelled() throws {
        let scratch = try Scratch()
        let model = try trainIrisModel(in: scratch)
        let input = try scratch.write("new.csv", "0.5,0.1,0.25,0.3\n2.5,0.2,4.25,0.6\n")
        let result = try CommandRunner.peer("predict", "--model", model, "--input", input, "--label-column", "0", in: scratch.url)
        expectError(result, status: 1, mentions: ["--label-column 0", "no label column"])
    }

    @Test("predictions are the only stdout; the summary and confusion matrix go to stderr")
    func predictOutput() throws {
        let scratch = try Scratch()
        let model = try trainIrisModel(in: scratch)
        let result = try CommandRunner.peer("predict", "--model", model, "--input", "iris.csv", in: scratch.url)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == 30)
        for (i, line) in lines.enumerated() {
            let fields = line.split(separator: "\t")
            #expect(fields.count == 2 && fields[0] == "\(i)" && Int(fields[1]).map { (0..<3).contains($0) } == true, "not data: \(line)")
        }
        #expect(result.stderr.contains("30 samples") && result.stderr.contains("accuracy"))
        let summary = try CommandRunner.peer("predict", "--model", model, "--input", "iris.csv", "--summary-only", in: scratch.url)
        #expect(summary.status == 0 && summary.stdout.isEmpty && summary.stderr.contains("accuracy"))
    }

    @Test("a model file holding NaN is reported as a non-finite parameter")
    func nonFiniteModel() throws {
        let scratch = try Scratch()
        let model = try trainIrisModel(in: scratch)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: model)))
        // Header of a softmax model: magic (8), version (2), name length (2), "softmax" (7),
        // inputs (4), classes (4), hidden count (2), normaliser kind (1), storage (1),
        // parameter count (8).
        let firstParameter = 8 + 2 + 2 + 7 + 4 + 4 + 2 + 1 + 1 + 8
        withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { bytes.replaceSubrange(firstParameter..<firstParameter + 4, with: $0) }
        let crc = crc32(bytes.dropLast(4))
        withUnsafeBytes(of: crc.littleEndian) { bytes.replaceSubrange(bytes.count - 4..<bytes.count, with: $0) }
        try Data(bytes).write(to: URL(fileURLWithPath: scratch.path("nan.model")))
        let result = try CommandRunner.peer("predict", "--model", "nan.model", "--input", "iris.csv", in: scratch.url)
        expectError(result, status: 1, mentions: ["nan.model", "non-finite parameter"])
        #expect(!result.stderr.contains("shape mismatch"))
    }
}

/// CRC-32 as zlib computes it (reflected, polynomial 0xEDB88320), for editing a model file.
func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}
