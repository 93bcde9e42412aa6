import ArgumentParser
import AsyncHTTPClient
import Foundation
import Glibc
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import Prometheus
import RLM
import RLMRuntime
import RLMSandbox
import RLMServer
import RLMService
import RLMStore
import RLMTesting
import ServiceLifecycle
import Synchronization

/// Issue 11's serving figures (`rlm-bench serve`): what the HTTP server adds to a run, the request rate at which
/// p99 stays under 100 ms, and the memory an idle session holds.
///
/// Everything runs in this process, as `rlm serve` assembles it: an ``RLMService`` over a real ``SQLiteKeyStore`` in a
/// scratch directory, an ``RLMHTTPServer`` on loopback (with the Prometheus metrics `rlm serve` bootstraps), and a
/// zero-latency ``FakeLLMServer`` (TCP_NODELAY) as the provider. Every run is realistic: the fake model answers the
/// first request of a run with one `repl` cell (so a sandbox starts and runs code) and the second with `FINAL(45)`.
/// The client is AsyncHTTPClient with keep-alive.
struct ServeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serving figures: HTTP overhead per run, the rate p99 < 100 ms holds at, memory per idle session.",
        discussion: """
            Runs RLMService and RLMHTTPServer in this process against a zero-latency fake model that answers every \
            run with one repl cell, then FINAL. (1) Times the same question sequentially through HTTP, through \
            RLMService.run and through RLMEngine directly, interleaved. (2) Offers open-loop load at increasing \
            rates to POST /v1/chat/completions and, as its floor, to RLMEngine.run in process; then to \
            GET /v1/models and, as its floor, GET /healthz; latency counts from each request's scheduled time. \
            (3) Opens idle sessions that each answered one question over a small uploaded context and reads the \
            memory of this process and of the sandboxes. Prints Markdown (figures for docs/BENCHMARKS.md), or \
            JSON with --json.
            """
    )

    @Option(help: "Sequential requests timed per path.")
    var requests = 200

    @Option(help: "Untimed requests per path before the timed ones.")
    var warmup = 20

    @Option(
        help: "Open-loop rates for POST /v1/chat/completions (and RLMEngine.run), requests per second, comma-separated."
    )
    var chatRates = "10,20,30,40,50,60,80"

    @Option(help: "Seconds at each chat rate.")
    var chatSeconds = 6.0

    @Option(help: "Open-loop rates for GET /v1/models (and /healthz), requests per second, comma-separated.")
    var modelsRates = "100,200,400,800,1600,3200"

    @Option(help: "Seconds at each models rate.")
    var modelsSeconds = 3.0

    @Option(name: .customLong("p99-target-ms"), help: "The p99 a rate must stay under, in milliseconds.")
    var p99Target = 100.0

    @Flag(help: "Go on to higher rates after one misses the target (by default the sweep stops there).")
    var fullSweep = false

    @Option(help: "Idle sessions to open (the process holds at most 16 live sandboxes).")
    var sessions = 12

    @Option(name: .customLong("session-context-kib"), help: "KiB of the context every session loads.")
    var sessionContextKiB = 16

    @Option(help: "The interpreter inside the sandbox.")
    var python = "/usr/bin/python3"

    @Option(help: "Runs in flight across all keys, as `rlm serve --max-runs` (more wait their turn).")
    var maxRuns = 8

    @Option(help: "The key's requests-per-minute limit (0: none). High by default, so that every check still runs.")
    var keyRPM = 1_000_000

    @Flag(help: "Print one JSON object instead of Markdown.")
    var json = false

    func validate() throws {
        guard requests >= 1, warmup >= 0 else { throw ValidationError("--requests ≥ 1 and --warmup ≥ 0") }
        _ = try Self.rates(chatRates, "--chat-rates")
        _ = try Self.rates(modelsRates, "--models-rates")
        guard chatSeconds > 0, modelsSeconds > 0 else { throw ValidationError("seconds per rate must be positive") }
        guard maxRuns >= 1 else { throw ValidationError("--max-runs must be at least 1") }
        guard keyRPM >= 0 else { throw ValidationError("--key-rpm must be 0 (none) or more") }
        guard sessions >= 0, sessionContextKiB >= 1 else {
            throw ValidationError("--sessions ≥ 0 and --session-context-kib ≥ 1")
        }
    }

    func run() async throws {
        let settings = ServeSettings(
            requests: requests, warmup: warmup, chatRates: try Self.rates(chatRates, "--chat-rates"),
            chatSeconds: chatSeconds, modelsRates: try Self.rates(modelsRates, "--models-rates"),
            modelsSeconds: modelsSeconds, p99Target: p99Target, fullSweep: fullSweep, sessions: sessions,
            sessionContextBytes: sessionContextKiB << 10, python: python, keyRPM: keyRPM > 0 ? keyRPM : nil,
            maxRuns: maxRuns)
        let scratch = try ServeScratch()
        defer { scratch.remove() }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "rlm-bench.serve") { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .warning
            return handler
        }
        let store = try await SQLiteKeyStore.open(path: StoreLocation(directory: scratch.path).keysDatabase)
        let report = ReportBox(
            ServeReport(
                command: CommandLine.arguments, requests: requests, warmup: warmup, p99Target: p99Target,
                maxRuns: maxRuns, keyRPM: keyRPM > 0 ? keyRPM : nil))
        do {
            try await settings.measure(
                store: store, registry: registry, logger: logger, scratch: scratch, report: report)
        } catch {
            await store.close()
            throw error
        }
        await store.close()
        let finished = report.value
        writeOut(json ? finished.json() : finished.markdown())
    }

    static func rates(_ text: String, _ flag: String) throws -> [Double] {
        try text.split(separator: ",").map { part in
            guard let rate = Double(part.trimmingCharacters(in: .whitespaces)), rate > 0, rate <= 100_000 else {
                throw ValidationError("\(flag): \(part) is not a rate in requests per second")
            }
            return rate
        }
    }

    static func shown(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }
}

/// The report, filled phase by phase.
final class ReportBox: Sendable {
    private let state: Mutex<ServeReport>

    init(_ report: ServeReport) { state = Mutex(report) }

    var value: ServeReport { state.withLock { $0 } }

    func update(_ body: (inout ServeReport) -> Void) { state.withLock { body(&$0) } }
}

/// The options of a `rlm-bench serve` run, and its phases.
struct ServeSettings: Sendable {
    var requests: Int
    var warmup: Int
    var chatRates: [Double]
    var chatSeconds: Double
    var modelsRates: [Double]
    var modelsSeconds: Double
    var p99Target: Double
    var fullSweep: Bool
    var sessions: Int
    var sessionContextBytes: Int
    var python: String
    var keyRPM: Int?
    var maxRuns: Int

    /// Starts the fake model, the service and the HTTP server, and runs the three phases; each phase's figures go to
    /// `report` as soon as they are known.
    func measure(
        store: SQLiteKeyStore, registry: PrometheusCollectorRegistry, logger: Logger, scratch: ServeScratch,
        report: ReportBox
    ) async throws {
        let progress = ServeProgress()
        // High limits, but real ones: every check runs (requests per minute, tokens per day, concurrent runs).
        let key = try await store.createKey(
            name: "bench",
            limits: APIKeyLimits(
                requestsPerMinute: keyRPM, tokensPerDay: 1_000_000_000_000, maxConcurrentRuns: 10_000))
        try await FakeLLMServer.withServer(ServeScript.handler) { fake in
            let runtime = RuntimeOptions(
                provider: .openai, baseURL: fake.openAIBaseURL, model: ServeScript.model,
                apiKeyVariable: "RLM_BENCH_PROVIDER_KEY", python: python, maxIterations: 6,
                cellTimeout: .seconds(30))
            let environment = ["RLM_BENCH_PROVIDER_KEY": "sk-bench-not-a-real-key"]
            let configuration = ServiceConfiguration(
                runtime: runtime, environment: environment, storeDirectory: scratch.path,
                maxSessionsPerCaller: max(sessions, 1), maxConcurrentRuns: maxRuns,
                shutdownGrace: .seconds(5))
            let service = RLMService(configuration: configuration, store: store, logger: logger)
            let http = RLMHTTPServer(
                service: service, settings: HTTPServerSettings(),
                listen: RLMHTTPServer.Listen(host: "127.0.0.1", port: 0), metrics: registry, logger: logger)
            // The floor: the engine with the configuration the same runtime options build, without the service.
            let engine = RLMRuntime(options: runtime, environment: environment, logger: logger)
            let plan = try engine.prepare()
            try await engine.withConfiguration(
                plan, sandbox: ProcessSandbox(configuration: RLMRuntime.sandboxLimits(python: python))
            ) {
                engineConfiguration in
                try await Self.serving(service: service, http: http, logger: logger) { address in
                    try await Self.withClient { client in
                        let bench = ServeClient(client: client, base: address, secret: key.secret)
                        progress.say("sequential: \(warmup) warm-up and \(requests) timed requests per path")
                        let sequential = try await sequential(
                            bench: bench, service: service, caller: Caller(key: key.record),
                            engine: engineConfiguration, store: store, key: key,
                            trajectories: Trajectories(runtime: engine, plan: plan, directory: scratch.path))
                        let sockets = NoDelayCheck.sockets(serverPort: Self.port(of: address), fakePort: fake.port)
                        report.update {
                            $0.sequential = sequential
                            $0.noDelay = sockets
                        }
                        progress.say("idle sessions: \(sessions)")
                        let memory = try await idleSessions(bench: bench, fake: fake, progress: progress)
                        report.update { $0.memory = memory }
                        let sweeps: [(String, [Double], Double, @Sendable () async throws -> Void)] = [
                            ("POST /v1/chat/completions", chatRates, chatSeconds, { try await bench.chat() }),
                            (
                                "RLMEngine.run in process (floor)", chatRates, chatSeconds,
                                {
                                    let result = try await RLMEngine(configuration: engineConfiguration).run(
                                        query: ServeScript.question, context: nil)
                                    try ServeScript.check(result.answer)
                                }
                            ),
                            ("GET /v1/models", modelsRates, modelsSeconds, { try await bench.get("/v1/models") }),
                            ("GET /healthz (floor)", modelsRates, modelsSeconds, { try await bench.get("/healthz") }),
                        ]
                        for (endpoint, rates, seconds, send) in sweeps {
                            let rows = try await sweep(
                                endpoint, rates: rates, seconds: seconds, progress: progress, send)
                            report.update { $0.load.append(LoadSweep(endpoint: endpoint, rows: rows)) }
                        }
                    }
                }
            }
        }
    }

    // MARK: - Phases

    /// The same question through the four paths, interleaved (in a new random order every round) so that a drifting
    /// machine favours none; then the two cheap endpoints, as floors of the HTTP layer itself; then the two key
    /// store calls on those paths, alone (a key check per authenticated request, a usage write per run).
    private func sequential(
        bench: ServeClient, service: RLMService, caller: Caller, engine: RLMConfiguration, store: SQLiteKeyStore,
        key: CreatedKey, trajectories: Trajectories
    ) async throws -> SequentialFigures {
        let request = RunRequest(query: ServeScript.question, model: ServeScript.model)
        let paths: [@Sendable (Timeline) async throws -> Void] = [
            { timeline in
                var configuration = engine
                configuration.onEvent = { event in timeline.mark(event) }
                let result = try await RLMEngine(configuration: configuration).run(
                    query: ServeScript.question, context: nil)
                try ServeScript.check(result.answer)
            },
            { _ in
                // What `rlm run` adds to the engine: the runtime's trajectory writer (every event redacted, one line).
                let writer = try trajectories.open()
                var configuration = engine
                configuration.onEvent = { event in writer.write(event) }
                let result = try await RLMEngine(configuration: configuration).run(
                    query: ServeScript.question, context: nil)
                writer.close()
                trajectories.finished(writer)
                try ServeScript.check(result.answer)
            },
            { timeline in
                let outcome = try await service.run(request, caller: caller) { event in timeline.mark(event) }
                try ServeScript.check(outcome.result.answer)
            },
            { _ in try await bench.chat() },
        ]
        var samples = [[Double]](repeating: [], count: paths.count)
        var spans = [[[Double]]](repeating: [], count: paths.count)
        var cpuTotals = [Double](repeating: 0, count: paths.count + 2)
        var ownTotals = cpuTotals
        for round in 0..<(warmup + requests) {
            // A fresh order every round: no path always follows the same other one (a sandbox still being torn down,
            // a warm cache) or always comes first.
            for index in paths.indices.shuffled() {
                let cpu = MachineCPU.busyMilliseconds()
                let own = MachineCPU.processMilliseconds()
                let timeline = Timeline()
                try await paths[index](timeline)
                let end = ContinuousClock.now
                if round >= warmup {
                    cpuTotals[index] += MachineCPU.busyMilliseconds() - cpu
                    ownTotals[index] += MachineCPU.processMilliseconds() - own
                    samples[index].append((end - timeline.start).fractionalMilliseconds)
                    if let split = timeline.spans(end: end) { spans[index].append(split) }
                }
            }
        }
        let breakdown = Timeline.names.indices.map { span in
            SpanFigures(
                span: Timeline.names[span], engine: Summary(spans[0].map { $0[span] }).median,
                service: Summary(spans[2].map { $0[span] }).median)
        }
        var health = [Double]()
        var models = [Double]()
        for round in 0..<(warmup + requests) {
            for path in ["/healthz", "/v1/models"] {
                let cpu = MachineCPU.busyMilliseconds()
                let own = MachineCPU.processMilliseconds()
                let start = ContinuousClock.now
                try await bench.get(path)
                let elapsed = (ContinuousClock.now - start).fractionalMilliseconds
                if round >= warmup {
                    cpuTotals[path == "/healthz" ? 4 : 5] += MachineCPU.busyMilliseconds() - cpu
                    ownTotals[path == "/healthz" ? 4 : 5] += MachineCPU.processMilliseconds() - own
                    if path == "/healthz" { health.append(elapsed) } else { models.append(elapsed) }
                }
            }
        }
        var authenticate = [Double]()
        var usage = [Double]()
        for round in 0..<(warmup + requests) {
            let start = ContinuousClock.now
            guard try await store.authenticate(secret: key.secret) != nil else {
                throw ServeBenchError("the key store does not know the benchmark's key")
            }
            let between = ContinuousClock.now
            try await store.addUsage(keyID: key.record.id, day: "2000-01-01", tokens: 1, costUSD: 0)
            if round >= warmup {
                authenticate.append((between - start).fractionalMilliseconds)
                usage.append((ContinuousClock.now - between).fractionalMilliseconds)
            }
        }
        // Same round, so the same state of the machine: the paired differences are steadier than differences of
        // medians when the runs' times are spread.
        func paired(_ name: String, _ later: Int, _ earlier: Int) -> PairedDifference {
            PairedDifference(
                name: name, difference: Summary(zip(samples[later], samples[earlier]).map { $0 - $1 }))
        }
        let differences = [
            paired("trajectory writer − engine", 1, 0), paired("service − engine", 2, 0),
            paired("HTTP − service", 3, 2), paired("HTTP − engine", 3, 0),
        ]
        return SequentialFigures(
            differences: differences, engine: Summary(samples[0]), trajectory: Summary(samples[1]),
            service: Summary(samples[2]),
            http: Summary(samples[3]), trajectoryBytes: trajectories.meanBytes, breakdown: breakdown,
            cpuPerCallMS: cpuTotals.map { $0 / Double(requests) },
            processCPUPerCallMS: ownTotals.map { $0 / Double(requests) },
            health: Summary(health), models: Summary(models), authenticate: Summary(authenticate),
            addUsage: Summary(usage))
    }

    /// Opens `sessions` sessions over one uploaded context, asks one question in each (the REPL starts and loads
    /// the context), and reads memory before, with them idle, and after closing them.
    private func idleSessions(bench: ServeClient, fake: FakeLLMServer, progress: ServeProgress) async throws
        -> MemoryFigures
    {
        try? await Task.sleep(for: .milliseconds(300))
        let before = MemorySnapshot.now()
        let recordedBefore = await fake.requests.reduce(0) { $0 + $1.body.count }
        let context = try await bench.uploadContext(bytes: sessionContextBytes)
        var opened = [String]()
        var failure: String?
        var answered = 0
        for index in 0..<sessions {
            do {
                let id = try await bench.openSession(context: context)
                opened.append(id)
                try await bench.chat(session: id)
                answered += 1
            } catch {
                failure = "session \(index + 1): \(error)"
                progress.say("idle sessions: \(failure ?? "")")
                break
            }
        }
        try? await Task.sleep(for: .milliseconds(500))
        let idle = MemorySnapshot.now()
        let recordedAfter = await fake.requests.reduce(0) { $0 + $1.body.count }
        for id in opened { try? await bench.closeSession(id) }
        var closed = MemorySnapshot.now()
        let deadline = ContinuousClock.now + .seconds(5)
        while closed.sandboxProcesses > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(100))
            closed = MemorySnapshot.now()
        }
        return MemoryFigures(
            sessions: answered, asked: sessions, contextBytes: sessionContextBytes, failure: failure,
            before: before, idle: idle, closed: closed,
            fakeRecordedKiB: (recordedAfter - recordedBefore) >> 10)
    }

    /// Open-loop load at each rate in turn: requests are sent on a fixed schedule whatever the replies do, and each
    /// latency counts from the request's scheduled time (so a slow reply cannot hide the queue behind it).
    private func sweep(
        _ endpoint: String, rates: [Double], seconds: Double, progress: ServeProgress,
        _ send: @escaping @Sendable () async throws -> Void
    ) async throws -> [LoadRow] {
        var rows = [LoadRow]()
        for rate in rates {
            progress.say("open loop: \(endpoint) at \(ServeBench.shown(rate)) req/s for \(ServeBench.shown(seconds)) s")
            let row = await ServeSettings.openLoop(rate: rate, seconds: seconds, target: p99Target, send)
            rows.append(row)
            progress.say(
                String(
                    format: "  p50 %.1f ms, p99 %.1f ms, %d failed of %d", row.latency.median, row.latency.p99,
                    row.failed, row.sent))
            if !row.met && !fullSweep { break }
            try? await Task.sleep(for: .milliseconds(500))
        }
        return rows
    }

    static func openLoop(
        rate: Double, seconds: Double, target: Double, _ send: @escaping @Sendable () async throws -> Void
    ) async -> LoadRow {
        let count = max(1, Int((rate * seconds).rounded()))
        let interval = Duration.seconds(1 / rate)
        let clock = ContinuousClock()
        let cpuBefore = MachineCPU.busyMilliseconds()
        let ownBefore = MachineCPU.processMilliseconds()
        let start = clock.now + .milliseconds(10)
        let results = await withTaskGroup(of: (latency: Double, lag: Double, error: String?).self) { group in
            for index in 0..<count {
                let due = start + interval * index
                try? await clock.sleep(until: due, tolerance: nil)
                group.addTask {
                    let lag = (clock.now - due).fractionalMilliseconds
                    var failure: String?
                    do {
                        try await send()
                    } catch {
                        failure = "\(error)"
                    }
                    return ((clock.now - due).fractionalMilliseconds, lag, failure)
                }
            }
            var results = [(latency: Double, lag: Double, error: String?)]()
            for await result in group { results.append(result) }
            return results
        }
        let elapsed = (clock.now - start).fractionalMilliseconds / 1000
        let cpu = (MachineCPU.busyMilliseconds() - cpuBefore) / Double(count)
        let own = (MachineCPU.processMilliseconds() - ownBefore) / Double(count)
        let errors = results.compactMap(\.error)
        let latency = Summary(results.map(\.latency))
        return LoadRow(
            rate: rate, seconds: seconds, sent: count, failed: errors.count, firstError: errors.first,
            latency: latency, sendLagP99: Summary(results.map(\.lag)).p99,
            completedPerSecond: Double(count) / elapsed, cpuPerRequestMS: cpu,
            processCPUPerRequestMS: own, met: errors.isEmpty && latency.p99 < target)
    }

    // MARK: - Setup

    /// Runs the service and the HTTP application (in a ServiceGroup, as `rlm serve` does) while `body` runs, then
    /// shuts both down.
    static func serving(
        service: RLMService, http: RLMHTTPServer, logger: Logger,
        _ body: @Sendable (String) async throws -> Void
    ) async throws {
        let (listening, announce) = AsyncStream<String>.makeStream()
        let application = try http.application { address in
            announce.yield(address)
            announce.finish()
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: application)], gracefulShutdownSignals: [], cancellationSignals: [],
                logger: logger))
        try await service.run {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                var address: String?
                for await announced in listening {
                    address = announced
                    break
                }
                do {
                    guard let address else { throw ValidationError("the HTTP server never listened") }
                    try await body(address)
                } catch {
                    await group.triggerGracefulShutdown()
                    tasks.cancelAll()
                    throw error
                }
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
    }

    /// An HTTP client whose pool does not queue an open-loop load: many connections per host, kept alive.
    static func withClient<T>(_ body: (HTTPClient) async throws -> T) async throws -> T {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(
            idleTimeout: .seconds(120), concurrentHTTP1ConnectionsPerHostSoftLimit: 1024)
        configuration.decompression = .disabled
        return try await HTTPClient.withHTTPClient(configuration: configuration) { client in try await body(client) }
    }

    static func port(of address: String) -> Int {
        address.split(separator: ":").last.flatMap { Int($0) } ?? 0
    }

}

// MARK: - The script and the client

/// What the fake model says: one `repl` cell first (a sandbox starts and runs it), then the answer.
enum ServeScript {
    static let model = "bench"
    static let question = "What is the sum of the numbers below ten?"
    static let answer = "45"
    static let cell = "```repl\ntotal = sum(range(10))\nprint(total)\n```"

    static let handler = FakeLLMServer.Handler { request in
        request.messages.contains { $0.role == .assistant } ? .text("FINAL(\(answer))") : .text(cell)
    }

    static func check(_ answer: String?) throws {
        guard answer == Self.answer else {
            throw ServeBenchError("the run answered \(answer.map { "'\($0)'" } ?? "nothing"), not '\(Self.answer)'")
        }
    }
}

/// A failed request or run during the benchmark.
struct ServeBenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The benchmark's requests to the API, with the key.
struct ServeClient: Sendable {
    let client: HTTPClient
    let base: String
    let secret: String

    /// `POST /v1/chat/completions` with the question (in `session` when given); throws unless it answered.
    func chat(session: String? = nil) async throws {
        var body: [String: Any] = [
            "model": ServeScript.model, "messages": [["role": "user", "content": ServeScript.question]],
        ]
        if let session { body["rlm"] = ["session": session] }
        let reply = try await send("POST", "/v1/chat/completions", json: body)
        let choices = reply["choices"] as? [[String: Any]]
        let message = choices?.first?["message"] as? [String: Any]
        try ServeScript.check(message?["content"] as? String)
    }

    /// A GET that must answer 200.
    func get(_ path: String) async throws {
        _ = try await send("GET", path, json: nil, raw: nil)
    }

    /// Uploads `bytes` of log-like text as a context; returns its id.
    func uploadContext(bytes: Int) async throws -> String {
        var text = ""
        var line = 0
        while text.utf8.count < bytes {
            text +=
                "2025-01-01T00:00:\(String(format: "%02d", line % 60))Z INFO api request \(line) status=200 ms=\(line % 97)\n"
            line += 1
        }
        let reply = try await send("POST", "/v1/contexts?name=bench.log", json: nil, raw: Array(text.utf8))
        guard let id = reply["id"] as? String else { throw ServeBenchError("the upload returned no id") }
        return id
    }

    func openSession(context: String) async throws -> String {
        let reply = try await send("POST", "/v1/sessions", json: ["contexts": [context], "model": ServeScript.model])
        guard let id = reply["id"] as? String else { throw ServeBenchError("opening a session returned no id") }
        return id
    }

    func closeSession(_ id: String) async throws {
        _ = try await send("DELETE", "/v1/sessions/\(id)", json: nil)
    }

    /// One request; the reply's JSON object. Throws for any status but 200.
    @discardableResult
    private func send(_ method: String, _ path: String, json: [String: Any]?, raw: [UInt8]? = nil) async throws
        -> [String: Any]
    {
        var request = HTTPClientRequest(url: base + path)
        request.method = .init(rawValue: method)
        request.headers.add(name: "Authorization", value: "Bearer \(secret)")
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
        } else if let raw {
            request.headers.add(name: "Content-Type", value: "text/plain")
            request.body = .bytes(ByteBuffer(bytes: raw))
        }
        let response = try await client.execute(request, timeout: .seconds(120))
        let body = try await response.body.collect(upTo: 16 << 20)
        guard response.status.code == 200 else {
            throw ServeBenchError("\(method) \(path): \(response.status.code) \(String(buffer: body).prefix(300))")
        }
        return (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
    }
}

// MARK: - Measurements

/// Latency figures of a set of samples, in milliseconds (nearest-rank percentiles).
struct Summary: Codable, Sendable {
    var count: Int
    var p25: Double
    var median: Double
    var p75: Double
    var p90: Double
    var p99: Double
    var max: Double
    var mean: Double

    init(_ samples: [Double]) {
        let sorted = samples.sorted()
        func rank(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            return sorted[Swift.max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1)]
        }
        count = sorted.count
        p25 = rank(0.25)
        median = rank(0.5)
        p75 = rank(0.75)
        p90 = rank(0.9)
        p99 = rank(0.99)
        max = sorted.last ?? 0
        mean = sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count)
    }
}

/// One path's time minus another's in the same round.
struct PairedDifference: Codable, Sendable {
    var name: String
    var difference: Summary
}

struct SequentialFigures: Codable, Sendable {
    /// Per-round differences between the run paths.
    var differences: [PairedDifference]
    /// `RLMEngine.run` with the configuration the service builds (same runtime, sandbox, model), no records.
    var engine: Summary
    /// The same, writing the runtime's trajectory (as `rlm run` does).
    var trajectory: Summary
    /// `RLMService.run` in process: limits, trajectory file, audit line, the key's usage in SQLite.
    var service: Summary
    /// `POST /v1/chat/completions` through RLMHTTPServer on loopback.
    var http: Summary
    /// The mean size of one run's trajectory file.
    var trajectoryBytes: Int
    /// Where a run's time goes, engine against service (medians of each span).
    var breakdown: [SpanFigures]
    /// Busy CPU time of the whole machine per call (every process, sandboxes included), in the order engine,
    /// engine with trajectory, service, HTTP, `/healthz`, `/v1/models`.
    var cpuPerCallMS: [Double]
    /// This process's own CPU time per call (client, HTTP server, service, fake model; not the sandboxes), same order.
    var processCPUPerCallMS: [Double]
    /// `GET /healthz` (no key, not audited).
    var health: Summary
    /// `GET /v1/models` (key checked, request audited).
    var models: Summary
    /// `SQLiteKeyStore.authenticate` alone, in process: once per authenticated request, one at a time per store.
    var authenticate: Summary
    /// `SQLiteKeyStore.addUsage` alone, in process: once per run (a write transaction).
    var addUsage: Summary
}

/// One span of a run, between two of its events (or the call and its return): medians in milliseconds.
struct SpanFigures: Codable, Sendable {
    var span: String
    var engine: Double
    var service: Double
}

/// When one run's root events happened, against the call's start.
final class Timeline: Sendable {
    let start = ContinuousClock.now
    private let marks = Mutex<[RLMEvent.Kind: ContinuousClock.Instant]>([:])

    /// The events a span starts or ends at, in order; a span runs from one to the next.
    static let kinds: [RLMEvent.Kind] = [
        .runStarted, .modelRequest, .codeStarted, .codeResult, .finalAnswer, .runFinished,
    ]
    static let names = [
        "call → run_started (admission, setup)",
        "run_started → first model_request (the sandbox starts, context loads)",
        "first model_request → code_started (model round trip 1)",
        "code_started → code_result (the cell runs)",
        "code_result → final_answer (model round trip 2)",
        "final_answer → run_finished",
        "run_finished → the call returns (the sandbox is shut down; records)",
    ]

    /// Keeps the first time each root event kind happened.
    func mark(_ event: RLMEvent) {
        guard event.depth == 0 else { return }
        let now = ContinuousClock.now
        marks.withLock { marks in
            if marks[event.kind] == nil { marks[event.kind] = now }
        }
    }

    /// The spans in milliseconds (as ``names``), or `nil` when an event is missing.
    func spans(end: ContinuousClock.Instant) -> [Double]? {
        let marks = marks.withLock { $0 }
        var points = [start]
        for kind in Self.kinds {
            guard let instant = marks[kind] else { return nil }
            points.append(instant)
        }
        points.append(end)
        return zip(points, points.dropFirst()).map { ($1 - $0).fractionalMilliseconds }
    }
}

/// One endpoint's open-loop rates.
struct LoadSweep: Codable, Sendable {
    var endpoint: String
    var rows: [LoadRow]
}

struct LoadRow: Codable, Sendable {
    var rate: Double
    var seconds: Double
    var sent: Int
    var failed: Int
    var firstError: String?
    var latency: Summary
    /// How late the generator sent requests (its own scheduling delay; included in the latency).
    var sendLagP99: Double
    var completedPerSecond: Double
    /// Busy CPU time of the whole machine (every core, every process: client, server, sandboxes) per request.
    var cpuPerRequestMS: Double
    /// This process's own CPU time per request (not the sandboxes).
    var processCPUPerRequestMS: Double
    var met: Bool
}

/// Memory of this process and of every sandbox process (this process's descendants), at one moment.
struct MemorySnapshot: Codable, Sendable {
    var processRSSKiB: Int
    var sandboxProcesses: Int
    var sandboxRSSKiB: Int
    /// Proportional set size (shared pages divided among their users), when /proc lets us read it.
    var sandboxPSSKiB: Int?
    /// The sandboxes' common memory cgroup (`swiftrlm-<pid>`): `memory.usage_in_bytes`, in KiB.
    var sandboxCgroupKiB: Int?
    /// VmRSS by command name (`bwrap`, `python3`, …).
    var byCommand: [String: Int]

    static func now() -> MemorySnapshot {
        let me = getpid()
        let descendants = ProcessTable.descendants(of: me)
        var rss = 0
        var pss: Int? = 0
        var byCommand = [String: Int]()
        for pid in descendants {
            let resident = ProcessTable.statusField("VmRSS", pid: pid) ?? 0
            rss += resident
            byCommand[ProcessTable.command(pid), default: 0] += resident
            if let proportional = ProcessTable.pss(pid: pid), let sum = pss {
                pss = sum + proportional
            } else {
                pss = nil
            }
        }
        return MemorySnapshot(
            processRSSKiB: ProcessTable.statusField("VmRSS", pid: me) ?? 0, sandboxProcesses: descendants.count,
            sandboxRSSKiB: rss, sandboxPSSKiB: descendants.isEmpty ? 0 : pss,
            sandboxCgroupKiB: ProcessTable.sandboxCgroupUsageKiB() ?? 0,
            byCommand: byCommand)
    }
}

struct MemoryFigures: Codable, Sendable {
    var sessions: Int
    var asked: Int
    var contextBytes: Int
    var failure: String?
    var before: MemorySnapshot
    var idle: MemorySnapshot
    var closed: MemorySnapshot
    /// Request bodies the in-process fake model recorded during the phase (part of the process's growth).
    var fakeRecordedKiB: Int

    func perSession(_ value: (MemorySnapshot) -> Int?) -> Double? {
        guard sessions > 0, let idle = value(idle), let before = value(before) else { return nil }
        return Double(idle - before) / Double(sessions)
    }
}

/// The machine's busy CPU time, from /proc/stat.
enum MachineCPU {
    /// user + nice + system + irq + softirq + steal of every core since boot, in milliseconds.
    static func busyMilliseconds() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return 0 }
        let ticks = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard ticks.count >= 8 else { return 0 }
        let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
        return busy * 1000 / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// This process's CPU time (every thread, user and system), in milliseconds.
    static func processMilliseconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        func ms(_ time: timeval) -> Double { Double(time.tv_sec) * 1000 + Double(time.tv_usec) / 1000 }
        return ms(usage.ru_utime) + ms(usage.ru_stime)
    }
}

/// Reading /proc.
enum ProcessTable {
    /// Every live descendant of `root` (children, their children, …), zombies excluded.
    static func descendants(of root: pid_t) -> [pid_t] {
        var children = [pid_t: [pid_t]]()
        for pid in allPids() {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, fields[0] != "Z", let ppid = pid_t(fields[1]) else { continue }
            children[ppid, default: []].append(pid)
        }
        var found = [pid_t]()
        var queue = children[root] ?? []
        while let pid = queue.popLast() {
            found.append(pid)
            queue += children[pid] ?? []
        }
        return found
    }

    /// A `Name:  value kB` field of /proc/PID/status, in KiB.
    static func statusField(_ name: String, pid: pid_t) -> Int? {
        field(name, in: "/proc/\(pid)/status")
    }

    /// `Pss` of /proc/PID/smaps_rollup, in KiB (needs ptrace access to the process).
    static func pss(pid: pid_t) -> Int? {
        field("Pss", in: "/proc/\(pid)/smaps_rollup")
    }

    static func command(_ pid: pid_t) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "?")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `memory.usage_in_bytes` of the group above every sandbox of this process (`swiftrlm-<pid>`, made under
    /// this process's own memory group or at the hierarchy's root), in KiB; `nil` when there is none.
    static func sandboxCgroupUsageKiB() -> Int? {
        let root = "/sys/fs/cgroup/memory"
        var own = ""
        if let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
                if parts.count == 3, parts[1].split(separator: ",").contains("memory") { own = String(parts[2]) }
            }
        }
        let name = "swiftrlm-\(getpid())"
        for directory in [root + own + "/" + name, root + "/" + name] {
            if let text = try? String(contentsOfFile: directory + "/memory.usage_in_bytes", encoding: .utf8),
                let bytes = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                return bytes >> 10
            }
        }
        return nil
    }

    private static func field(_ name: String, in path: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            return line.dropFirst(name.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first
                .flatMap { Int($0) }
        }
        return nil
    }
}

/// Whether TCP_NODELAY is on for this process's loopback sockets of the API server and of the fake model (both the
/// accepted side and the client's side): without it, a keep-alive client stalls ~40 ms per reply.
enum NoDelayCheck {
    struct Sockets: Codable, Sendable {
        /// Sockets the HTTP server accepted: how many, and how many have TCP_NODELAY.
        var serverAccepted: Int
        var serverNoDelay: Int
        /// The benchmark client's sockets to the HTTP server.
        var clientToServer: Int
        var clientNoDelay: Int
        /// Sockets the fake model accepted, and the provider client's sockets to it.
        var fakeAccepted: Int
        var fakeNoDelay: Int
        var providerToFake: Int
        var providerNoDelay: Int
    }

    static func sockets(serverPort: Int, fakePort: Int) -> Sockets {
        var result = Sockets(
            serverAccepted: 0, serverNoDelay: 0, clientToServer: 0, clientNoDelay: 0, fakeAccepted: 0, fakeNoDelay: 0,
            providerToFake: 0, providerNoDelay: 0)
        let fds =
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.compactMap { Int32($0) } ?? []
        for fd in fds {
            guard let local = port(fd, peer: false), let remote = port(fd, peer: true) else { continue }
            var flag: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &flag, &length) == 0 else { continue }
            let on = flag != 0 ? 1 : 0
            if local == serverPort {
                result.serverAccepted += 1
                result.serverNoDelay += on
            } else if remote == serverPort {
                result.clientToServer += 1
                result.clientNoDelay += on
            } else if local == fakePort {
                result.fakeAccepted += 1
                result.fakeNoDelay += on
            } else if remote == fakePort {
                result.providerToFake += 1
                result.providerNoDelay += on
            }
        }
        return result
    }

    /// The local (or peer) port of a connected IPv4 TCP socket.
    private static func port(_ fd: Int32, peer: Bool) -> Int? {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let status = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socket in
                peer ? getpeername(fd, socket, &length) : getsockname(fd, socket, &length)
            }
        }
        guard status == 0, address.sin_family == sa_family_t(AF_INET) else { return nil }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Trajectory files for the engine-with-trajectory path, opened as the runtime opens them, and their sizes.
final class Trajectories: Sendable {
    private let runtime: RLMRuntime
    private let plan: RLMRuntime.Plan
    private let directory: String
    private let sizes = Mutex<[Int]>([])

    init(runtime: RLMRuntime, plan: RLMRuntime.Plan, directory: String) {
        self.runtime = runtime
        self.plan = plan
        self.directory = directory + "/engine-trajectories"
    }

    func open() throws -> TrajectoryWriter {
        try runtime.openTrajectory(plan, path: "\(directory)/run-\(UUID().uuidString).jsonl")
    }

    func finished(_ writer: TrajectoryWriter) {
        let size = (try? FileManager.default.attributesOfItem(atPath: writer.path)[.size] as? Int) ?? 0
        sizes.withLock { $0.append(size) }
        try? FileManager.default.removeItem(atPath: writer.path)
    }

    var meanBytes: Int { sizes.withLock { $0.isEmpty ? 0 : $0.reduce(0, +) / $0.count } }
}

// MARK: - Scratch, progress

/// A 0700 scratch directory for the key store, contexts, trajectories and the audit log; removed at the end.
struct ServeScratch {
    let path: String

    init() throws {
        let base = FileManager.default.temporaryDirectory.path
        var template = Array("\(base)/rlm-bench-serve-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ValidationError("cannot make a scratch directory in \(base): \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Progress lines on stderr.
struct ServeProgress: Sendable {
    func say(_ text: String) {
        FileHandle.standardError.write(Data("rlm-bench serve: \(text)\n".utf8))
    }
}

extension Duration {
    fileprivate var fractionalMilliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}

// MARK: - The report

struct ServeReport: Codable {
    var command: [String]
    var requests: Int
    var warmup: Int
    var p99TargetMS: Double
    var sequential: SequentialFigures?
    var noDelay: NoDelayCheck.Sockets?
    var memory: MemoryFigures?
    var load: [LoadSweep] = []

    var maxRuns: Int
    var keyRPM: Int?

    init(command: [String], requests: Int, warmup: Int, p99Target: Double, maxRuns: Int, keyRPM: Int?) {
        self.maxRuns = maxRuns
        self.keyRPM = keyRPM
        self.command = command
        self.requests = requests
        self.warmup = warmup
        self.p99TargetMS = p99Target
    }

    func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return ((try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}") + "\n"
    }

    static func highest(_ rows: [LoadRow]) -> String {
        guard let best = rows.filter(\.met).map(\.rate).max() else { return "none of the rates tried" }
        return "\(ServeBench.shown(best)) req/s"
    }

    func markdown() -> String {
        var out = "```sh\n\(command.joined(separator: " "))\n```\n\n"
        out += "Fake model: zero latency, TCP_NODELAY, in this process. Every run: one `repl` cell (a sandbox starts), "
        out +=
            "then `FINAL(45)`. \(ProcessInfo.processInfo.activeProcessorCount) cores. Server: --max-runs \(maxRuns); "
        out += "the key: \(keyRPM.map { "\($0) requests per minute" } ?? "no request rate limit"), 10^12 tokens a day, "
        out += "10,000 concurrent runs.\n\n"
        if let s = sequential {
            out +=
                "Sequential, one keep-alive connection, \(requests) timed requests per path after \(warmup) warm-up, "
            out += "the four run paths interleaved (ms):\n\n"
            out += "| path | median | p90 | p99 | max | mean | CPU ms/call: this process | machine |\n"
            out += "|---|---|---|---|---|---|---|---|\n"
            let cpu = zip(s.processCPUPerCallMS, s.cpuPerCallMS).map { String(format: "%.2f | %.1f", $0, $1) }
            let rows: [(String, Summary, String)] = [
                ("RLMEngine.run, same runtime configuration, no records (floor)", s.engine, cpu[0]),
                ("RLMEngine.run + the runtime's trajectory writer (as `rlm run`)", s.trajectory, cpu[1]),
                ("RLMService.run in process (limits, trajectory, audit, key usage)", s.service, cpu[2]),
                ("POST /v1/chat/completions over loopback", s.http, cpu[3]),
                ("GET /healthz (no key)", s.health, cpu[4]),
                ("GET /v1/models (key checked, request audited)", s.models, cpu[5]),
                (
                    "SQLiteKeyStore.authenticate alone, in process (every authenticated request)", s.authenticate,
                    "— | —"
                ),
                ("SQLiteKeyStore.addUsage alone, in process (every run)", s.addUsage, "— | —"),
            ]
            for (label, summary, cpu) in rows {
                out += String(
                    format: "| %@ | %.2f | %.2f | %.2f | %.2f | %.2f | %@ |\n", label, summary.median, summary.p90,
                    summary.p99, summary.max, summary.mean, cpu)
            }
            out += "\nPer round (the paths of one round run back to back, in random order), median of the differences "
            out += "with its quartiles, ms:\n\n"
            for pair in s.differences {
                out += String(
                    format: "- %@: %+.2f (%+.2f … %+.2f)\n", pair.name, pair.difference.median, pair.difference.p25,
                    pair.difference.p75)
            }
            out += String(
                format: "\nHTTP / engine, medians: %.3f×; a run's trajectory file: %d bytes.\n",
                s.http.median / s.engine.median, s.trajectoryBytes)
        }
        if let s = sequential, !s.breakdown.isEmpty {
            out +=
                "\nWhere a run's time goes (medians, ms):\n\n| span | RLMEngine.run | RLMService.run |\n|---|---|---|\n"
            for span in s.breakdown {
                out += String(format: "| %@ | %.2f | %.2f |\n", span.span, span.engine, span.service)
            }
        }
        if let n = noDelay {
            out +=
                "\nTCP_NODELAY: API server accepted \(n.serverNoDelay)/\(n.serverAccepted), bench client "
                + "\(n.clientNoDelay)/\(n.clientToServer), fake model accepted \(n.fakeNoDelay)/\(n.fakeAccepted), "
                + "provider client \(n.providerNoDelay)/\(n.providerToFake).\n"
        }
        if let m = memory {
            out += "\nIdle sessions: \(m.sessions) of \(m.asked) opened over one \(m.contextBytes >> 10) KiB context "
            out += "and asked one question (KiB):\n\n"
            out += "| figure | before | \(m.sessions) idle sessions | per session | after closing them |\n"
            out += "|---|---|---|---|---|\n"
            let rows: [(String, (MemorySnapshot) -> Int?)] = [
                ("this process, VmRSS", { $0.processRSSKiB }),
                ("sandbox processes, VmRSS summed", { $0.sandboxRSSKiB }),
                ("sandbox processes, Pss summed", { $0.sandboxPSSKiB }),
                ("sandboxes' memory cgroup, usage", { $0.sandboxCgroupKiB }),
                ("sandbox processes (count)", { $0.sandboxProcesses }),
            ]
            for (label, value) in rows {
                func cell(_ snapshot: MemorySnapshot) -> String { value(snapshot).map(String.init) ?? "—" }
                let per = m.perSession(value).map { String(format: "%.0f", $0) } ?? "—"
                out += "| \(label) | \(cell(m.before)) | \(cell(m.idle)) | \(per) | \(cell(m.closed)) |\n"
            }
            let commands = m.idle.byCommand.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            out += "\nSandbox VmRSS by command with the sessions idle (KiB): \(commands.joined(separator: ", ")). "
            out += "The fake model recorded \(m.fakeRecordedKiB) KiB of request bodies meanwhile (in this process).\n"
            if let failure = m.failure { out += "\nStopped opening sessions: \(failure.prefix(400))\n" }
        }
        for sweep in load where !sweep.rows.isEmpty {
            let (endpoint, rows) = (sweep.endpoint, sweep.rows)
            out += "\nOpen loop, \(endpoint) (latency from each request's scheduled time, ms):\n\n"
            out += "| rate (req/s) | seconds | sent | failed | p50 | p90 | p99 | max | send lag p99 | "
            out += "CPU ms/req: this process | machine | p99 < \(ServeBench.shown(p99TargetMS)) ms |\n"
            out += "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            for row in rows {
                out += String(
                    format: "| %@ | %@ | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %@ |\n",
                    ServeBench.shown(row.rate), ServeBench.shown(row.seconds), row.sent, row.failed,
                    row.latency.median, row.latency.p90, row.latency.p99, row.latency.max, row.sendLagP99,
                    row.processCPUPerRequestMS, row.cpuPerRequestMS, row.met ? "yes" : "**no**")
            }
            if let error = rows.compactMap(\.firstError).first { out += "\nFirst failure: \(error.prefix(300))\n" }
            out += "\nHighest rate with p99 < \(ServeBench.shown(p99TargetMS)) ms: \(Self.highest(rows)).\n"
        }
        return out
    }
}
