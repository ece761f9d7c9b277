import ArgumentParser
import CommandSupport
import Learner
#if canImport(Glibc)
import Glibc
#endif

/// `peer`: run and manage a Murmuration node.
@main
struct Peer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "A serverless peer-to-peer node for gossip federated learning.",
        subcommands: [
            Keygen.self, ShowID.self, NetworkKeyCommand.self,
            Join.self, Status.self, Leave.self,
            Exchange.self,
            Train.self,
            Predict.self,
            Compress.self,
            Publish.self, Rollback.self, Models.self, Serve.self,
        ]
    )

    /// Runs under the conventions of docs/cli.md: `error: ...` on stderr, exit 64 or 1.
    static func main() {
        BLASKernel.selectForThisCPU()
        returnLargeBuffersToTheSystem()
        CommandConventions.main(Peer.self, expand: JoinConfig.expand)
    }

    /// Makes glibc serve every allocation of 1 MiB or more (model shares, signed deltas,
    /// reassembled messages) straight from the kernel and give it back when freed. By default
    /// glibc raises that threshold after the first such buffer is freed, and later ones then
    /// stay in the heaps of the threads that used them (the loop and libuv's pool): a peer
    /// averaging 1,000,000 elements with 8 neighbours held 115–137 MiB that way, and 59 MiB
    /// with the threshold fixed (`make bench`, runtime suite).
    static func returnLargeBuffersToTheSystem() {
        #if canImport(Glibc)
        // `mallopt` is glibc's (malloc.h, which Swift's Glibc module leaves out); -3 is its
        // M_MMAP_THRESHOLD. Another C library simply has no such symbol.
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
        _ = unsafeBitCast(symbol, to: Mallopt.self)(-3, 1 << 20)
        #endif
    }
}
