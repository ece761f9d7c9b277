import CommandSupport
import Foundation
import TOMLKit

/// `peer join --config FILE`: a TOML file (or JSON, when FILE ends in `.json`) whose keys are
/// the long flag names of `peer join`. Its keys become flags before the command line is parsed,
/// and a flag given on the command line wins over the file.
enum JoinConfig {
    /// The keys a config file may hold and the kind of value each takes.
    enum Kind { case text, number, list, switch_ }
    static let keys: [String: Kind] = [
        "dir": .text, "network-key": .text, "listen": .text, "advertise": .text, "bootstrap": .list,
        "data-dir": .text, "profile": .text, "vector": .text, "samples": .number, "log-level": .text,
        "log-format": .text, "no-beacons": .switch_, "bandwidth": .number, "compress": .text, "publisher": .list,
        "share-fraction": .number, "sparse-share-fraction": .number,
        // Training (--data).
        "data": .text, "test": .text, "model": .text, "algorithm": .text, "partition": .text, "peer-index": .number,
        "peers": .number, "partition-seed": .number, "normalize": .text, "classes": .number, "label-column": .number,
        "local-steps": .number, "batch": .number, "lr": .number, "schedule": .text, "train-interval": .number,
        "eval-interval": .number, "eval-samples": .number, "init-seed": .number, "init-model": .text,
        // Serving (--serve).
        "serve": .text, "batch-window": .number, "max-batch": .number, "max-body": .number, "max-concurrent": .number,
    ]

    /// The arguments with the config file's keys added as flags (for `peer join` only).
    /// Config keys that name a flag by another spelling: a list of publishers reads as `publishers`.
    static let aliases = ["publishers": "publisher"]

    static func expand(_ arguments: [String]) throws -> [String] {
        guard arguments.first == "join" else { return arguments }
        var path: String?
        var rest: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "--config" {
                guard i + 1 < arguments.count else { throw CommandFailure("--config needs a FILE") }
                path = arguments[i + 1]
                i += 2
                continue
            }
            if a.hasPrefix("--config=") {
                path = String(a.dropFirst("--config=".count))
            } else {
                rest.append(a)
            }
            i += 1
        }
        guard let path else { return arguments }
        let given = Set(rest.compactMap { a -> String? in
            guard a.hasPrefix("--") else { return nil }
            return String(a.dropFirst(2).split(separator: "=", maxSplits: 1).first ?? "")
        })
        var added: [String] = []
        for (written, value) in try load(path).sorted(by: { $0.key < $1.key }) {
            let key = aliases[written] ?? written
            guard let kind = keys[key] else {
                throw CommandFailure("\(path): unknown key '\(key)'; allowed: \(keys.keys.sorted().joined(separator: ", "))")
            }
            guard !given.contains(key) else { continue }
            switch (kind, value) {
            case (.text, let s as String):
                added += ["--\(key)", s]
            case (.number, let n as NSNumber) where !isBoolean(n):
                added += ["--\(key)", "\(n.doubleValue)"]
            case (.list, let s as String):
                added += ["--\(key)", s]
            case (.list, let items as [Any]):
                for item in items {
                    guard let s = item as? String else { throw CommandFailure("\(path): key '\(key)' must be a list of strings (HOST:PORT)") }
                    added += ["--\(key)", s]
                }
            case (.switch_, let b as NSNumber) where isBoolean(b):
                if b.boolValue { added.append("--\(key)") }
            default:
                let expected = [Kind.text: "a string", .number: "a number", .list: "a string or a list of strings", .switch_: "true or false"][kind] ?? "?"
                throw CommandFailure("\(path): key '\(key)' must be \(expected)")
            }
        }
        return rest + added
    }

    /// Whether a parsed JSON number is really `true` or `false` (stored as a char).
    static func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    /// The file's top-level keys and values.
    static func load(_ path: String) throws -> [String: Any] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CommandFailure("--config \(path) cannot be read: \(error.localizedDescription)")
        }
        let json: String
        if path.hasSuffix(".json") {
            json = text
        } else {
            do { json = try TOMLTable(string: text).convert(to: .json) } catch let error as TOMLParseError {
                throw CommandFailure("--config \(path): not valid TOML at line \(error.source.begin.line), column \(error.source.begin.column)")
            } catch {
                throw CommandFailure("--config \(path): not valid TOML (\(error))")
            }
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else {
            throw CommandFailure("--config \(path): not a table of keys and values")
        }
        return object
    }
}
