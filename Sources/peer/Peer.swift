import ArgumentParser
import CommandSupport

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
        ]
    )

    /// Runs under the conventions of docs/cli.md: `error: ...` on stderr, exit 64 or 1.
    static func main() { CommandConventions.main(Peer.self, expand: JoinConfig.expand) }
}
