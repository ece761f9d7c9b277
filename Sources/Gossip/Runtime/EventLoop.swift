import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// An error reported by libuv, with its name and message.
public struct UVError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public let operation: String

    public init(_ code: Int32, _ operation: String) {
        self.code = code
        self.operation = operation
    }

    public var description: String { "\(operation): \(String(cString: uv_strerror(code))) (\(String(cString: uv_err_name(code))))" }
}

/// One libuv event loop. Everything attached to it runs on the thread that calls ``run()``;
/// the types of this runtime are therefore not `Sendable`.
public final class EventLoop {
    let loop: UnsafeMutablePointer<uv_loop_t>

    /// Also sets SIGPIPE to be ignored for the process: libuv writes with plain `write(2)`, so
    /// without this a peer that closes while data is queued would kill the node; the write
    /// then fails with EPIPE and only that connection ends.
    public init() throws {
        signal(SIGPIPE, SIG_IGN)
        loop = .allocate(capacity: 1)
        let rc = uv_loop_init(loop)
        guard rc == 0 else {
            loop.deallocate()
            throw UVError(rc, "uv_loop_init")
        }
    }

    /// Runs until no handle or request is active.
    public func run() {
        uv_run(loop, UV_RUN_DEFAULT)
    }

    /// The loop's monotonic clock in milliseconds (cached per iteration).
    public var nowMilliseconds: UInt64 { uv_now(loop) }

    /// Jobs handed to the thread pool whose completion has not yet run.
    private var outstandingWork = 0

    deinit {
        // Jobs on the thread pool hold the loop: wait for them, then let pending close
        // callbacks run, then release the loop.
        while outstandingWork > 0 { uv_run(loop, UV_RUN_ONCE) }
        uv_run(loop, UV_RUN_NOWAIT)
        uv_loop_close(loop)
        loop.deallocate()
    }

    /// Runs `body` on libuv's thread pool and then `completion` with its result on the loop's
    /// thread, so costly work (signing or checking a large delta) never stalls the loop.
    /// Completions run in the order the jobs finish, not the order they were queued.
    public func work<Result: Sendable>(_ body: @escaping @Sendable () -> Result, then completion: @escaping (Result) -> Void) throws {
        let request = UnsafeMutablePointer<uv_work_t>.allocate(capacity: 1)
        let job = WorkBox(body: body, completion: completion)
        job.loop = self
        let retained = Unmanaged.passRetained(job as AnyWork)
        request.pointee.data = retained.toOpaque()
        let rc = uv_queue_work(loop, request, { r in
            guard let r, let data = r.pointee.data else { return }
            Unmanaged<AnyWork>.fromOpaque(data).takeUnretainedValue().runOnPool()
        }, { r, _ in
            guard let r, let data = r.pointee.data else { return }
            let job = Unmanaged<AnyWork>.fromOpaque(data).takeRetainedValue()
            r.deallocate()
            job.loop?.outstandingWork -= 1
            job.complete()
        })
        guard rc == 0 else {
            retained.release()
            request.deallocate()
            throw UVError(rc, "uv_queue_work")
        }
        outstandingWork += 1
    }

    /// A job on the thread pool. libuv runs `runOnPool` on a pool thread, then (after it
    /// returned, ordered by libuv's own locking) `complete` on the loop's thread; the result
    /// is written once before it is read once, so the box may cross threads.
    private class AnyWork: @unchecked Sendable {
        unowned(unsafe) var loop: EventLoop?
        func runOnPool() {}
        func complete() {}
    }

    private final class WorkBox<Result: Sendable>: AnyWork, @unchecked Sendable {
        let body: @Sendable () -> Result
        let completion: (Result) -> Void
        var result: Result?

        init(body: @escaping @Sendable () -> Result, completion: @escaping (Result) -> Void) {
            self.body = body
            self.completion = completion
        }

        override func runOnPool() { result = body() }

        override func complete() {
            guard let result else { return }
            completion(result)
        }
    }

    /// Calls `body` once after `milliseconds`. A timer that does not keep the loop alive
    /// (for example a deadline) fires only if other work is still pending by then.
    public func after(milliseconds: UInt64, keepsLoopAlive: Bool = true, _ body: @escaping () -> Void) throws {
        let timer = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop, timer)
        if !keepsLoopAlive { uv_unref(UnsafeMutableRawPointer(timer).assumingMemoryBound(to: uv_handle_t.self)) }
        timer.pointee.data = Unmanaged.passRetained(TimerBox(body)).toOpaque()
        let rc = uv_timer_start(timer, { t in
            guard let t, let data = t.pointee.data else { return }
            let box = Unmanaged<TimerBox>.fromOpaque(data).takeRetainedValue()
            t.pointee.data = nil
            uv_close(UnsafeMutableRawPointer(t).assumingMemoryBound(to: uv_handle_t.self)) { h in
                h?.deinitialize(count: 1)
                UnsafeMutableRawPointer(h)?.deallocate()
            }
            box.body()
        }, milliseconds, 0)
        guard rc == 0 else { throw UVError(rc, "uv_timer_start") }
    }

    private final class TimerBox {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }
}

/// A restartable one-shot timer on an ``EventLoop``: starting it again replaces the pending
/// wake-up, stopping it cancels it. Close it when done.
public final class LoopTimer {
    private let handle: UnsafeMutablePointer<uv_timer_t>
    private var body: (() -> Void)?

    public init(loop: EventLoop) {
        handle = .allocate(capacity: 1)
        uv_timer_init(loop.loop, handle)
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    /// Calls `body` once after `milliseconds`, replacing any pending call.
    public func start(after milliseconds: UInt64, _ body: @escaping () -> Void) {
        self.body = body
        uv_timer_start(handle, { t in
            guard let t, let data = t.pointee.data else { return }
            let timer = Unmanaged<LoopTimer>.fromOpaque(data).takeUnretainedValue()
            let body = timer.body
            timer.body = nil
            body?()
        }, milliseconds, 0)
    }

    /// Cancels the pending call, if any.
    public func stop() {
        body = nil
        uv_timer_stop(handle)
    }

    /// Stops the timer and releases its handle.
    public func close() {
        stop()
        handle.pointee.data = nil
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { h in
            UnsafeMutableRawPointer(h)?.deallocate()
        }
    }
}

/// Stops the loop from another handle's callback: ``EventLoop/run()`` returns once the
/// current iteration ends.
extension EventLoop {
    public func stop() { uv_stop(loop) }

}

/// Calls a closure on the loop's thread each time the process receives a signal. Does not by
/// itself keep the loop running. It keeps itself alive until ``close()``.
public final class SignalWatcher {
    private let handle: UnsafeMutablePointer<uv_signal_t>
    private let body: (Int32) -> Void

    public init(loop: EventLoop, signal number: Int32, _ body: @escaping (Int32) -> Void) throws {
        self.body = body
        // A process started by a parent that blocks the signal (a thread pool, a test runner)
        // inherits the block: the handler would never run.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, number)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        handle = .allocate(capacity: 1)
        uv_signal_init(loop.loop, handle)
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        uv_unref(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self))
        let rc = uv_signal_start(handle, { h, signum in
            guard let h, let data = h.pointee.data else { return }
            Unmanaged<SignalWatcher>.fromOpaque(data).takeUnretainedValue().body(signum)
        }, number)
        guard rc == 0 else {
            close()
            throw UVError(rc, "uv_signal_start")
        }
    }

    /// Stops watching and releases the watcher.
    public func close() {
        guard let data = handle.pointee.data else { return }
        handle.pointee.data = nil
        uv_signal_stop(handle)
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { h in
            UnsafeMutableRawPointer(h)?.deallocate()
        }
        Unmanaged<SignalWatcher>.fromOpaque(data).release()
    }
}

/// An IPv4 or IPv6 socket address parsed by libuv.
struct SocketAddress {
    var storage = sockaddr_storage()

    init(storage: sockaddr_storage) { self.storage = storage }

    /// The address a socket is bound to, read by `getsockname` (one of libuv's
    /// `uv_*_getsockname` calls); nil if the call fails.
    static func bound(_ getsockname: (UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<Int32>) -> Int32) -> Endpoint? {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &storage) { raw in getsockname(raw.baseAddress?.assumingMemoryBound(to: sockaddr.self), &length) }
        guard rc == 0 else { return nil }
        return SocketAddress(storage: storage).endpoint
    }

    /// The text of a NUL-terminated C buffer.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The numeric host and port, nil for a family other than IPv4 and IPv6.
    var endpoint: Endpoint? {
        var name = [CChar](repeating: 0, count: 64)
        let family = Int32(storage.ss_family)
        return withUnsafeBytes(of: storage) { raw -> Endpoint? in
            switch family {
            case AF_INET:
                var sin = raw.load(as: sockaddr_in.self)
                guard uv_ip4_name(&sin, &name, name.count) == 0 else { return nil }
                return Endpoint(host: Self.text(name), port: UInt16(bigEndian: sin.sin_port))
            case AF_INET6:
                var sin6 = raw.load(as: sockaddr_in6.self)
                guard uv_ip6_name(&sin6, &name, name.count) == 0 else { return nil }
                return Endpoint(host: Self.text(name), port: UInt16(bigEndian: sin6.sin6_port))
            default:
                return nil
            }
        }
    }

    init(host: String, port: UInt16) throws {
        var rc = withUnsafeMutableBytes(of: &storage) { raw in
            uv_ip4_addr(host, Int32(port), raw.baseAddress?.assumingMemoryBound(to: sockaddr_in.self))
        }
        if rc != 0 {
            rc = withUnsafeMutableBytes(of: &storage) { raw in
                uv_ip6_addr(host, Int32(port), raw.baseAddress?.assumingMemoryBound(to: sockaddr_in6.self))
            }
        }
        guard rc == 0 else { throw UVError(rc, "parse address \(host)") }
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>) -> R) -> R {
        withUnsafePointer(to: storage) { p in
            UnsafeRawPointer(p).withMemoryRebound(to: sockaddr.self, capacity: 1, body)
        }
    }
}
