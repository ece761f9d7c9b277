import CBLAS
#if canImport(Glibc)
import Glibc
#endif

/// Which OpenBLAS kernel family runs the products, and a better one when OpenBLAS fell back.
///
/// An OpenBLAS older than the CPU does not recognise it and picks a generic family: Debian's
/// 0.3.21 runs `Haswell` (AVX2) kernels on AVX-512 CPUs it does not know (recent Xeons, AMD
/// Zen 4 and 5), or `Prescott` (SSE3) ones. OpenBLAS reads `OPENBLAS_CORETYPE` once, when the
/// library is loaded, so the choice can only be changed by starting the program again with it
/// set. ``selectForThisCPU(arguments:)`` does that at the top of each program's `main`.
public enum BLASKernel {
    /// The kernel family in use (`openblas_get_corename`), for example `Haswell`.
    public static var current: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// Families a CPU with AVX2 and FMA outgrows (SSE-only, AVX-only and pre-Zen AMD kernels).
    static let olderThanAVX2: Set<String> = [
        "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Sandybridge",
        "Barcelona", "Bobcat", "Bulldozer", "Piledriver", "Steamroller", "Excavator", "Katmai",
        "Coppermine", "Northwood", "Opteron", "Opteron_SSE3", "Banias", "Nano", "Athlon",
    ]

    /// The family to use instead of `current` on a CPU with `flags` (from /proc/cpuinfo), or
    /// nil when `current` is already the best this library has for it.
    static func better(than current: String, cpuFlags flags: Set<String>) -> String? {
        let avx512 = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
        let avx2 = flags.contains("avx2") && flags.contains("fma")
        if avx512, olderThanAVX2.contains(current) || current == "Haswell" || current == "Zen" { return "SkylakeX" }
        if avx2, olderThanAVX2.contains(current) { return "Haswell" }
        return nil
    }

    /// The CPU's feature flags, from the first `flags` line of /proc/cpuinfo (empty elsewhere).
    static func cpuFlags() -> Set<String> {
        guard let file = fopen("/proc/cpuinfo", "r") else { return [] }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            guard text.hasPrefix("flags") else { continue }
            return Set(text.split(separator: ":", maxSplits: 1).last?.split(whereSeparator: \.isWhitespace).map(String.init) ?? [])
        }
        return []
    }

    /// The environment variable that says which family OpenBLAS should use.
    public static let environmentVariable = "OPENBLAS_CORETYPE"
    /// Set alongside it by ``selectForThisCPU(arguments:)``: the family OpenBLAS had picked.
    static let replacedVariable = "MURMURATION_BLAS_REPLACED"

    /// The family in use and where it came from, for `--verbose` output and benchmarks.
    public static var description: String {
        if let replaced = getenv(replacedVariable).map({ String(cString: $0) }) {
            return "\(current) (chosen for this CPU; OpenBLAS alone picked \(replaced))"
        }
        if getenv(environmentVariable) != nil { return "\(current) (set by \(environmentVariable))" }
        return "\(current) (OpenBLAS's own choice)"
    }

    /// If OpenBLAS picked a fallback family for this x86-64 CPU and `OPENBLAS_CORETYPE` is not
    /// set, sets it to the right family and executes the program again with the same
    /// arguments (same process ID, same open files); otherwise returns. A value the user set is
    /// never overridden, and on other architectures (arm64 boards) nothing changes. Call it
    /// first thing in `main`, before any thread starts.
    public static func selectForThisCPU(arguments: [String] = CommandLine.arguments) {
        #if arch(x86_64)
        guard getenv(environmentVariable) == nil, let family = better(than: current, cpuFlags: cpuFlags()) else { return }
        setenv(replacedVariable, current, 1)
        setenv(environmentVariable, family, 1)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", &argv)
        // execv returned: the program runs on with the kernels it has.
        for pointer in argv { free(pointer) }
        unsetenv(environmentVariable)
        unsetenv(replacedVariable)
        #endif
    }
}
