import Testing
@testable import Gossip

/// `#expect` for conditions that call mutating methods (the macro cannot capture them).
private func check(_ condition: Bool, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(condition, sourceLocation: sourceLocation)
}

@Suite struct ActionInterpreterTests {
    typealias Interpreter = ActionInterpreter<String, String, Int>

    /// Runs `actions` and returns what the driver was asked to do.
    private func run(_ interpreter: inout Interpreter, _ actions: [Interpreter.Action])
        -> (sent: [String], wakes: [(timer: String, token: UInt64, at: Instant)], reports: [Int], work: [UInt64]) {
        var sent: [String] = [], wakes: [(String, UInt64, Instant)] = [], reports: [Int] = [], work: [UInt64] = []
        interpreter.perform(actions, send: { m, _, _ in sent.append(m) }, wake: { wakes.append(($0, $1, $2)) }, report: { reports.append($0) },
                            compute: { work.append($0.id) })
        return (sent, wakes.map { (timer: $0.0, token: $0.1, at: $0.2) }, reports, work)
    }

    @Test func actionInterpreter_workRequests_reachTheDriverInOrder() {
        var interpreter = Interpreter()
        let done = run(&interpreter, [.compute(ComputeRequest(id: 7, cost: 1) { 1 }), .report(3), .compute(ComputeRequest(id: 9, cost: 2) { 2 })])
        #expect(done.work == [7, 9] && done.reports == [3])
        #expect(interpreter.pendingTimers == 0, "work is not a timer")
    }

    @Test func actionInterpreter_rescheduledTimer_onlyTheLatestWakeUpFires() {
        var interpreter = Interpreter()
        let first = run(&interpreter, [.schedule("probe", at: Instant(nanoseconds: 10))]).wakes[0]
        let second = run(&interpreter, [.schedule("probe", at: Instant(nanoseconds: 5))]).wakes[0]
        #expect(first.token != second.token)
        #expect(interpreter.pendingTimers == 1)
        check(interpreter.fire("probe", token: second.token))
        check(!interpreter.fire("probe", token: first.token))  // replaced: stale
        check(!interpreter.fire("probe", token: second.token))  // fires once
        #expect(!interpreter.isPending("probe"))
    }

    @Test func actionInterpreter_cancelledOrResetTimer_neverFires() {
        var interpreter = Interpreter()
        let a = run(&interpreter, [.schedule("a", at: .zero), .schedule("b", at: .zero), .cancel("a")]).wakes
        check(!interpreter.fire("a", token: a[0].token))
        #expect(interpreter.isPending("b"))
        interpreter.reset()
        check(!interpreter.fire("b", token: a[1].token))
        #expect(interpreter.pendingTimers == 0)
    }

    @Test func actionInterpreter_sendsAndReports_inActionOrder() {
        var interpreter = Interpreter()
        let out = run(&interpreter, [.send("x", to: Endpoint(host: "h", port: 1), via: .datagram(to: nil)), .report(1),
                                     .send("y", to: Endpoint(host: "h", port: 2), via: .session(averagingTestPeer(1))), .report(2)])
        #expect(out.sent == ["x", "y"])
        #expect(out.reports == [1, 2])
    }
}
