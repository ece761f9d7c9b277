import CLibUV

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

    public init() throws {
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

    deinit {
        // Let pending close callbacks run, then release the loop.
        uv_run(loop, UV_RUN_NOWAIT)
        uv_loop_close(loop)
        loop.deallocate()
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

/// An IPv4 or IPv6 socket address parsed by libuv.
struct SocketAddress {
    var storage = sockaddr_storage()

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
