import Foundation

/// A line chart as a standalone SVG document: one or more series over shared axes, linear or
/// logarithmic in y, with ticks, axis labels and a legend. Enough for the curves of a run.
public struct SVGChart: Sendable {
    public struct Series: Sendable {
        public var label: String
        public var points: [(x: Double, y: Double)]
        public init(label: String, points: [(x: Double, y: Double)]) {
            self.label = label
            self.points = points
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    /// Logarithmic y axis (points at or below zero are left out).
    public var logY: Bool
    public var series: [Series] = []
    public var width = 720.0
    public var height = 440.0

    public init(title: String, xLabel: String, yLabel: String, logY: Bool) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.logY = logY
    }

    /// Distinct colours for up to ten series, then repeated.
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

    public var svg: String {
        let plotted = series.map { s in
            Series(label: s.label, points: s.points.filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) })
        }
        let all = plotted.flatMap(\.points)
        let left = 80.0, right = 24.0, top = 40.0, bottom = 56.0 + 18 * Double(plotted.count)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let xs = all.map(\.x), ys = all.map { logY ? log10($0.y) : $0.y }
        var (x0, x1) = (xs.min() ?? 0, xs.max() ?? 1)
        var (y0, y1) = (ys.min() ?? 0, ys.max() ?? 1)
        if x1 <= x0 { x1 = x0 + 1 }
        if logY { (y0, y1) = (y0.rounded(.down), max(y1.rounded(.up), y0.rounded(.down) + 1)) } else if y1 <= y0 { y1 = y0 + 1 }
        if !logY, y0 > 0, y0 < 0.5 * y1 { y0 = 0 }
        let px = { (x: Double) in left + (x - x0) / (x1 - x0) * plotWidth }
        let py = { (y: Double) in top + plotHeight - ((logY ? log10(y) : y) - y0) / (y1 - y0) * plotHeight }

        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(Self.f(width / 2))" y="22" text-anchor="middle" font-size="15">\(Self.escape(title))</text>

        """
        // Grid and ticks.
        for tick in Self.ticks(x0, x1) {
            let x = px(tick)
            out += "<line x1=\"\(Self.f(x))\" y1=\"\(Self.f(top))\" x2=\"\(Self.f(x))\" y2=\"\(Self.f(top + plotHeight))\" stroke=\"#eee\"/>\n"
            out += "<text x=\"\(Self.f(x))\" y=\"\(Self.f(top + plotHeight + 16))\" text-anchor=\"middle\">\(Self.label(tick))</text>\n"
        }
        let yTicks = logY ? Array(stride(from: y0, through: y1, by: max(1, ((y1 - y0) / 8).rounded(.up)))) : Self.ticks(y0, y1)
        for tick in yTicks {
            let y = top + plotHeight - (tick - y0) / (y1 - y0) * plotHeight
            out += "<line x1=\"\(Self.f(left))\" y1=\"\(Self.f(y))\" x2=\"\(Self.f(left + plotWidth))\" y2=\"\(Self.f(y))\" stroke=\"#eee\"/>\n"
            out += "<text x=\"\(Self.f(left - 6))\" y=\"\(Self.f(y + 4))\" text-anchor=\"end\">\(logY ? "1e\(Int(tick))" : Self.label(tick))</text>\n"
        }
        out += "<rect x=\"\(Self.f(left))\" y=\"\(Self.f(top))\" width=\"\(Self.f(plotWidth))\" height=\"\(Self.f(plotHeight))\" fill=\"none\" stroke=\"#333\"/>\n"
        out += "<text x=\"\(Self.f(left + plotWidth / 2))\" y=\"\(Self.f(top + plotHeight + 36))\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        out += "<text transform=\"translate(18 \(Self.f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(Self.escape(yLabel))</text>\n"
        for (k, s) in plotted.enumerated() {
            let colour = Self.palette[k % Self.palette.count]
            let path = s.points.map { "\(Self.f(px($0.x))),\(Self.f(py($0.y)))" }.joined(separator: " ")
            if !path.isEmpty {
                out += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.8\" points=\"\(path)\"/>\n"
            }
            let y = top + plotHeight + 52 + 18 * Double(k)
            out += "<line x1=\"\(Self.f(left))\" y1=\"\(Self.f(y - 4))\" x2=\"\(Self.f(left + 24))\" y2=\"\(Self.f(y - 4))\" stroke=\"\(colour)\" stroke-width=\"2\"/>\n"
            out += "<text x=\"\(Self.f(left + 30))\" y=\"\(Self.f(y))\">\(Self.escape(s.label))</text>\n"
        }
        return out + "</svg>\n"
    }

    /// About six round-numbered ticks covering `[low, high]`.
    static func ticks(_ low: Double, _ high: Double) -> [Double] {
        let raw = (high - low) / 6
        let magnitude = pow(10, log10(raw).rounded(.down))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var tick = (low / step).rounded(.up) * step
        var out: [Double] = []
        while tick <= high + step * 1e-9 {
            out.append(tick)
            tick += step
        }
        return out
    }

    static func f(_ x: Double) -> String { String(format: "%.1f", x) }

    static func label(_ x: Double) -> String {
        if x == x.rounded(), abs(x) < 1e9 { return String(Int(x)) }
        return String(format: "%g", x)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
