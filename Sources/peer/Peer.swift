import ArgumentParser

/// `peer`: run and manage a Murmuration node.
@main
struct Peer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "A serverless peer-to-peer node for gossip federated learning.",
        subcommands: [
            Keygen.self, ShowID.self, NetworkKeyCommand.self,
            Exchange.self,
        ]
    )
}
