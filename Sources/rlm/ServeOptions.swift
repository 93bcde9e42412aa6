import ArgumentParser
import Foundation
import Logging
import RLM
import RLMRuntime
import RLMService
import RLMStore

/// The options `rlm serve` and `rlm mcp` share: the models and budgets (as `rlm run`'s), where records go, which
/// directories path arguments may name, and the limits of contexts, sessions and runs.
struct ServeOptions: ParsableArguments {
    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Keys, contexts, audit log and trajectories live under this directory (default: the XDG ones).")
    var store: String?

    @Option(
        help: """
            A directory whose files path arguments (MCP's paths and load_context path) may name (repeatable). \
            Without one, no path is read. Paths never leave a root, through .. or a symbolic link.
            """)
    var root: [String] = []

    @Option(help: "Token budget (input + output) of each run; a key's daily allowance narrows it.")
    var maxTokens: Int?

    @Option(help: "Cost budget in USD of each run; a key's cost budget narrows it.")
    var maxCost: Double?

    @Option(help: "Wall-time budget in seconds of each run.")
    var timeout: Double?

    @Option(help: "Sub-call budget of each run.")
    var maxSubcalls: Int?

    @Option(help: "The largest context a client may upload or a run may load (e.g. 2G; default: a quarter of RAM).")
    var maxContext: String?

    @Option(help: "Memory of each sandbox (e.g. 4G; default: twice the context plus 512M, at least 1G).")
    var memory: String?

    @Option(help: "Seconds a session lives without a question.")
    var sessionTTL: Double = 900

    @Option(help: "Sessions one key may hold at once.")
    var maxSessions: Int = 4

    @Option(help: "Sessions all keys together may hold (each keeps an idle sandbox).")
    var maxSessionsTotal: Int = 64

    @Option(help: "Runs in flight across all keys; more wait their turn.")
    var maxRuns: Int = 8

    @Option(help: "Seconds running runs get to finish when the server is asked to stop, before they are cancelled.")
    var shutdownGrace: Double = 10

    func validate() throws {
        if let timeout { _ = try seconds(timeout, flag: "--timeout") }
        _ = try seconds(sessionTTL, flag: "--session-ttl")
        _ = try seconds(shutdownGrace, flag: "--shutdown-grace")
        guard maxSessions >= 1 else { throw ValidationError("--max-sessions must be at least 1") }
        guard maxSessionsTotal >= 1 else { throw ValidationError("--max-sessions-total must be at least 1") }
        guard maxRuns >= 1 else { throw ValidationError("--max-runs must be at least 1") }
        _ = try sizes()
        for directory in root {
            var isDirectory: ObjCBool = false
            guard directory.hasPrefix("/") || !directory.isEmpty,
                FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
            else { throw ValidationError("--root \(directory) is not a directory") }
        }
    }

    private func sizes() throws -> (maxContext: Int?, memory: Int?) {
        func size(_ text: String?, flag: String) throws -> Int? {
            guard let text else { return nil }
            guard let bytes = ByteSize.parse(text) else {
                throw ValidationError("\(flag) \(text) is not a size: write e.g. 512M, 2G (a plain number is MiB)")
            }
            return bytes
        }
        return (try size(maxContext, flag: "--max-context"), try size(memory, flag: "--memory"))
    }

    /// The serving core's configuration.
    func serviceConfiguration(environment: [String: String]) throws -> ServiceConfiguration {
        let (maxContext, memory) = try sizes()
        let roots = try root.map { directory -> String in
            // Canonical once, at start: the root itself may be reached through a link the user chose.
            guard let resolved = realpath(directory, nil) else {
                throw ValidationError("--root \(directory) cannot be resolved")
            }
            defer { free(resolved) }
            return String(cString: resolved)
        }
        let limits = ContextLimits(memoryBytes: memory, workDirBytes: nil, maxContextBytes: maxContext)
        return ServiceConfiguration(
            runtime: try modelOptions.runtimeOptions(
                maxTokens: maxTokens, maxCost: maxCost, timeout: timeout, maxSubcalls: maxSubcalls),
            environment: environment, storeDirectory: store.map { ($0 as NSString).standardizingPath }, roots: roots,
            maxContextBytes: limits.maxContext, contextLimits: limits,
            sessionTTL: Duration(userSeconds: sessionTTL) ?? .seconds(900), maxSessionsPerCaller: maxSessions,
            maxSessionsTotal: maxSessionsTotal,
            maxConcurrentRuns: maxRuns, shutdownGrace: Duration(userSeconds: shutdownGrace) ?? .seconds(10))
    }

    /// What `rlm serve` and `rlm mcp` start from: the configuration, the key store (repairs said on stderr) and the
    /// service, its runtime options checked. Any failure is said on stderr and exits 2.
    func openService(logger: Logger) async throws -> (RLMService, SQLiteKeyStore) {
        let configuration = try serviceConfiguration(environment: ProcessInfo.processInfo.environment)
        let store: SQLiteKeyStore
        do {
            store = try await SQLiteKeyStore.open(path: configuration.storeLocation.keysDatabase)
        } catch {
            printError("rlm: \(error)")
            throw ExitCode(2)
        }
        for repair in store.repairs { printError("rlm: \(repair)") }
        let service = RLMService(configuration: configuration, store: store, logger: logger)
        do {
            try service.validate()
        } catch {
            printError("rlm: \(RunFailure.classify(error).message)")
            await store.close()
            throw ExitCode(2)
        }
        return (service, store)
    }
}
