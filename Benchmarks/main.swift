import Foundation
import Learner

/// `murmur-bench SUITE...`: runs benchmark suites; `all` runs every one.
/// Each suite registers itself here with a name and a function.
let suites: [(name: String, run: () throws -> Void)] = [
    ("crypto", runCryptoBench),
    ("learner", runLearnerBench),
    ("gossip", GossipBench.run),
    ("overlay", OverlayBench.run),
    ("runtime", RuntimeBench.run),
    ("learning", LearningBench.run),
    ("deployment", DeploymentBench.run),
]

BLASKernel.selectForThisCPU()
let requested = Array(CommandLine.arguments.dropFirst())
if requested.isEmpty || requested.contains("--help") {
    print("usage: murmur-bench all | " + suites.map(\.name).joined(separator: " | "))
    exit(requested.isEmpty ? 2 : 0)
}
for suite in suites where requested.contains("all") || requested.contains(suite.name) {
    do {
        try suite.run()
    } catch {
        FileHandle.standardError.write(Data("benchmark \(suite.name) failed: \(error)\n".utf8))
        exit(1)
    }
}
