import Foundation

/// One measured figure, printed in a table and appended as a JSON line to `bench-results.jsonl`.
struct BenchFigure {
    var name: String
    var value: Double
    var unit: String
    /// The figure of the baseline measured in the same run (nil if the figure has none).
    var baseline: Double?
    /// value / baseline, oriented so that higher is better for the project.
    var ratio: Double?
    var note: String = ""
}

/// Collects figures for one benchmark suite and writes them out.
struct BenchReport {
    let suite: String
    private(set) var figures: [BenchFigure] = []

    init(suite: String) { self.suite = suite }

    mutating func add(_ figure: BenchFigure) { figures.append(figure) }

    /// Prints the table and appends one JSON object per figure to `bench-results.jsonl`.
    func finish(resultsPath: String = "bench-results.jsonl") {
        print("\n== \(suite) ==")
        let header = ["figure", "value", "unit", "baseline", "ratio", "note"]
        var rows = [header]
        for f in figures {
            rows.append([
                f.name, Self.format(f.value), f.unit,
                f.baseline.map(Self.format) ?? "-", f.ratio.map { String(format: "%.3f", $0) } ?? "-", f.note,
            ])
        }
        let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for (i, row) in rows.enumerated() {
            print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
            if i == 0 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
        var lines = ""
        for f in figures {
            // A figure that could not be measured (a threshold never reached) is null: JSON has no NaN.
            func json(_ x: Double?) -> Any { x.flatMap { $0.isFinite ? $0 : nil } ?? NSNull() }
            var object: [String: Any] = ["suite": suite, "name": f.name, "value": json(f.value), "unit": f.unit]
            object["baseline"] = json(f.baseline)
            object["ratio"] = json(f.ratio)
            if !f.note.isEmpty { object["note"] = f.note }
            if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]),
               let text = String(data: data, encoding: .utf8) {
                lines += text + "\n"
            }
        }
        if let handle = FileHandle(forWritingAtPath: resultsPath) ?? {
            _ = FileManager.default.createFile(atPath: resultsPath, contents: nil)
            return FileHandle(forWritingAtPath: resultsPath)
        }() {
            handle.seekToEndOfFile()
            handle.write(Data(lines.utf8))
            try? handle.close()
        }
    }

    static func format(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e12 { return String(Int64(v)) }
        return String(format: abs(v) >= 100 ? "%.1f" : "%.4g", v)
    }
}

/// Wall-clock seconds taken by `body`, best of `repeats` runs.
func bestTime(repeats: Int = 3, _ body: () throws -> Void) rethrows -> Double {
    var best = Double.infinity
    for _ in 0..<max(1, repeats) {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return best
}

/// Peak resident set size of this process so far, in bytes (from /proc/self/status VmHWM).
func peakResidentBytes() -> Int { residentBytes(field: "VmHWM:") }

/// A memory figure of `/proc/PID/status` (`VmRSS:` now, `VmHWM:` peak) in bytes; 0 if unreadable.
func residentBytes(process: String = "self", field: String) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/\(process)/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix(field) {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}
