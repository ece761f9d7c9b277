import CBLAS

/// Operations on parameter vectors (`[Float]`) for averaging, clipping and deltas; BLAS level 1
/// where it helps, loops over unsafe buffers elsewhere.
public enum VectorMath {
    /// y ← a·x + y. The lengths must match.
    public static func axpy(_ a: Float, _ x: [Float], _ y: inout [Float]) throws {
        try sameLength(x.count, y.count)
        x.withUnsafeBufferPointer { xs in
            y.withUnsafeMutableBufferPointer { ys in
                guard let xb = xs.baseAddress, let yb = ys.baseAddress else { return }
                cblas_saxpy(Int32(xs.count), a, xb, 1, yb, 1)
            }
        }
    }

    /// x ← a·x.
    public static func scale(_ a: Float, _ x: inout [Float]) {
        x.withUnsafeMutableBufferPointer { xs in
            guard let xb = xs.baseAddress else { return }
            cblas_sscal(Int32(xs.count), a, xb, 1)
        }
    }

    /// x − y, element by element (e.g. a model delta: new − old).
    public static func difference(_ x: [Float], _ y: [Float]) throws -> [Float] {
        try sameLength(x.count, y.count)
        var out = x
        out.withUnsafeMutableBufferPointer { o in
            y.withUnsafeBufferPointer { ys in
                for i in 0..<o.count { o[i] -= ys[i] }
            }
        }
        return out
    }

    /// Euclidean norm, accumulated in Double.
    public static func norm(_ x: [Float]) -> Double {
        x.withUnsafeBufferPointer { xs in
            var s = 0.0
            for v in xs { s += Double(v) * Double(v) }
            return s.squareRoot()
        }
    }

    /// True when no element is NaN or infinite: check before applying anything a peer sent.
    /// One pass without branches (the largest exponent field seen; all ones is NaN or
    /// infinity), which the compiler vectorises.
    public static func allFinite(_ x: [Float]) -> Bool {
        x.withUnsafeBufferPointer { xs in
            var exponents: UInt32 = 0
            for v in xs { exponents = max(exponents, v.bitPattern & 0x7F80_0000) }
            return exponents != 0x7F80_0000
        }
    }

    static func sameLength(_ a: Int, _ b: Int) throws {
        guard a == b else { throw LearnerError.shapeMismatch("vectors of lengths \(a) and \(b)") }
    }
}

/// A row-major matrix over one contiguous `[Float]`; products go to `cblas_sgemm`.
public struct Matrix: Equatable, Sendable {
    public let rows: Int
    public let columns: Int
    public internal(set) var values: [Float]

    public init(rows: Int, columns: Int, values: [Float]) throws {
        guard rows >= 0, columns >= 0, values.count == rows * columns else {
            throw LearnerError.shapeMismatch("\(values.count) values for a \(rows)×\(columns) matrix")
        }
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    public static func zeros(rows: Int, columns: Int) -> Matrix {
        Matrix(unchecked: rows, columns, [Float](repeating: 0, count: rows * columns))
    }

    init(unchecked rows: Int, _ columns: Int, _ values: [Float]) {
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    public subscript(row: Int, column: Int) -> Float {
        get { values[row * columns + column] }
        set { values[row * columns + column] = newValue }
    }

    /// op(self) · op(other), where op transposes when asked.
    public func multiplied(by other: Matrix, transposeSelf: Bool = false, transposeOther: Bool = false) throws -> Matrix {
        let m = transposeSelf ? columns : rows, k = transposeSelf ? rows : columns
        let k2 = transposeOther ? other.columns : other.rows, n = transposeOther ? other.rows : other.columns
        guard k == k2 else { throw LearnerError.shapeMismatch("cannot multiply \(m)×\(k) by \(k2)×\(n)") }
        var out = Matrix.zeros(rows: m, columns: n)
        guard m > 0, n > 0, k > 0 else { return out }
        values.withUnsafeBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                out.values.withUnsafeMutableBufferPointer { c in
                    guard let ab = a.baseAddress, let bb = b.baseAddress, let cb = c.baseAddress else { return }
                    BLAS.gemm(transposeA: transposeSelf, transposeB: transposeOther, m: m, n: n, k: k,
                              a: ab, lda: columns, b: bb, ldb: other.columns, beta: 0, c: cb, ldc: n)
                }
            }
        }
        return out
    }
}
