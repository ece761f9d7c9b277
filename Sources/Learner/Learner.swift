/// Models, training, data sets, partitioners and delta codecs. Needs no networking.
public enum Learner {}

/// Everything in `Learner` that can fail on input from a file, the user or a peer.
/// Each message names what was wrong and where, so a person can act on it.
public enum LearnerError: Error, Equatable, CustomStringConvertible {
    /// A data or model file could not be opened or read.
    case io(path: String, reason: String)
    /// A data file is malformed; `location` is `line L, column C` for CSV or a byte offset for IDX.
    case malformed(path: String, location: String, reason: String)
    /// A model file is corrupt, truncated, of another version, or does not match what was asked for.
    case badModelFile(path: String, reason: String)
    /// Shapes disagree (a parameter vector, a batch, a data set and a model).
    case shapeMismatch(String)
    /// Encoded delta bytes are malformed or out of bounds.
    case badEncoding(String)
    /// A setting (flag, configuration value) is out of range.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .io(path, reason): return "\(path): \(reason)"
        case let .malformed(path, location, reason): return "\(path): \(location): \(reason)"
        case let .badModelFile(path, reason): return "\(path): not a usable model file: \(reason)"
        case let .shapeMismatch(reason): return "shape mismatch: \(reason)"
        case let .badEncoding(reason): return "bad encoded delta: \(reason)"
        case let .invalidArgument(reason): return reason
        }
    }
}
