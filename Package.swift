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
        .library(name: "RLMProviders", targets: ["RLMProviders"]),
        .library(name: "RLMLocal", targets: ["RLMLocal"]),
        .library(name: "RLMSandbox", targets: ["RLMSandbox"]),
        .library(name: "RLMTesting", targets: ["RLMTesting"]),
        .library(name: "RLMTasks", targets: ["RLMTasks"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        // The launcher: joins cgroups, sets rlimits, drops to an unprivileged uid, builds the seccomp filter,
        // clears the environment and execs bubblewrap. C because it must run between fork and exec.
        .executableTarget(name: "CRLMLaunch"),
        // The few libc calls Swift cannot import (variadic or GNU-only).
        .target(name: "CRLMSystem"),
        .target(
            name: "RLMSandbox",
            dependencies: ["CRLMSystem", .product(name: "Logging", package: "swift-log")],
            resources: [.copy("Worker/rlm_worker.py")],
            swiftSettings: swiftSettings
        ),
        // The engine: loop, prompts, answer parsing, budgets, events. Depends on protocols, not on providers.
        .target(
            name: "RLM",
            dependencies: ["RLMSandbox", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        // LLM clients over AsyncHTTPClient: OpenAI-compatible chat completions and Anthropic Messages.
        .target(
            name: "RLMProviders",
            dependencies: [
                "RLM",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
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
            ],
            resources: [.copy("Resources/serve_llama.py")],
            swiftSettings: swiftSettings
        ),
        // The long-context task suite: seeded generators of tasks with exact answers, and scoring.
        .target(
            name: "RLMTasks",
            dependencies: ["RLM", "RLMSandbox"],
            swiftSettings: swiftSettings
        ),
        // Fakes for tests, shipped like HummingbirdTesting: a scripted LLM server over real HTTP.
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
        .executableTarget(
            name: "rlm",
            dependencies: [
                "RLM", "RLMProviders", "RLMSandbox", "RLMLocal", "RLMTasks", "RLMTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RLMSandboxTests",
            dependencies: ["RLMSandbox"],
            swiftSettings: swiftSettings
        ),
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
            name: "RLMTasksTests",
            dependencies: ["RLMTasks", "RLM", "RLMSandbox"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RLMTests",
            dependencies: ["RLM", "RLMProviders", "RLMTesting", "RLMSandbox"],
            swiftSettings: swiftSettings
        ),
    ]
)
