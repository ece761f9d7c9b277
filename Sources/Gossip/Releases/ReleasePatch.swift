import CZlib

/// The delta between two versions of a model file of the same size, exact by construction:
/// the XOR of the two files (zero wherever they agree), its bytes regrouped by position in
/// their 4-byte word (the sign and exponent bytes of fp32 weights that barely moved are
/// zero together, the noisy low mantissa bytes apart), then deflated. Applying it to the
/// base gives back the newer file bit for bit, which its release hash then confirms.
public enum ReleasePatch {
    /// Bytes of the delta that turns `base` into `target`, or nil if they differ in size.
    public static func make(from base: [UInt8], to target: [UInt8]) -> [UInt8]? {
        guard base.count == target.count, !base.isEmpty else { return nil }
        var planes = [UInt8](repeating: 0, count: base.count)
        regroup(base, target, into: &planes)
        var bound = compressBound(uLong(planes.count))
        var out = [UInt8](repeating: 0, count: Int(bound))
        let status = out.withUnsafeMutableBufferPointer { o in
            planes.withUnsafeBufferPointer { p in compress2(o.baseAddress, &bound, p.baseAddress, uLong(p.count), 6) }
        }
        guard status == Z_OK else { return nil }
        return Array(out[..<Int(bound)])
    }

    /// The file `patch` turns `base` into; nil if the patch is not one for a file of that size.
    public static func apply(_ patch: [UInt8], to base: [UInt8]) -> [UInt8]? {
        guard !base.isEmpty, !patch.isEmpty else { return nil }
        var planes = [UInt8](repeating: 0, count: base.count)
        var length = uLong(planes.count)
        // Inflates into exactly the base's size: a patch that would make more is refused.
        let status = planes.withUnsafeMutableBufferPointer { o in
            patch.withUnsafeBufferPointer { p in uncompress(o.baseAddress, &length, p.baseAddress, uLong(p.count)) }
        }
        guard status == Z_OK, Int(length) == base.count else { return nil }
        var target = [UInt8](repeating: 0, count: base.count)
        let words = base.count / 4
        base.withUnsafeBufferPointer { b in
            planes.withUnsafeBufferPointer { p in
                target.withUnsafeMutableBufferPointer { t in
                    for k in 0..<4 {
                        for i in 0..<words { t[4 * i + k] = b[4 * i + k] ^ p[k * words + i] }
                    }
                    for i in (4 * words)..<b.count { t[i] = b[i] ^ p[i] }
                }
            }
        }
        return target
    }

    /// XOR of `a` and `b`, byte k of every 4-byte word into plane k; a tail shorter than a
    /// word stays in place at the end.
    private static func regroup(_ a: [UInt8], _ b: [UInt8], into planes: inout [UInt8]) {
        let words = a.count / 4
        a.withUnsafeBufferPointer { x in
            b.withUnsafeBufferPointer { y in
                planes.withUnsafeMutableBufferPointer { p in
                    for k in 0..<4 {
                        for i in 0..<words { p[k * words + i] = x[4 * i + k] ^ y[4 * i + k] }
                    }
                    for i in (4 * words)..<x.count { p[i] = x[i] ^ y[i] }
                }
            }
        }
    }
}
