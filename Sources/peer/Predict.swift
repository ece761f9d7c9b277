import ArgumentParser
import CommandSupport
import Foundation
import Learner

/// `peer predict`: batch inference with a saved model.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict classes for a CSV or IDX file with a saved model, or with a running peer's latest one.",
        discussion: """
        The model is a file (--model) or the latest model of the peer running with --data-dir, \
        taken whole from it through its control socket (with its normalisation), so a prediction \
        never sees half a model and the peer keeps training meanwhile. Prints one line per sample on standard output (index, a tab, the predicted class). On \
        standard error it reports the sample count and, when the input has labels (an IDX images \
        file with its labels file beside it, or a CSV with one column more than the model's \
        inputs), accuracy and the confusion matrix.
        """
    )

    @Option(help: "Model file written by `peer train` (or a peer's DATA_DIR/model).")
    var model: String?
    @Option(name: .customLong("data-dir"), help: "Use the latest model of the peer running with this --data-dir (or, with --release, a release it holds).")
    var dataDir: String?
    @Option(help: "With --data-dir: predict with a model release the peer holds (NAME, its active version, or NAME@VERSION), read from its files; the peer need not run.")
    var release: String?
    @Option(help: "Input: a CSV file, an IDX images file or an IDX prefix, fashion-mnist or mnist:DIR (their test sets).")
    var input: String
    @Option(name: .customLong("label-column"), parsing: .unconditional,
            help: "CSV label column, counted from 0 (default: a 'label' header; column 0 when there is no header).")
    var labelColumn: Int?
    @Flag(name: .customLong("summary-only"), help: "Do not print one line per sample.")
    var summaryOnly = false

    func validate() throws {
        guard (model == nil) != (dataDir == nil) else { throw ValidationError("give exactly one of --model FILE and --data-dir DIR") }
        if release != nil, dataDir == nil { throw ValidationError("--release NAME reads the release from a peer's files: give --data-dir DIR") }
        if let labelColumn, labelColumn < 0 { throw ValidationError("--label-column counts columns from 0, got \(labelColumn)") }
    }

    func run() throws {
        let predictor = Predictor(try loadModel())
        let inputs = predictor.architecture.inputCount
        let (features, labelled) = try loadInput(inputs: inputs, classCount: predictor.architecture.classCount)
        let predictions = try predictor.predict(features, batch: features.count / inputs).classes
        if !summaryOnly {
            var text = ""
            for (i, p) in predictions.enumerated() { text += "\(i)\t\(p)\n" }
            FileHandle.standardOutput.write(Data(text.utf8))
        }
        printNote("\(predictions.count) samples, model \(predictor.architecture), \(predictor.storage)")
        if let labelled {
            let evaluation = try predictor.evaluate(on: labelled)
            printNote(String(format: "accuracy %.4f  loss %.4f", evaluation.accuracy, evaluation.loss))
            FileHandle.standardError.write(Data(evaluation.confusionTable().utf8))
        }
    }

    /// The model file, or the running peer's latest model.
    func loadModel() throws -> ModelFile.Contents {
        if let model { return try ModelFile.read(model) }
        guard let dataDir else { throw ValidationError("give exactly one of --model FILE and --data-dir DIR") }
        if let release {
            let (contents, key) = try ReleaseControl.releasedModel(release, dataDir: dataDir)
            printNote("release \(key)")
            return contents
        }
        let reply = try ControlClient.request("model", dataDirectory: dataDir)
        if let error = reply["error"] as? String {
            throw UserFacingError("the peer with --data-dir \(dataDir) cannot predict: \(error)")
        }
        guard let encoded = reply["model"] as? String, let bytes = Data(base64Encoded: encoded) else {
            throw UserFacingError("the peer with --data-dir \(dataDir) trains no model (it averages a vector, or runs an older version)")
        }
        return try ModelFile.decode(Array(bytes), path: "the model of the peer with --data-dir \(dataDir)")
    }

    /// Raw features and, if the input has labels, the labelled data set.
    func loadInput(inputs: Int, classCount: Int) throws -> ([Float], Dataset?) {
        let source = try? DataSource.resolve(input)
        switch source {
        case .csv(let path)?:
            let table = try DataFiles.readCSV(path)
            if let labelColumn, table.columns == inputs {
                throw LearnerError.invalidArgument("--label-column \(labelColumn): \(path) has \(table.columns) columns, exactly the model's \(inputs) inputs, so it has no label column; leave out --label-column")
            }
            if table.columns == inputs + 1 {
                let data = try DataFiles.dataset(from: table, labelColumn: try DataFiles.labelColumn(of: table, requested: labelColumn), classCount: classCount)
                return (data.features, data)
            }
            guard table.columns == inputs else {
                throw LearnerError.malformed(path: path, location: "line \(table.lineNumbers[0])",
                                             reason: "\(table.columns) columns; the model takes \(inputs) features (plus an optional label)")
            }
            return (table.values, nil)
        case .idx(let train, let test)?:
            try refuseLabelColumn()
            let pair = test ?? train
            let data = try DataFiles.loadIDX(images: pair.images, labels: pair.labels, classCount: classCount, featureCount: inputs)
            return (data.features, data)
        case nil:
            try refuseLabelColumn()
            // An IDX images file without labels beside it.
            let (values, width) = try DataFiles.loadIDXFeatures(images: input)
            guard width == inputs else { throw LearnerError.shapeMismatch("\(input) has \(width) features per sample, the model takes \(inputs)") }
            return (values, nil)
        }
    }

    /// --label-column names a CSV column; IDX input keeps its labels in a file of their own.
    func refuseLabelColumn() throws {
        if labelColumn != nil { throw LearnerError.invalidArgument("--label-column applies to CSV input only; \(input) is IDX") }
    }
}
