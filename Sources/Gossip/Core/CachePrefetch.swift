import CPrefetch

/// Starts loading the first `lines` cache lines of the array (or other object) whose
/// reference is stored `offset` bytes into the value at `base`, without reading the object and
/// without retaining it: the reference is read as a plain word, in place. For nodes'
/// ``ProtocolNode/prefetchState(at:)``. A hint only: nothing is changed, and no result
/// depends on it.
@inline(__always)
func prefetchObject(referencedAt base: UnsafeRawPointer, offset: Int, lines: Int) {
    let object = base.load(fromByteOffset: offset, as: UnsafeRawPointer.self)
    for line in 0..<lines { murmur_prefetch(object + line &* 64) }
}
