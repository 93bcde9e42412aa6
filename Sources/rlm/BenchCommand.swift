import ArgumentParser
import Foundation
import RLM
import RLMRuntime
import RLMSandbox
import Subprocess
import SystemPackage

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure SwiftRLM's speed (figures for docs/BENCHMARKS.md).",
        discussion: "Sub-call throughput against a fake server is measured by the separate `rlm-bench subcalls`.",
        subcommands: [SandboxBench.self, TasksBench.self]
    )
}

struct SandboxBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract:
            "Cold start (new session to first result) against `python3 -c pass`, warm empty-cell round trips, and a CPU-bound cell against native, for any backend."
    )

    @Option(help: "Cold starts to measure.")
    var cold: Int = 30

    @Option(help: "Empty cells to time in one warm session.")
    var warm: Int = 2000

    @Option(help: "Python interpreter (also used for the baseline).")
    var python: String = "/usr/bin/python3"

    @Option(help: "Times to run `sum(range(10**6))` in a warm session of the backend and of the process backend.")
    var compute: Int = 5

    @OptionGroup var backend: BackendOptions

    func run() async throws {
        var configuration = ProcessSandbox.Configuration()
        configuration.pythonPath = python
        configuration.cellTimeout = .seconds(600)
        configuration.startTimeout = .seconds(600)
        let chosen = try backend.resolve()
        let sandbox = chosen.sandbox(configuration)
        let clock = ContinuousClock()

        // Warm the page cache for both sides first so neither pays for disk reads.
        _ = try await sandbox.withSession { try await $0.run("pass") }
        _ = try await Self.runBaseline(python)

        var baseline = [Duration]()
        var coldStarts = [Duration]()
        for _ in 0..<cold {
            baseline.append(try await Self.runBaseline(python))
            let start = clock.now
            let session = try await sandbox.startSession(handler: nil)
            _ = try await session.run("pass")
            coldStarts.append(clock.now - start)
            await session.shutdown()
        }
        let warmTimes = try await sandbox.withSession { session in
            for _ in 0..<100 { _ = try await session.run("pass") }
            var times = [Duration]()
            times.reserveCapacity(warm)
            for _ in 0..<warm {
                let start = clock.now
                _ = try await session.run("pass")
                times.append(clock.now - start)
            }
            return times
        }
        // The same CPU-bound cell in this backend and in the process backend (native CPython), one after the other.
        let cell = "sum(range(10**6))"
        func computeTimes(_ sandbox: any Sandbox) async throws -> [Duration] {
            try await sandbox.withSession { session in
                _ = try await session.run(cell)
                var times = [Duration]()
                for _ in 0..<compute {
                    let result = try await session.run(cell)
                    if let error = result.error { throw SandboxError.setup("\(cell) failed: \(error.message)") }
                    times.append(result.duration)
                }
                return times
            }
        }
        let computeHere = compute > 0 ? try await computeTimes(sandbox) : []
        let computeNative = compute > 0 ? try await computeTimes(ProcessSandbox(configuration: configuration)) : []
        let baselineMedian = median(baseline)
        let coldMedian = median(coldStarts)
        writeOut(
            "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; backend: \(chosen.name); "
                + "python: \(python)\n")
        writeOut("python3 -c pass       median \(ms(baselineMedian)) ms  (n=\(cold))\n")
        writeOut(
            "cold start            median \(ms(coldMedian)) ms  p90 \(ms(percentile(coldStarts, 0.9))) ms  "
                + "ratio \(String(format: "%.2f", coldMedian.inSeconds / baselineMedian.inSeconds))x  (target ≤ 2x)\n")
        writeOut(
            "warm empty cell       median \(us(median(warmTimes))) µs  p90 \(us(percentile(warmTimes, 0.9))) µs  "
                + "p99 \(us(percentile(warmTimes, 0.99))) µs  (n=\(warm), target ≤ 500 µs)\n")
        if compute > 0 {
            let here = median(computeHere)
            let native = median(computeNative)
            writeOut(
                "\(cell)     median \(ms(here)) ms in \(chosen.name), \(ms(native)) ms in process (native); "
                    + "ratio \(String(format: "%.1f", here.inSeconds / native.inSeconds))x  (n=\(compute))\n")
        }
    }

    static func runBaseline(_ python: String) async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        _ = try await Subprocess.run(
            .path(FilePath(python)), arguments: ["-c", "pass"], output: .discarded, error: .discarded)
        return clock.now - start
    }
}

func median(_ values: [Duration]) -> Duration { percentile(values, 0.5) }

func percentile(_ values: [Duration], _ p: Double) -> Duration {
    guard !values.isEmpty else { return .zero }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p + 0.5))]
}

func ms(_ duration: Duration) -> String { String(format: "%.2f", duration.inMilliseconds) }
func us(_ duration: Duration) -> String { String(format: "%.0f", duration.inSeconds * 1e6) }
