import Foundation
import Testing

@Suite("netsim average")
struct NetsimCommandTests {
    @Test("stdout is CSV only; the trace hash goes to stderr and to --trace FILE")
    func csvOnly() throws {
        let scratch = try Scratch()
        let result = try CommandRunner.netsim("average", "--nodes", "20", "--rounds", "5", "--loss", "0.1", "--trace", "run.trace", in: scratch.url)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.first == "round,time_s,max_relative_error,messages_sent,messages_dropped")
        #expect(lines.count == 6)
        for line in lines.dropFirst() {
            let fields = line.split(separator: ",")
            #expect(fields.count == 5 && fields.allSatisfy { Double($0) != nil }, "not a CSV row: \(line)")
        }
        let trace = try String(contentsOfFile: scratch.path("run.trace"), encoding: .utf8).trimmingCharacters(in: .newlines)
        #expect(trace.count == 16 && trace.allSatisfy(\.isHexDigit))
        #expect(result.stderr == "trace \(trace)\n")
        // One seed, one run.
        let again = try CommandRunner.netsim("average", "--nodes", "20", "--rounds", "5", "--loss", "0.1", in: scratch.url)
        #expect(again.stdout == result.stdout && again.stderr == result.stderr)
    }

    @Test("out-of-range numbers, negative ones included, are usage errors with a clear message", arguments: [
        (["--loss", "-0.1"], "--loss is a probability from 0 to 1, got -0.1"),
        (["--duplication", "2"], "--duplication is a probability"),
        (["--seed", "-1"], "--seed"),
        (["--nodes", "-5"], "--nodes must be at least 2"),
        (["--links", "100", "--nodes", "10"], "--links must be from 0 to 9"),
        (["--rounds", "0"], "--rounds must be at least 1"),
    ])
    func badNumbers(flags: [String], message: String) throws {
        let scratch = try Scratch()
        let result = try CommandRunner.run("netsim", ["average"] + flags, in: scratch.url)
        expectError(result, status: 64, mentions: [message])
        #expect(!result.stderr.contains("Missing value"))
        #expect(result.stderr.contains("Usage: netsim average"))
    }

    @Test("one seed gives one run in any process: two separate runs print the same trace and CSV")
    func reproducibleAcrossProcesses() throws {
        // Swift seeds Hasher per process: a tie broken by dictionary order would show here.
        let scratch = try Scratch()
        let args = ["average", "--nodes", "60", "--rounds", "20", "--loss", "0.2", "--duplication", "0.05", "--seed", "9"]
        let first = try CommandRunner.run("netsim", args, in: scratch.url)
        let second = try CommandRunner.run("netsim", args, in: scratch.url)
        #expect(first.status == 0 && second.status == 0, "\(first.stderr)")
        #expect(first.stderr.hasPrefix("trace ") && first.stderr == second.stderr)
        #expect(first.stdout == second.stdout && !first.stdout.isEmpty)
        let other = try CommandRunner.run("netsim", Array(args.dropLast()) + ["10"], in: scratch.url)
        #expect(other.stderr != first.stderr, "another seed, another run")
    }

    @Test("an unwritable --trace fails before the run")
    func traceIntoDirectory() throws {
        let scratch = try Scratch()
        let result = try CommandRunner.netsim("average", "--nodes", "10", "--rounds", "2", "--trace", scratch.url.path, in: scratch.url)
        expectError(result, status: 1, mentions: ["--trace", "is a directory"])
    }
}
