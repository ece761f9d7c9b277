import Foundation
import Gossip

/// Work a node asked for (``ComputeRequest``), run by a ``WorkPool`` while the simulator goes
/// on with other events, and collected when its completion is due in virtual time.
///
/// A job is a pure function of what its node handed over, and when its result arrives depends
/// only on its cost, never on the result: so however many threads run jobs, and in whatever
/// order, every node hears the same results at the same virtual times, and a seed reproduces
/// a run exactly.
final class PendingWork: @unchecked Sendable {
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var job: (@Sendable () -> any Sendable)?
    private var result: (any Sendable)?

    init(_ job: @escaping @Sendable () -> any Sendable) { self.job = job }

    /// Runs the job unless another thread has taken it already; false if one had.
    @discardableResult
    func run() -> Bool {
        condition.lock()
        let job = self.job
        self.job = nil
        condition.unlock()
        guard let job else { return false }
        let value = job()
        condition.lock()
        result = value
        condition.broadcast()
        condition.unlock()
        return true
    }

    /// The result if the job is done.
    var done: (any Sendable)? {
        condition.lock()
        defer { condition.unlock() }
        return result
    }

    /// Waits for the thread that took the job to finish it.
    func wait() {
        condition.lock()
        while result == nil { condition.wait() }
        condition.unlock()
    }
}

/// Threads that run ``PendingWork`` in the order it was submitted. The simulator's own thread
/// runs a job itself when it needs the result before a worker took it, and while it waits for a
/// worker it runs the newest queued jobs (the ones needed last), so `threads` workers beside
/// it keep `threads + 1` cores busy.
final class WorkPool: @unchecked Sendable {
    // Guarded by `condition`.
    private let condition = NSCondition()
    /// Submitted work; a slot is emptied when its work is taken, so finished results are not
    /// kept alive by the queue.
    private var queue: [PendingWork?] = []
    private var head = 0
    private var stopping = false
    private var started = 0
    let threads: Int

    init(threads: Int) { self.threads = max(0, threads) }

    /// Queues `job`; without worker threads it runs when its result is asked for.
    func submit(_ job: @escaping @Sendable () -> any Sendable) -> PendingWork {
        let work = PendingWork(job)
        guard threads > 0 else { return work }
        condition.lock()
        queue.append(work)
        if started < threads {
            started += 1
            let thread = Thread { [self] in loop() }
            thread.name = "netsim-work"
            thread.start()
        }
        condition.signal()
        condition.unlock()
        return work
    }

    /// The result of `work`, computed here if no worker took it; while a worker runs it, this
    /// thread runs the newest queued jobs.
    func collect(_ work: PendingWork) -> any Sendable {
        work.run()
        while true {
            if let result = work.done { return result }
            if let newest = takeNewest() {
                newest.run()
            } else {
                // Only this thread submits work: nothing new can be queued meanwhile.
                work.wait()
            }
        }
    }

    /// The newest queued job that no worker took yet.
    private func takeNewest() -> PendingWork? {
        condition.lock()
        defer { condition.unlock() }
        while queue.count > head {
            if let work = queue.removeLast() { return work }
        }
        return nil
    }

    /// Stops the workers once the queue is empty (jobs nobody needs any more are dropped).
    func stop() {
        condition.lock()
        stopping = true
        queue = []
        head = 0
        condition.broadcast()
        condition.unlock()
    }

    private func loop() {
        while let work = next() { work.run() }
    }

    private func next() -> PendingWork? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if stopping { return nil }
            while head < queue.count, queue[head] == nil { head += 1 }
            if head < queue.count {
                let work = queue[head]
                queue[head] = nil
                head += 1
                if head > 1_024, head * 2 > queue.count {
                    queue.removeFirst(head)
                    head = 0
                }
                return work
            }
            condition.wait()
        }
    }
}
