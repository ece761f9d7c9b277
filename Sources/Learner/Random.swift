import DeterministicRandom
import Foundation

/// Sampling helpers for everything random in `Learner` (initialisation, shuffling,
/// partitioning), written out so results do not depend on the standard library's algorithms.
extension SplitMix64 {
    /// A uniform double in [0, 1) from the top 53 bits; written out so results do not depend
    /// on the standard library's sampling algorithm.
    public mutating func unitDouble() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// A uniform integer in 0..<bound (bound > 0), by Lemire's multiply-shift with rejection.
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0, "below() needs a positive bound")
        let b = UInt64(bound)
        var m = next().multipliedFullWidth(by: b)
        if m.low < b {
            let threshold = (0 &- b) % b
            while m.low < threshold { m = next().multipliedFullWidth(by: b) }
        }
        return Int(m.high)
    }

    /// A standard normal variate (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = max(unitDouble(), .leastNormalMagnitude)
        let u2 = unitDouble()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// A Gamma(shape, 1) variate (Marsaglia–Tsang; shapes below 1 by the boost u^(1/shape)).
    public mutating func gamma(shape: Double) -> Double {
        if shape < 1 {
            let u = max(unitDouble(), .leastNormalMagnitude)
            return gamma(shape: shape + 1) * pow(u, 1 / shape)
        }
        let d = shape - 1.0 / 3.0
        let c = 1 / (9 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat {
                x = normal()
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = unitDouble()
            if u < 1 - 0.0331 * x * x * x * x { return d * v }
            if log(max(u, .leastNormalMagnitude)) < 0.5 * x * x + d * (1 - v + log(v)) { return d * v }
        }
    }

    /// Fisher–Yates shuffle, written out for reproducibility across standard-library versions.
    public mutating func shuffle<T>(_ array: inout [T]) {
        guard array.count > 1 else { return }
        for i in stride(from: array.count - 1, to: 0, by: -1) {
            array.swapAt(i, below(i + 1))
        }
    }
}
