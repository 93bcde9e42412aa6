import Foundation
import RLMStore
import RLMTrajectory
import Synchronization

/// Who is asking: an API key of `rlm serve`, or the local user of `rlm mcp` over stdio (no key, no limits: the user
/// runs the process and could run `rlm run` as well).
public struct Caller: Sendable, Hashable {
    /// The owner of contexts and sessions: a key's id, or `local` for the local user.
    public var owner: String
    /// The key, when the caller has one.
    public var key: APIKeyRecord?

    /// A caller with an API key.
    /// - Parameter key: the authenticated key.
    public init(key: APIKeyRecord) {
        self.owner = key.id
        self.key = key
    }

    private init(owner: String) {
        self.owner = owner
        self.key = nil
    }

    /// The user who started the process (MCP over stdio).
    public static let localUser = Caller(owner: "local")

    /// The audit log's principal.
    public var principal: AuditLog.Principal {
        if let key { return .apiKey(id: key.id) }
        return .currentUser()
    }

    /// The key's limits; none for the local user.
    public var limits: APIKeyLimits { key?.limits ?? APIKeyLimits() }
}

/// The in-memory half of the per-key limits: requests per minute (a sliding window over the last 60 s) and runs in
/// flight. Daily tokens and the cost budget live in the key store, since they outlast the process.
final class KeyLimiter: Sendable {
    private struct State {
        var requests = [String: [ContinuousClock.Instant]]()
        var running = [String: Int]()
    }
    private let state = Mutex(State())
    private let clock = ContinuousClock()

    /// Counts a request against the caller's requests per minute.
    /// - Throws: ``ServiceError`` 429 with the seconds until the oldest request in the window leaves it.
    func admitRequest(_ caller: Caller) throws {
        guard let limit = caller.limits.requestsPerMinute else { return }
        let now = clock.now
        let window = Duration.seconds(60)
        let retry: Int? = state.withLock { state in
            var times = state.requests[caller.owner, default: []]
            times.removeAll { now - $0 >= window }
            defer { state.requests[caller.owner] = times }
            if times.count >= limit {
                let wait = window - (now - times[0])
                return max(1, Int((wait / .seconds(1)).rounded(.up)))
            }
            times.append(now)
            return nil
        }
        if let retry {
            throw ServiceError.rateLimited(
                "rate_limit_exceeded",
                "this key's limit of \(limit) requests per minute is reached; retry in \(retry) s", retryAfter: retry)
        }
    }

    /// Takes one of the caller's concurrent-run slots.
    /// - Returns: the release, to call exactly once when the run ends.
    /// - Throws: ``ServiceError`` 429 when every slot is taken.
    func acquireRun(_ caller: Caller) throws -> RunSlot {
        let limit = caller.limits.maxConcurrentRuns
        let owner = caller.owner
        let taken = state.withLock { state -> Bool in
            let running = state.running[owner, default: 0]
            if let limit, running >= limit { return false }
            state.running[owner] = running + 1
            return true
        }
        guard taken else {
            throw ServiceError.rateLimited(
                "concurrency_limit_exceeded",
                "this key already has \(limit ?? 0) runs in flight, its limit; retry when one finishes", retryAfter: 1)
        }
        return RunSlot { [self] in
            self.state.withLock { state in
                let left = state.running[owner, default: 1] - 1
                state.running[owner] = left > 0 ? left : nil
            }
        }
    }

    /// Runs in flight of every caller.
    var runsInFlight: Int { state.withLock { $0.running.values.reduce(0, +) } }
}

/// One concurrent-run slot; released once (later calls do nothing).
final class RunSlot: Sendable {
    private let release: Mutex<(@Sendable () -> Void)?>

    init(_ release: @escaping @Sendable () -> Void) { self.release = Mutex(release) }

    func free() {
        let action = release.withLock { action in
            defer { action = nil }
            return action
        }
        action?()
    }

    deinit { free() }
}
