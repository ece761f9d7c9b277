import ArgumentParser
import CommandSupport
import Foundation
import Experiments

/// `netsim plot`: one or more runs' curves as an SVG chart.
struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Chart a column of one or more runs' rounds.csv as SVG (standard output, or --out FILE).",
        discussion: """
        Each RUN is a folder written by `netsim run` (or a rounds.csv); its curve is labelled with \
        the folder's name. Example:
          netsim plot runs/loss-0.1 runs/loss-0.3 --y target_error --log-y --out loss.svg
        """)

    @Argument(help: "Run folders (or rounds.csv files).") var runs: [String] = []
    @Option(help: "Column on the x axis.") var x = "time_s"
    @Option(help: "Column on the y axis (see docs/researchers.md).") var y = "consensus_error"
    @Flag(name: .customLong("log-y"), help: "Logarithmic y axis.") var logY = false
    @Option(help: "Chart title (default: the y column).") var title: String?
    @Option(help: "Write the SVG to FILE instead of standard output.") var out: String?

    func validate() throws {
        guard !runs.isEmpty else { throw ValidationError("give at least one RUN folder to plot") }
        for column in [x, y] where !RoundRow.columns.contains(column) {
            throw ValidationError("'\(column)' is not a rounds.csv column; the columns are \(RoundRow.columns.joined(separator: ", "))")
        }
    }

    func run() throws {
        if let out { try checkWritableFile(out, flag: "--out") }
        var chart = SVGChart(title: title ?? y, xLabel: x, yLabel: y, logY: logY)
        for run in runs {
            let table: RoundsTable
            do { table = try RoundsTable.load(run) } catch { throw CommandFailure(error.description) }
            guard let xs = table.values(x), let ys = table.values(y) else {
                throw CommandFailure("\(run): its rounds.csv has no column \(x) or \(y) (columns: \(table.columns.joined(separator: ", ")))")
            }
            let points = zip(xs, ys).compactMap { a, b in a.flatMap { a in b.map { (x: a, y: $0) } } }
            if points.isEmpty { printNote("\(run): no values in \(y); its curve is empty") }
            let label = URL(fileURLWithPath: run).standardized.lastPathComponent
            chart.series.append(.init(label: label == "rounds.csv" ? URL(fileURLWithPath: run).deletingLastPathComponent().lastPathComponent : label,
                                      points: points))
        }
        if let out {
            do { try chart.svg.write(toFile: out, atomically: true, encoding: .utf8) } catch {
                throw CommandFailure("--out \(out): cannot write it (\(error.localizedDescription))")
            }
            printNote("wrote \(out)")
        } else {
            print(chart.svg, terminator: "")
        }
    }
}
