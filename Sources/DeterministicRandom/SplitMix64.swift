/// Seedable pseudo-random generation shared by every module, so that a seed reproduces a
/// protocol run, a data partition or a model initialisation exactly.

/// A small, fast, seedable pseudo-random generator (SplitMix64), so every
/// protocol decision is reproducible from a seed.
public struct SplitMix64: RandomNumberGenerator, Sendable, Hashable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A generator for a sub-component, independent of this one's future output.
    public mutating func split() -> SplitMix64 { SplitMix64(seed: next() ^ 0xD1B5_4A32_D192_ED03) }
}
