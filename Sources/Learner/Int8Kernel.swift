import CInference

/// One dense layer prepared for the int8 inference path.
struct Int8Layer: Sendable {
    let inputs: Int
    let outputs: Int
    /// `inputs` rounded up to a multiple of ``Int8Kernel/lanes``: the length of every row of
    /// weights and of quantized activations, zero-padded.
    let stride: Int
    /// outputs × stride weights: the int8 values, held in 16-bit lanes because that is the
    /// width the multiply-add instruction takes (x86 `pmaddwd`, arm `smlal`).
    let weights: [Int16]
    /// One scale per output unit: weight = value × scale.
    let scales: [Float]
    let biases: [Float]
    /// Whether a ReLU follows (every layer but the last).
    let relu: Bool

    /// Layer `l` of `weights`, whose biases come from `model`.
    init(_ l: Int, of weights: Int8Weights, biasesFrom model: Model) {
        let architecture = weights.architecture
        let layer = architecture.layers[l]
        inputs = layer.inputs
        outputs = layer.outputs
        stride = (inputs + Int8Kernel.lanes - 1) / Int8Kernel.lanes * Int8Kernel.lanes
        var widened = [Int16](repeating: 0, count: outputs * stride)
        for o in 0..<outputs {
            for k in 0..<inputs { widened[o * stride + k] = Int16(weights.values[layer.valueOffset + o * inputs + k]) }
        }
        self.weights = widened
        let unit = architecture.firstUnit(ofLayer: l)
        scales = Array(weights.scales[unit..<(unit + outputs)])
        biases = Array(model.parameters[layer.biasOffset..<(layer.biasOffset + outputs)])
        relu = l < architecture.layerCount - 1
    }
}

/// The int8 inference kernel: activations quantized per sample to int8 (symmetric, scale =
/// the sample's largest magnitude / 127), products of int8 activations and int8 weights summed
/// in Int32, each sum dequantized with its row's weight scale times the sample's activation
/// scale, plus the bias. The sums cannot overflow: a layer has at most 65,536 inputs, and
/// 65,536 · 127 · 127 < 2³¹.
enum Int8Kernel {
    typealias Lanes = SIMD8<Int16>
    /// Values per vector.
    static let lanes = Lanes.scalarCount

    @inline(__always)
    static func load(_ p: UnsafePointer<Int16>) -> Lanes { UnsafeRawPointer(p).loadUnaligned(as: Lanes.self) }

    /// The eight products of `a` and `b` summed in pairs into four Int32 lanes: the shape the
    /// compiler turns into one `pmaddwd` on x86 (and widening multiply-adds on arm).
    @inline(__always)
    static func multiplyAdd(_ a: Lanes, _ b: Lanes) -> SIMD4<Int32> {
        let products = SIMD8<Int32>(truncatingIfNeeded: a) &* SIMD8<Int32>(truncatingIfNeeded: b)
        return products.evenHalf &+ products.oddHalf
    }

    /// Quantizes `rows` rows of `count` floats at `x` into rows of `stride` int8 values at `q`
    /// (in 16-bit lanes for this kernel, in bytes for oneDNN; the padding zeroed), and writes
    /// each row's scale to `scales`: CInference's pass (AVX2 where the CPU has it), rounding to
    /// nearest with ties to even.
    static func quantize<Value: QuantizedValue>(_ x: UnsafePointer<Float>, rows: Int, count: Int,
                                                into q: UnsafeMutablePointer<Value>, stride: Int, scales: UnsafeMutablePointer<Float>) {
        murmur_quantize(x, rows, count, q, stride, Int32(MemoryLayout<Value>.size), scales)
    }

    /// y[r][o] = (Σₖ q[r][k] · w[o][k]) · scale[o] · activationScales[r] + bias[o], with a ReLU
    /// when the layer has one, for `rows` quantized rows at `q` (row length `layer.stride`);
    /// `y` is rows × outputs. Four units at a time against two samples at a time, so each
    /// loaded vector serves several products.
    static func multiply(_ layer: Int8Layer, _ q: UnsafePointer<Int16>, activationScales xs: UnsafePointer<Float>, rows: Int,
                         into y: UnsafeMutablePointer<Float>) {
        let n = layer.stride, outputs = layer.outputs, relu = layer.relu
        layer.weights.withUnsafeBufferPointer { wb in
            layer.scales.withUnsafeBufferPointer { ws in
                layer.biases.withUnsafeBufferPointer { b in
                    guard let w = wb.baseAddress else { return }
                    @inline(__always) func finish(_ sum: Int32, unit o: Int, row r: Int) {
                        y[r * outputs + o] = dequantized(sum, scale: ws[o], activationScale: xs[r], bias: b[o], relu: relu)
                    }
                    var o = 0
                    while o + 4 <= outputs {
                        let w0 = w + o * n, w1 = w0 + n, w2 = w1 + n, w3 = w2 + n
                        var r = 0
                        while r + 2 <= rows {
                            let x0 = q + r * n, x1 = x0 + n
                            var a00 = SIMD4<Int32>(), a01 = SIMD4<Int32>(), a02 = SIMD4<Int32>(), a03 = SIMD4<Int32>()
                            var a10 = SIMD4<Int32>(), a11 = SIMD4<Int32>(), a12 = SIMD4<Int32>(), a13 = SIMD4<Int32>()
                            var k = 0
                            while k < n {
                                let p = load(x0 + k), s = load(x1 + k)
                                let v0 = load(w0 + k), v1 = load(w1 + k), v2 = load(w2 + k), v3 = load(w3 + k)
                                a00 &+= multiplyAdd(p, v0); a01 &+= multiplyAdd(p, v1); a02 &+= multiplyAdd(p, v2); a03 &+= multiplyAdd(p, v3)
                                a10 &+= multiplyAdd(s, v0); a11 &+= multiplyAdd(s, v1); a12 &+= multiplyAdd(s, v2); a13 &+= multiplyAdd(s, v3)
                                k &+= lanes
                            }
                            finish(a00.wrappedSum(), unit: o, row: r); finish(a01.wrappedSum(), unit: o + 1, row: r)
                            finish(a02.wrappedSum(), unit: o + 2, row: r); finish(a03.wrappedSum(), unit: o + 3, row: r)
                            finish(a10.wrappedSum(), unit: o, row: r + 1); finish(a11.wrappedSum(), unit: o + 1, row: r + 1)
                            finish(a12.wrappedSum(), unit: o + 2, row: r + 1); finish(a13.wrappedSum(), unit: o + 3, row: r + 1)
                            r += 2
                        }
                        if r < rows {
                            let x0 = q + r * n
                            var a0 = SIMD4<Int32>(), a1 = SIMD4<Int32>(), a2 = SIMD4<Int32>(), a3 = SIMD4<Int32>()
                            var k = 0
                            while k < n {
                                let p = load(x0 + k)
                                a0 &+= multiplyAdd(p, load(w0 + k)); a1 &+= multiplyAdd(p, load(w1 + k))
                                a2 &+= multiplyAdd(p, load(w2 + k)); a3 &+= multiplyAdd(p, load(w3 + k))
                                k &+= lanes
                            }
                            finish(a0.wrappedSum(), unit: o, row: r); finish(a1.wrappedSum(), unit: o + 1, row: r)
                            finish(a2.wrappedSum(), unit: o + 2, row: r); finish(a3.wrappedSum(), unit: o + 3, row: r)
                        }
                        o += 4
                    }
                    while o < outputs {
                        let w0 = w + o * n
                        for r in 0..<rows {
                            let x0 = q + r * n
                            var a = SIMD4<Int32>()
                            var k = 0
                            while k < n {
                                a &+= multiplyAdd(load(x0 + k), load(w0 + k))
                                k &+= lanes
                            }
                            finish(a.wrappedSum(), unit: o, row: r)
                        }
                        o += 1
                    }
                }
            }
        }
    }
}

extension Int8Kernel {
    /// One output of a layer from its Int32 sum: the sum times the unit's weight scale times the
    /// sample's activation scale, plus the bias, through the ReLU if the layer has one.
    @inline(__always)
    static func dequantized(_ sum: Int32, scale: Float, activationScale: Float, bias: Float, relu: Bool) -> Float {
        let v = Float(sum) * (scale * activationScale) + bias
        return relu && v < 0 ? 0 : v
    }

    /// ``multiply(_:_:activationScales:rows:into:)``'s outputs from sums computed elsewhere:
    /// `sums` is rows × outputs.
    static func dequantize(_ sums: UnsafePointer<Int32>, _ layer: Int8Layer, activationScales xs: UnsafePointer<Float>, rows: Int,
                           into y: UnsafeMutablePointer<Float>) {
        let outputs = layer.outputs
        layer.scales.withUnsafeBufferPointer { ws in
            layer.biases.withUnsafeBufferPointer { b in
                guard let ws = ws.baseAddress, let b = b.baseAddress else { return }
                // Two loops rather than a test per value, so each vectorises.
                if layer.relu {
                    for r in 0..<rows { dequantizeRow(sums + r * outputs, ws, xs[r], b, outputs, relu: true, into: y + r * outputs) }
                } else {
                    for r in 0..<rows { dequantizeRow(sums + r * outputs, ws, xs[r], b, outputs, relu: false, into: y + r * outputs) }
                }
            }
        }
    }

    @inline(__always)
    private static func dequantizeRow(_ sums: UnsafePointer<Int32>, _ ws: UnsafePointer<Float>, _ activationScale: Float, _ b: UnsafePointer<Float>,
                                      _ outputs: Int, relu: Bool, into y: UnsafeMutablePointer<Float>) {
        for o in 0..<outputs { y[o] = dequantized(sums[o], scale: ws[o], activationScale: activationScale, bias: b[o], relu: relu) }
    }
}

/// An integer type the quantizer writes: Int16 lanes for ``Int8Kernel``, bytes for oneDNN.
protocol QuantizedValue: FixedWidthInteger {}

extension Int16: QuantizedValue {}
extension Int8: QuantizedValue {}
