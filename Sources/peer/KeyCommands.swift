import ArgumentParser
import CommandSupport
import Crypto
import Foundation

/// Where keys live unless `--dir` says otherwise.
enum KeyDirectory {
    /// `~/.murmuration`: one directory per user, created 0700.
    static var defaultPath: String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "."
        return home + "/.murmuration"
    }

    static func identityPath(_ dir: String) -> String { dir + "/" + KeyFile.identityFileName }
}

/// A failure a person can act on: printed as `error: ...`, exit status 1.
typealias UserFacingError = CommandFailure

/// Runs `body`, turning any error into a plain message (printed as `error: ...`, exit 1).
func userFacing<R>(_ body: () throws -> R) throws -> R {
    do { return try body() } catch let error as UserFacingError { throw error } catch let error as KeyFileError {
        throw UserFacingError(explained(error))
    } catch {
        throw UserFacingError("\(error)")
    }
}

/// A key-file error in words a person can act on: the system errors a refused open gives
/// are translated into what is wrong and what to do.
func explained(_ error: KeyFileError) -> String {
    guard case let .system(path, call, code) = error else { return "\(error)" }
    switch code {
    case EACCES:
        return "\(path): permission denied (\(call)); run as the user who owns it, or give a path this user may use"
    case ENOTDIR:
        return "\(path): a component of the path is not a directory; check the path"
    case EISDIR:
        return "\(path) is a directory, not a key file; give the key file's path"
    default:
        return "\(error)"
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create this peer's Ed25519 identity.",
        discussion: """
        Writes DIR/identity.key (mode 0600, inside DIR created with mode 0700) and prints the new peer ID. \
        An existing key is never overwritten: move it away first if you mean to replace it.
        """
    )

    @Option(name: .long, help: "Key directory.")
    var dir: String = KeyDirectory.defaultPath

    func run() throws {
        try userFacing {
            try KeyFile.prepareDirectory(dir)
            let identity = try Identity.generate()
            let path = KeyDirectory.identityPath(dir)
            try identity.save(to: path)
            printNote("created \(path)")
            print("peer id: \(identity.peerID)")
            print("fingerprint: \(identity.peerID.fingerprint)")
        }
    }
}

struct ShowID: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "id",
        abstract: "Print this peer's ID (its Ed25519 public key in hex).",
        discussion: "Reads DIR/identity.key; refuses a key file that group or others can read."
    )

    @Option(name: .long, help: "Key directory.")
    var dir: String = KeyDirectory.defaultPath

    @Flag(name: .long, help: "Print only the 64-character peer ID.")
    var quiet = false

    func run() throws {
        try userFacing {
            let identity = try Identity.load(from: KeyDirectory.identityPath(dir))
            if quiet {
                print(identity.peerID)
            } else {
                print("peer id: \(identity.peerID)")
                print("fingerprint: \(identity.peerID.fingerprint)")
            }
        }
    }
}

struct NetworkKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network-key",
        abstract: "Manage the 32-byte key that admits peers to a network.",
        subcommands: [New.self]
    )

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a new random network key file.",
            discussion: """
            Writes FILE with mode 0600 and never overwrites an existing file. \
            Give the file to every peer of the network over a channel you trust: holding it is what makes a peer a member.
            """
        )

        @Option(name: .long, help: "Where to write the key.")
        var out: String

        func run() throws {
            try userFacing {
                let parent = parentDirectory(of: out)
                if !FileManager.default.fileExists(atPath: parent) {
                    try KeyFile.prepareDirectory(parent)
                }
                let key = try NetworkKey.generate()
                try key.save(to: out)
                printNote("created \(out)")
                print("network id: \(Hex.encode(key.id.prefix(8)))")
            }
        }
    }
}
