import ArgumentParser

/// `netsim`: run many nodes of the Murmuration protocol in virtual time.
@main
struct NetSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netsim",
        abstract: "Deterministic network simulator for the Murmuration gossip protocol.",
        subcommands: [
        ]
    )
}
