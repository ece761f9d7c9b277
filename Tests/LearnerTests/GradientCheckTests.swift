import DeterministicRandom
import Foundation
import Testing
@testable import Learner

/// Finite-difference checks of the analytic gradients (computed in Float with BLAS) against a
/// plain Double-precision reference of the same network and loss.
struct GradientCheckTests {
    /// Mean softmax cross-entropy of the network on a batch, all in Double, written without
    /// BLAS or any code under test.
    static func referenceLoss(_ arch: Architecture, _ p: [Double], _ x: [Double], _ y: [Int32]) -> Double {
        let sizes = arch.layerSizes
        let rows = y.count
        var total = 0.0
        for r in 0..<rows {
            var a = Array(x[(r * sizes[0])..<((r + 1) * sizes[0])])
            for l in 0..<arch.layerCount {
                let din = sizes[l], dout = sizes[l + 1]
                let w = arch.weightOffset(l), b = w + din * dout
                var z = [Double](repeating: 0, count: dout)
                for o in 0..<dout {
                    var s = p[b + o]
                    for i in 0..<din { s += p[w + o * din + i] * a[i] }
                    z[o] = l < arch.layerCount - 1 ? max(0, s) : s
                }
                a = z
            }
            let m = a.max() ?? 0
            let lse = m + log(a.reduce(0) { $0 + exp($1 - m) })
            total += lse - a[Int(y[r])]
        }
        return total / Double(rows)
    }

    /// Random inputs, labels and parameters for `arch` from a fixed seed.
    static func problem(_ arch: Architecture, rows: Int, seed: UInt64) -> (Model, [Float], [Int32]) {
        var rng = SplitMix64(seed: seed)
        var model = Model(architecture: arch, seed: seed)
        // Non-zero biases so every parameter matters; inputs away from ReLU kinks w.h.p.
        var p = model.parameters
        for i in p.indices { p[i] += Float(rng.normal() * 0.1) }
        model.parameters = p
        let x = (0..<(rows * arch.inputCount)).map { _ in Float(rng.normal()) }
        let y = (0..<rows).map { _ in Int32(rng.below(arch.classCount)) }
        return (model, x, y)
    }

    @Test(arguments: [[], [5], [6, 4]])
    func denseReluSoftmax_analyticGradient_matchesFiniteDifferences(hidden: [Int]) throws {
        let arch = try Architecture(inputCount: 4, hiddenSizes: hidden, classCount: 3)
        let rows = 7
        let (model, x, y) = Self.problem(arch, rows: rows, seed: 42)
        // A workspace larger than the batch, as for the short last batch of an epoch.
        var ws = Workspace(architecture: arch, capacity: rows + 9)
        var gradient = [Float](repeating: 0, count: arch.parameterCount)
        let loss = x.withUnsafeBufferPointer { xb in
            y.withUnsafeBufferPointer { yb in
                gradient.withUnsafeMutableBufferPointer { g in
                    model.lossAndGradient(xb.baseAddress!, labels: yb.baseAddress!, rows: rows, workspace: &ws, gradient: g)
                }
            }
        }
        var p = model.parameters.map(Double.init)
        let xd = x.map(Double.init)
        let reference = Self.referenceLoss(arch, p, xd, y)
        #expect(abs(loss - reference) < 1e-5 * max(1, abs(reference)))
        let eps = 1e-6
        var worst = 0.0
        for i in p.indices {
            let saved = p[i]
            p[i] = saved + eps
            let up = Self.referenceLoss(arch, p, xd, y)
            p[i] = saved - eps
            let down = Self.referenceLoss(arch, p, xd, y)
            p[i] = saved
            let numeric = (up - down) / (2 * eps)
            let error = abs(numeric - Double(gradient[i])) / max(1e-2, abs(numeric) + abs(Double(gradient[i])))
            worst = max(worst, error)
        }
        #expect(worst < 1e-3, "worst relative gradient error \(worst) for \(arch)")
    }

    @Test func softmaxCrossEntropy_logitGradient_matchesFiniteDifferences() {
        let rows = 3, classes = 5
        var rng = SplitMix64(seed: 7)
        let z = (0..<(rows * classes)).map { _ in Float(rng.normal() * 3) }
        let y: [Int32] = [0, 4, 2]
        var g = [Float](repeating: 0, count: z.count)
        let loss = softmaxCrossEntropy(logits: z, labels: y, rows: rows, classes: classes, gradient: &g)
        func referenceLoss(_ z: [Double]) -> Double {
            var total = 0.0
            for r in 0..<rows {
                let row = Array(z[(r * classes)..<((r + 1) * classes)])
                let m = row.max() ?? 0
                total += m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[Int(y[r])]
            }
            return total / Double(rows)
        }
        var zd = z.map(Double.init)
        #expect(abs(loss - referenceLoss(zd)) < 1e-5)
        for i in zd.indices {
            let saved = zd[i]
            zd[i] = saved + 1e-6
            let up = referenceLoss(zd)
            zd[i] = saved - 1e-6
            let down = referenceLoss(zd)
            zd[i] = saved
            #expect(abs((up - down) / 2e-6 - Double(g[i])) < 1e-5)
        }
    }

    @Test func softmaxCrossEntropy_hugeLogits_staysFinite() {
        let z: [Float] = [1e30, -1e30, 0, 88, 89, 90]
        var g = [Float](repeating: 0, count: 6)
        let loss = softmaxCrossEntropy(logits: z, labels: [1, 0], rows: 2, classes: 3, gradient: &g)
        #expect(loss.isFinite)
        #expect(g.allSatisfy { $0.isFinite })
    }
}
