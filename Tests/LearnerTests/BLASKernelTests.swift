import Testing
@testable import Learner

/// The choice of a better OpenBLAS kernel family for a CPU the library did not recognise.
@Suite struct BLASKernelTests {
    static let avx2: Set<String> = ["sse3", "avx", "avx2", "fma"]
    static let avx512 = avx2.union(["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"])

    @Test(arguments: [
        // An AVX-512 Xeon that Debian's 0.3.21 does not know runs SSE3 kernels: SkylakeX.
        ("Prescott", avx512, "SkylakeX"),
        // AMD Zen 4 and 5 get the AVX2 kernels (Haswell, Zen); both have AVX-512.
        ("Haswell", avx512, "SkylakeX"),
        ("Zen", avx512, "SkylakeX"),
        // An AVX2 CPU given SSE or AVX-only kernels.
        ("Nehalem", avx2, "Haswell"),
        ("Sandybridge", avx2, "Haswell"),
    ] as [(String, Set<String>, String)])
    func aFallbackFamily_isReplacedByTheOneTheCPUCanRun(current: String, flags: Set<String>, expected: String) {
        #expect(BLASKernel.better(than: current, cpuFlags: flags) == expected)
    }

    @Test(arguments: [
        ("SkylakeX", avx512), ("Cooperlake", avx512), ("SapphireRapids", avx512),
        ("Haswell", avx2), ("Zen", avx2),
        // No AVX2: SSE kernels are what the CPU can run.
        ("Prescott", Set(["sse3", "avx"])),
        // Without every AVX-512 subset the SkylakeX kernels need, AVX2 kernels stay.
        ("Haswell", avx2.union(["avx512f"])),
    ] as [(String, Set<String>)])
    func aFittingFamily_isKept(current: String, flags: Set<String>) {
        #expect(BLASKernel.better(than: current, cpuFlags: flags) == nil)
    }

    @Test func theCPUsFlagsAreRead() {
        #if arch(x86_64) && os(Linux)
        #expect(BLASKernel.cpuFlags().contains("sse2"), "every x86-64 CPU has SSE2")
        #endif
    }
}
