import Foundation
import TOMLKit

/// A scenario that cannot run: the message names the key, the file and what is allowed.
public struct ScenarioError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A scenario file's key tree (TOML, or JSON when the name ends in `.json`), with `--set`
/// overrides applied, before it is checked and resolved into a ``Scenario``.
public struct ScenarioDocument: @unchecked Sendable {
    /// Where the keys came from, for messages.
    public let source: String
    /// The keys, as JSON values (tables are `[String: Any]`, arrays `[Any]`).
    public private(set) var root: [String: Any]

    public init(root: [String: Any], source: String) {
        self.root = root
        self.source = source
    }

    /// Reads `path`.
    public static func load(_ path: String) throws(ScenarioError) -> ScenarioDocument {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ScenarioError("\(path): cannot read the scenario (\(error.localizedDescription))")
        }
        return try parse(text, source: path, json: path.hasSuffix(".json"))
    }

    /// Parses scenario text: TOML, or JSON when `json` is set.
    public static func parse(_ text: String, source: String, json: Bool) throws(ScenarioError) -> ScenarioDocument {
        var jsonText = text
        if !json {
            do { jsonText = try TOMLTable(string: text).convert(to: .json) } catch let error as TOMLParseError {
                throw ScenarioError("\(source): not valid TOML at line \(error.source.begin.line), column \(error.source.begin.column)")
            } catch {
                throw ScenarioError("\(source): not valid TOML (\(error))")
            }
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(jsonText.utf8))) as? [String: Any] else {
            throw ScenarioError("\(source): not a table of keys and values\(json ? " (JSON object)" : "")")
        }
        return ScenarioDocument(root: object, source: source)
    }

    /// Applies `KEY=VALUE`, KEY a dotted path (`links.loss`, `topology.regions.0.count`). VALUE
    /// is read as a number, `true`/`false`, or else a string; the key's type is checked later,
    /// when the scenario is resolved, like the file's own keys.
    public mutating func set(_ assignment: String) throws(ScenarioError) {
        let (path, text) = try Self.split(assignment)
        let value: Any
        if text == "true" || text == "false" {
            value = text == "true"
        } else if let integer = Int(text) {
            value = integer
        } else if let large = UInt64(text) {
            // Seeds run to 2⁶⁴−1, past the largest Int.
            value = NSNumber(value: large)
        } else if let number = Double(text), number.isFinite {
            value = number
        } else {
            value = text
        }
        root = try Self.setting(value, at: path[...], in: root, assignment: assignment) as? [String: Any] ?? root
    }

    /// The dotted key and the value text of `KEY=VALUE`; a malformed one is refused, so a
    /// command can check its `--set` flags before it reads any file.
    public static func split(_ assignment: String) throws(ScenarioError) -> (path: [String], value: String) {
        guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else {
            throw ScenarioError("--set expects KEY=VALUE with KEY a dotted scenario key (e.g. links.loss=0.2), got '\(assignment)'")
        }
        let path = assignment[..<equals].split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard path.allSatisfy({ !$0.isEmpty }) else {
            throw ScenarioError("--set \(assignment): '\(assignment[..<equals])' is not a dotted key (empty part)")
        }
        return (path, String(assignment[assignment.index(after: equals)...]))
    }

    private static func setting(_ value: Any, at path: ArraySlice<String>, in node: Any?, assignment: String) throws(ScenarioError) -> Any {
        guard let key = path.first else { return value }
        let rest = path.dropFirst()
        if let array = node as? [Any] {
            guard let index = Int(key), array.indices.contains(index) else {
                throw ScenarioError("--set \(assignment): '\(key)' is not an index of that list (0 to \(array.count - 1))")
            }
            var copy = array
            copy[index] = try setting(value, at: rest, in: array[index], assignment: assignment)
            return copy
        }
        var table: [String: Any]
        if let existing = node as? [String: Any] {
            table = existing
        } else if node == nil {
            table = [:]
        } else {
            throw ScenarioError("--set \(assignment): the key before '\(key)' holds a value, not a table")
        }
        table[key] = try setting(value, at: rest, in: table[key], assignment: assignment)
        return table
    }
}

/// Reads one table of a scenario, checking each key's type and range, and refusing keys it
/// does not know (a misspelt key would otherwise be silently ignored).
final class KeyReader {
    private let table: [String: Any]
    /// Dotted path of this table (empty at the top).
    let path: String
    private let source: String
    private var used: [String] = []

    init(_ table: [String: Any], path: String, source: String) {
        self.table = table
        self.path = path
        self.source = source
    }

    private func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// An error about `key`, naming the file.
    func error(_ key: String, _ message: String) -> ScenarioError {
        ScenarioError("\(source): \(name(key)) \(message)")
    }

    func has(_ key: String) -> Bool { table[key] != nil }

    private func raw(_ key: String) -> Any? {
        used.append(key)
        return table[key]
    }

    func double(_ key: String, default fallback: Double, in range: ClosedRange<Double>, meaning: String) throws(ScenarioError) -> Double {
        guard let value = raw(key) else { return fallback }
        guard let number = value as? NSNumber, !Self.isBoolean(number), number.doubleValue.isFinite, range.contains(number.doubleValue) else {
            throw error(key, "must be \(meaning) (from \(range.lowerBound) to \(range.upperBound)), got \(Self.show(value))")
        }
        return number.doubleValue
    }

    func int(_ key: String, default fallback: Int, in range: ClosedRange<Int>, meaning: String) throws(ScenarioError) -> Int {
        guard let value = raw(key) else { return fallback }
        guard let number = value as? NSNumber, !Self.isBoolean(number), number.doubleValue == number.doubleValue.rounded(),
              let integer = Int(exactly: number.doubleValue), range.contains(integer) else {
            throw error(key, "must be \(meaning), a whole number from \(range.lowerBound) to \(range.upperBound), got \(Self.show(value))")
        }
        return integer
    }

    /// A seed: a whole number from 0 to 2⁶⁴−1 (TOML's integers stop at 2⁶³−1).
    func seed(_ key: String) throws(ScenarioError) -> UInt64? {
        guard let value = raw(key) else { return nil }
        // The number's own digits first: through a Double, seeds above 2⁵³ would be rounded.
        if let number = value as? NSNumber, !Self.isBoolean(number), let seed = UInt64(number.stringValue) ?? UInt64(exactly: number.doubleValue) {
            return seed
        }
        if let text = value as? String, let seed = UInt64(text) { return seed }
        throw error(key, "must be a seed, a whole number from 0 to 18446744073709551615, got \(Self.show(value))")
    }

    func bool(_ key: String, default fallback: Bool) throws(ScenarioError) -> Bool {
        guard let value = raw(key) else { return fallback }
        guard let number = value as? NSNumber, Self.isBoolean(number) else {
            throw error(key, "must be true or false, got \(Self.show(value))")
        }
        return number.boolValue
    }

    func string(_ key: String, default fallback: String?) throws(ScenarioError) -> String? {
        guard let value = raw(key) else { return fallback }
        guard let text = value as? String else { throw error(key, "must be a string, got \(Self.show(value))") }
        return text
    }

    /// One of `allowed` (the message lists them).
    func choice(_ key: String, default fallback: String, allowed: [String]) throws(ScenarioError) -> String {
        let text = try string(key, default: fallback) ?? fallback
        guard allowed.contains(text) else { throw error(key, "must be one of \(allowed.joined(separator: ", ")), got '\(text)'") }
        return text
    }

    func strings(_ key: String) throws(ScenarioError) -> [String] {
        guard let value = raw(key) else { return [] }
        guard let list = value as? [Any], let texts = list as? [String] else { throw error(key, "must be a list of strings, got \(Self.show(value))") }
        return texts
    }

    /// The sub-table `key` (an empty one when absent).
    func table(_ key: String) throws(ScenarioError) -> KeyReader {
        guard let value = raw(key) else { return KeyReader([:], path: name(key), source: source) }
        guard let sub = value as? [String: Any] else { throw error(key, "must be a table ([\(name(key))]), got \(Self.show(value))") }
        return KeyReader(sub, path: name(key), source: source)
    }

    /// The array of tables `key` (`[[key]]`).
    func tables(_ key: String) throws(ScenarioError) -> [KeyReader] {
        guard let value = raw(key) else { return [] }
        guard let list = value as? [Any] else { throw error(key, "must be a list of tables ([[\(name(key))]]), got \(Self.show(value))") }
        var readers: [KeyReader] = []
        for (i, item) in list.enumerated() {
            guard let sub = item as? [String: Any] else { throw error("\(key).\(i)", "must be a table, got \(Self.show(item))") }
            readers.append(KeyReader(sub, path: name("\(key).\(i)"), source: source))
        }
        return readers
    }

    /// Refuses the keys nobody read, listing the ones this table takes.
    func finish() throws(ScenarioError) {
        let unknown = table.keys.filter { !used.contains($0) }.sorted()
        guard let first = unknown.first else { return }
        let known = used.sorted().joined(separator: ", ")
        throw ScenarioError("\(source): unknown key '\(name(first))'; \(path.isEmpty ? "the top level" : "[\(path)]") takes \(known)")
    }

    static func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    static func show(_ value: Any) -> String {
        if let text = value as? String { return "'\(text)'" }
        if let number = value as? NSNumber { return isBoolean(number) ? (number.boolValue ? "true" : "false") : number.stringValue }
        if value is [Any] { return "a list" }
        if value is [String: Any] { return "a table" }
        return "\(value)"
    }
}
