import Foundation
import RLM
import RLMRuntime
import RLMStore
import RLMTrajectory

/// What the serving core is started with: the runtime's options (models, budgets: the same as `rlm run`), where
/// records go, which directories path arguments may name, and the limits of contexts and sessions.
public struct ServiceConfiguration: Sendable {
    /// Models, budgets, the interpreter: as `rlm run`'s flags.
    public var runtime: RuntimeOptions
    /// The process environment (keys for the providers are read from it, never given to a sandbox).
    public var environment: [String: String]
    /// `--store PATH`: keys, contexts, audit and trajectories all under it; `nil` for the XDG directories.
    public var storeDirectory: String?
    /// `--root DIR`: the only directories a path argument (MCP's `paths`, `load_context path`) may name.
    public var roots: [String]
    /// The largest uploaded context, and the largest context a run may load (`--max-context`).
    public var maxContextBytes: Int
    /// Sandbox memory and work-dir sizes (`--memory`, `--workdir-size`); `nil` sizes them from the context.
    public var contextLimits: ContextLimits
    /// How long a session lives without a question.
    public var sessionTTL: Duration
    /// Sessions a caller may hold at once.
    public var maxSessionsPerCaller: Int
    /// Sessions all callers together may hold at once (each keeps a sandbox alive while idle).
    public var maxSessionsTotal: Int
    /// Events a session keeps (the latest ones).
    public var maxEventsPerSession: Int
    /// Runs in flight across all callers; more wait their turn (not refused), up to ``maxQueuedRuns``.
    public var maxConcurrentRuns: Int
    /// Runs waiting for a turn before new ones are refused with 503.
    public var maxQueuedRuns: Int
    /// After a stop is asked for, how long running runs may take to finish before they are cancelled.
    public var shutdownGrace: Duration

    /// - Parameters: as the properties.
    public init(
        runtime: RuntimeOptions, environment: [String: String], storeDirectory: String? = nil, roots: [String] = [],
        maxContextBytes: Int = ContextLimits.defaultMaxContextBytes, contextLimits: ContextLimits = ContextLimits(),
        sessionTTL: Duration = .seconds(900), maxSessionsPerCaller: Int = 4, maxSessionsTotal: Int = 64,
        maxEventsPerSession: Int = 200,
        maxConcurrentRuns: Int = 16, maxQueuedRuns: Int = 256, shutdownGrace: Duration = .seconds(10)
    ) {
        self.runtime = runtime
        self.environment = environment
        self.storeDirectory = storeDirectory
        self.roots = roots
        self.maxContextBytes = maxContextBytes
        self.contextLimits = contextLimits
        self.sessionTTL = sessionTTL
        self.maxSessionsPerCaller = maxSessionsPerCaller
        self.maxSessionsTotal = maxSessionsTotal
        self.maxEventsPerSession = maxEventsPerSession
        self.maxConcurrentRuns = maxConcurrentRuns
        self.maxQueuedRuns = maxQueuedRuns
        self.shutdownGrace = shutdownGrace
    }

    /// Sandboxes the server may keep alive at once: every run in flight with its `rlm_query` children, plus every
    /// session's (an idle session holds its sandbox). Past it a new sandbox would wait for a slot.
    public var maxLiveSandboxes: Int {
        maxConcurrentRuns * max(1, runtime.maxLiveSandboxes) + maxSessionsTotal
    }

    /// Where keys and contexts are kept.
    public var storeLocation: StoreLocation {
        StoreLocation(store: storeDirectory, environment: environment)
    }

    /// The audit log: `PATH/audit.jsonl` under `--store`, else `$XDG_STATE_HOME/swiftrlm/audit.jsonl`.
    public var auditLogPath: String {
        guard let storeDirectory else { return AuditLog.defaultPath(environment: environment) }
        return (storeDirectory as NSString).appendingPathComponent("audit.jsonl")
    }

    /// A new trajectory path: under `PATH/trajectories` with `--store`, else the default directory.
    public func newTrajectoryPath() -> String {
        let path = TrajectoryWriter.defaultPath(environment: environment)
        guard let storeDirectory else { return path }
        return ((storeDirectory as NSString).appendingPathComponent("trajectories") as NSString)
            .appendingPathComponent((path as NSString).lastPathComponent)
    }
}
