import Foundation

/// Where training and test data come from, as named on the command line:
/// `fashion-mnist`, `mnist:DIR`, an IDX prefix, or a CSV path.
public enum DataSource: Equatable, Sendable {
    /// An IDX training pair and, optionally, an IDX test pair.
    case idx(train: IDXPair, test: IDXPair?)
    /// A CSV file (label column plus features); the test set comes from a split or another file.
    case csv(path: String)

    /// Where Debian's `dataset-fashion-mnist` package installs the data.
    public static let fashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

    /// The images and labels files of one IDX data set.
    public struct IDXPair: Equatable, Sendable {
        public let images: String
        public let labels: String
    }

    /// Resolves a `--data` value:
    /// - `fashion-mnist`: Debian's copy in `/usr/share/datasets/fashion-mnist`;
    /// - `mnist:DIR` (or any directory): `DIR/train-…` and `DIR/t10k-…` in MNIST's file names;
    /// - a path ending in `.csv`: a CSV file;
    /// - otherwise an IDX prefix `P`: `P-images-idx3-ubyte[.gz]` and `P-labels-idx1-ubyte[.gz]`,
    ///   or an images file whose labels file sits beside it.
    public static func resolve(_ spec: String) throws -> DataSource {
        if spec == "fashion-mnist" { return try directory(fashionMNISTDirectory, name: spec) }
        if spec.hasPrefix("mnist:") { return try directory(String(spec.dropFirst(6)), name: spec) }
        if spec.lowercased().hasSuffix(".csv") || spec.lowercased().hasSuffix(".csv.gz") { return .csv(path: spec) }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: spec, isDirectory: &isDirectory), isDirectory.boolValue {
            return try directory(spec, name: spec)
        }
        return .idx(train: try idxPair(spec), test: nil)
    }

    static func directory(_ dir: String, name: String) throws -> DataSource {
        do {
            return .idx(train: try idxPair(dir + "/train"), test: try idxPair(dir + "/t10k"))
        } catch {
            throw LearnerError.io(path: dir, reason: "no MNIST-style files for '\(name)' (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-…)")
        }
    }

    /// Finds the images and labels files for an IDX prefix or an images file.
    public static func idxPair(_ spec: String) throws -> IDXPair {
        let fm = FileManager.default
        if fm.fileExists(atPath: spec), spec.contains("images-idx3") || spec.contains("images.idx3") {
            let labels = spec.replacingOccurrences(of: "images-idx3", with: "labels-idx1").replacingOccurrences(of: "images.idx3", with: "labels.idx1")
            guard labels != spec, fm.fileExists(atPath: labels) else {
                throw LearnerError.io(path: spec, reason: "found no labels file beside it (expected \(labels))")
            }
            return IDXPair(images: spec, labels: labels)
        }
        // MNIST's own names, then the "train-images.idx3-ubyte" spelling some mirrors use.
        for separator in ["-", "."] {
            for suffix in [".gz", ""] {
                let images = spec + "-images" + separator + "idx3-ubyte" + suffix
                let labels = spec + "-labels" + separator + "idx1-ubyte" + suffix
                if fm.fileExists(atPath: images) && fm.fileExists(atPath: labels) { return IDXPair(images: images, labels: labels) }
            }
        }
        throw LearnerError.io(path: spec, reason: "not a data set: expected fashion-mnist, mnist:DIR, a .csv file or an IDX prefix with \(spec)-images-idx3-ubyte[.gz] and \(spec)-labels-idx1-ubyte[.gz]")
    }

    /// Loads the training set and, if the source has one, the test set.
    /// For CSV, `labelColumn` picks the label column (default: a `label` header or column 0).
    /// `classCount` fixes the number of classes (e.g. a test set's to its training set's).
    public func load(labelColumn: Int? = nil, classCount: Int? = nil) throws -> (train: Dataset, test: Dataset?) {
        switch self {
        case let .idx(train, test):
            let trainSet = try DataFiles.loadIDX(images: train.images, labels: train.labels, classCount: classCount)
            let testSet = try test.map { try DataFiles.loadIDX(images: $0.images, labels: $0.labels, classCount: trainSet.classCount) }
            return (trainSet, testSet)
        case let .csv(path):
            let table = try DataFiles.readCSV(path)
            return (try DataFiles.dataset(from: table, labelColumn: try DataFiles.labelColumn(of: table, requested: labelColumn),
                                             classCount: classCount), nil)
        }
    }
}
