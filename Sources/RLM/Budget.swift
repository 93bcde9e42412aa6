import Foundation

/// Limits on a whole run, including every child RLM and sub-call. Enforced on the host: code in the REPL cannot see
/// or change them. `nil` means unlimited.
public struct Budget: Sendable, Hashable {
    /// Root iterations (model turns) per run; children have their own count of the same size.
    public var maxIterations: Int
    /// How deep `rlm_query` may recurse: 0 makes it a plain `llm_query`.
    public var maxDepth: Int
    /// Input plus output tokens over the whole run.
    public var maxTokens: Int?
    /// Input tokens over the whole run.
    public var maxInputTokens: Int?
    /// Output tokens over the whole run.
    public var maxOutputTokens: Int?
    /// Cost in USD over the whole run (from the configured price table).
    public var maxCostUSD: Double?
    /// Wall time of the whole run.
    public var maxWallTime: Duration?
    /// Sub-calls (each prompt of a batch counts) over the whole run.
    public var maxSubcalls: Int?
    /// Iterations in a row whose code raised; a run stuck on errors stops.
    public var maxConsecutiveErrors: Int?
    /// Sandboxes alive at once in the run: the root's plus its children's (`rlm_query`). A child beyond the cap waits
    /// for a free slot (up to the cell timeout, then its `rlm_query` returns an error string), so fan-out through
    /// threads or recursion cannot multiply the memory the run holds.
    public var maxLiveSandboxes: Int

    /// Defaults: 20 iterations, depth 1, 10 consecutive errors, 5 live sandboxes (the root's and 4 children's),
    /// nothing else limited.
    public init(
        maxIterations: Int = 20, maxDepth: Int = 1, maxTokens: Int? = nil, maxInputTokens: Int? = nil,
        maxOutputTokens: Int? = nil, maxCostUSD: Double? = nil, maxWallTime: Duration? = nil, maxSubcalls: Int? = nil,
        maxConsecutiveErrors: Int? = 10, maxLiveSandboxes: Int = 5
    ) {
        self.maxLiveSandboxes = max(1, maxLiveSandboxes)
        self.maxIterations = maxIterations
        self.maxDepth = maxDepth
        self.maxTokens = maxTokens
        self.maxInputTokens = maxInputTokens
        self.maxOutputTokens = maxOutputTokens
        self.maxCostUSD = maxCostUSD
        self.maxWallTime = maxWallTime
        self.maxSubcalls = maxSubcalls
        self.maxConsecutiveErrors = maxConsecutiveErrors
    }
}

/// Which limit stopped a run.
public enum BudgetLimit: String, Sendable, Hashable, Codable {
    case iterations, tokens, inputTokens = "input_tokens", outputTokens = "output_tokens", cost
    case wallTime = "wall_time", subcalls, consecutiveErrors = "consecutive_errors"
}

/// Thrown (and reported) when a budget is spent.
public struct BudgetExhausted: Error, Sendable, Hashable, CustomStringConvertible {
    /// The limit that was reached.
    public var limit: BudgetLimit
    /// A sentence for the user.
    public var message: String

    public var description: String { message }
}

/// Usage so far across a run tree.
public struct RunUsage: Sendable, Hashable, Codable {
    /// Tokens of every model call (root, sub-calls, children).
    public var tokens = TokenUsage()
    /// Cost in USD.
    public var costUSD: Double = 0
    /// Model calls made by the root and child loops.
    public var modelCalls = 0
    /// Sub-calls made from code (each batch prompt counts).
    public var subcalls = 0

    public init() {}
}

/// Shared by every engine and router of one run: records usage, and trips once when a limit is passed. Whoever
/// waits on ``exhaustion()`` learns of it at once, so the run can be cancelled mid-cell.
actor BudgetTracker {
    let budget: Budget
    private(set) var usage = RunUsage()
    private(set) var exhausted: BudgetExhausted?
    private var waiters: [CheckedContinuation<BudgetExhausted?, Never>] = []
    private var finished = false
    private let start = ContinuousClock.now

    init(budget: Budget) {
        self.budget = budget
    }

    /// Throws if the budget is already spent.
    func check() throws {
        if let exhausted { throw exhausted }
        if let wall = budget.maxWallTime, ContinuousClock.now - start >= wall {
            trip(.wallTime, "the run's wall-time budget (\(formatDuration(wall))) is spent")
            throw exhausted!
        }
    }

    /// Records a model call's usage and cost; trips a token or cost limit that it passes.
    func record(_ tokens: TokenUsage, cost: Double, isSubcall: Bool) {
        usage.tokens += tokens
        usage.costUSD += cost
        if !isSubcall { usage.modelCalls += 1 }
        let total = usage.tokens
        if let max = budget.maxTokens, total.totalTokens >= max {
            trip(.tokens, "the token budget (\(max)) is spent: \(total.totalTokens) tokens used")
        } else if let max = budget.maxInputTokens, total.inputTokens >= max {
            trip(.inputTokens, "the input-token budget (\(max)) is spent")
        } else if let max = budget.maxOutputTokens, total.outputTokens >= max {
            trip(.outputTokens, "the output-token budget (\(max)) is spent")
        } else if let max = budget.maxCostUSD, usage.costUSD >= max {
            trip(.cost, String(format: "the cost budget ($%.4f) is spent: $%.4f used", max, usage.costUSD))
        }
    }

    /// What a call may spend before it is sent: its estimated prompt and the most it may generate, in tokens and
    /// in cost. Held until the call ends, so concurrent calls cannot together pass a limit.
    struct Reservation: Sendable {
        var inputTokens: Int
        var outputTokens: Int
        var cost: Double
        /// The price was unknown under a cost budget: the call holds the run's one turn for such calls.
        var holdsUnpricedTurn = false
        var totalTokens: Int { inputTokens + outputTokens }
    }

    /// The outcome of asking to send a call.
    enum ReservationOutcome: Sendable {
        /// Send it, generating at most `maxOutputTokens` (`nil`: no cap needed).
        case reserved(Reservation, maxOutputTokens: Int?)
        /// Do not send it: it would cross this limit.
        case refused(BudgetExhausted)
    }

    /// Tokens and cost reserved by calls in flight.
    private(set) var reserved = Reservation(inputTokens: 0, outputTokens: 0, cost: 0)
    private var unpricedTurnTaken = false

    /// The queues a call or a child may wait in.
    enum Queue: Hashable, Sendable {
        /// Children waiting for a sandbox slot.
        case childSlot
        /// Calls to an unpriced model waiting for their turn under a cost budget.
        case unpricedTurn
    }

    private var queues: [Queue: [(id: UInt64, continuation: CheckedContinuation<Bool, Never>)]] = [:]

    /// Reserves a call's share of the budget before it is sent, in one step (so concurrent calls see each other's
    /// reservations). With a token budget the reply is capped to what is left; with a cost budget, to what the
    /// remaining money buys at the model's price. A model whose price is unknown under a cost budget gets one call
    /// in flight at a time, so a batch can overshoot by at most one call's cost.
    /// - Parameters:
    ///   - promptTokens: the prompt's estimated tokens.
    ///   - configuredMaxOutput: the reply cap the configuration asks for.
    ///   - price: what a call with a given usage costs; `nil` result when the price is unknown.
    func reserve(
        promptTokens: Int, configuredMaxOutput: Int?, price: @Sendable (TokenUsage) -> Double?
    ) async -> ReservationOutcome {
        if let exhausted { return .refused(exhausted) }
        // A call to a model of unknown price under a cost budget waits for the run's one turn for such calls first,
        // so every check below runs without suspending, on numbers no other call can change meanwhile.
        var holdsUnpricedTurn = false
        if budget.maxCostUSD != nil,
            price(TokenUsage(inputTokens: promptTokens, outputTokens: 0)) == nil
                || price(TokenUsage(inputTokens: 0, outputTokens: 1_000_000)) == nil
        {
            guard await takeUnpricedTurn() else {
                return .refused(exhausted ?? BudgetExhausted(limit: .cost, message: "the run is over"))
            }
            holdsUnpricedTurn = true
            if let exhausted {
                releaseUnpricedTurn()
                return .refused(exhausted)
            }
        }
        let outcome = checkAndReserve(
            promptTokens: promptTokens, configuredMaxOutput: configuredMaxOutput, price: price,
            holdsUnpricedTurn: holdsUnpricedTurn)
        if case .refused = outcome, holdsUnpricedTurn { releaseUnpricedTurn() }
        return outcome
    }

    private func checkAndReserve(
        promptTokens: Int, configuredMaxOutput: Int?, price: @Sendable (TokenUsage) -> Double?,
        holdsUnpricedTurn: Bool
    ) -> ReservationOutcome {
        func refuse(_ limit: BudgetLimit, _ message: String) -> ReservationOutcome {
            .refused(BudgetExhausted(limit: limit, message: message))
        }
        var maxOutput = configuredMaxOutput
        var allowance: Int?
        if let max = budget.maxTokens {
            allowance = max - usage.tokens.totalTokens - reserved.totalTokens - promptTokens
        }
        if let max = budget.maxOutputTokens {
            allowance = min(allowance ?? Int.max, max - usage.tokens.outputTokens - reserved.outputTokens)
        }
        if let allowance {
            guard allowance >= 16 else {
                let left = (budget.maxTokens ?? 0) - usage.tokens.totalTokens - reserved.totalTokens
                return refuse(
                    .tokens,
                    "this call needs about \(promptTokens) prompt tokens plus its reply, and the run's token budget has "
                        + "\(Swift.max(0, left)) left")
            }
            maxOutput = min(maxOutput ?? 4096, allowance)
        }
        if let max = budget.maxInputTokens, usage.tokens.inputTokens + reserved.inputTokens + promptTokens > max {
            return refuse(
                .inputTokens,
                "this prompt is about \(promptTokens) tokens and the run's input-token budget has "
                    + "\(Swift.max(0, max - usage.tokens.inputTokens - reserved.inputTokens)) left")
        }
        var cost = 0.0
        if let max = budget.maxCostUSD, !holdsUnpricedTurn {
            let remaining = max - usage.costUSD - reserved.cost
            if let inputCost = price(TokenUsage(inputTokens: promptTokens, outputTokens: 0)),
                let perMillionOut = price(TokenUsage(inputTokens: 0, outputTokens: 1_000_000))
            {
                let perOutput = Swift.max(0, perMillionOut - (price(TokenUsage()) ?? 0)) / 1e6
                let tokens = perOutput > 0 ? ((remaining - inputCost) / perOutput).rounded(.down) : .infinity
                let affordable = tokens.isFinite ? Int(Swift.min(tokens, 1e9)) : 1_000_000_000
                guard inputCost <= remaining, affordable >= 16 else {
                    return refuse(
                        .cost,
                        String(
                            format: "this call would cost at least $%.4f and the run's cost budget has $%.4f left",
                            inputCost + 16 * perOutput, Swift.max(0, remaining)))
                }
                maxOutput = min(maxOutput ?? 4096, affordable)
                cost = price(TokenUsage(inputTokens: promptTokens, outputTokens: maxOutput ?? 0)) ?? 0
                if cost > remaining {
                    return refuse(
                        .cost,
                        String(
                            format: "this call may cost up to $%.4f and the run's cost budget has $%.4f left", cost,
                            Swift.max(0, remaining)))
                }
            }
        }
        let reservation = Reservation(
            inputTokens: promptTokens, outputTokens: maxOutput ?? 0, cost: cost,
            holdsUnpricedTurn: holdsUnpricedTurn)
        reserved.inputTokens += reservation.inputTokens
        reserved.outputTokens += reservation.outputTokens
        reserved.cost += reservation.cost
        return .reserved(reservation, maxOutputTokens: maxOutput)
    }

    /// Ends a reservation and records the call's real usage in one step, so no other call's reservation can slip
    /// between the two.
    func settle(_ reservation: Reservation, usage tokens: TokenUsage, cost: Double, isSubcall: Bool) {
        release(reservation)
        record(tokens, cost: cost, isSubcall: isSubcall)
    }

    /// Ends a reservation whose call spent nothing (it failed or was cancelled before any usage was reported).
    func release(_ reservation: Reservation) {
        reserved.inputTokens -= reservation.inputTokens
        reserved.outputTokens -= reservation.outputTokens
        reserved.cost -= reservation.cost
        if reservation.holdsUnpricedTurn { releaseUnpricedTurn() }
    }

    private func takeUnpricedTurn() async -> Bool {
        if !unpricedTurnTaken {
            unpricedTurnTaken = true
            return true
        }
        return await wait(in: .unpricedTurn, timeout: nil)
    }

    private func releaseUnpricedTurn() {
        if !grantNext(in: .unpricedTurn) { unpricedTurnTaken = false }
    }

    /// Child sandboxes alive now, and children waiting for a slot.
    private var liveChildren = 0
    private var nextWaiter: UInt64 = 0

    /// Takes a slot for a child RLM's sandbox, waiting up to `timeout` for one to free up. A cancelled wait (the run
    /// was stopped) ends at once.
    /// - Returns: whether a slot was taken (then call ``releaseChildSlot()`` when the child is closed).
    func acquireChildSlot(timeout: Duration) async -> Bool {
        if liveChildren < budget.maxLiveSandboxes - 1 {
            liveChildren += 1
            return true
        }
        return await wait(in: .childSlot, timeout: timeout)
    }

    /// Gives a child's slot back, to the longest waiter if there is one.
    func releaseChildSlot() {
        if !grantNext(in: .childSlot) { liveChildren -= 1 }
    }

    /// Waits in a queue until granted (`true`), or until the timeout, cancellation or the end of the run (`false`).
    private func wait(in queue: Queue, timeout: Duration?) async -> Bool {
        if finished || Task.isCancelled { return false }
        let id = nextWaiter
        nextWaiter += 1
        let timer = timeout.map { timeout in
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                await self?.expireWaiter(id, in: queue)
            }
        }
        defer { timer?.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                queues[queue, default: []].append((id, continuation))
            }
        } onCancel: {
            Task { [weak self] in await self?.expireWaiter(id, in: queue) }
        }
    }

    private func expireWaiter(_ id: UInt64, in queue: Queue) {
        guard let index = queues[queue]?.firstIndex(where: { $0.id == id }) else { return }
        queues[queue]?.remove(at: index).continuation.resume(returning: false)
    }

    /// Hands the freed slot or turn to the longest waiter; `false` when nobody waits.
    private func grantNext(in queue: Queue) -> Bool {
        guard let first = queues[queue]?.first else { return false }
        queues[queue]?.removeFirst()
        first.continuation.resume(returning: true)
        return true
    }

    /// Counts `count` sub-calls about to be made; throws when that would pass the limit.
    func beginSubcalls(_ count: Int) throws {
        try check()
        if let max = budget.maxSubcalls, usage.subcalls + count > max {
            trip(.subcalls, "the sub-call budget (\(max)) is spent")
            throw exhausted!
        }
        usage.subcalls += count
    }

    /// Trips the tracker (first reason wins) and wakes every waiter.
    func trip(_ limit: BudgetLimit, _ message: String) {
        guard exhausted == nil else { return }
        let reason = BudgetExhausted(limit: limit, message: message)
        exhausted = reason
        let waiting = waiters
        waiters = []
        waiting.forEach { $0.resume(returning: reason) }
    }

    /// Returns when the budget is exhausted (at once if it already is), or `nil` once the run has finished.
    func exhaustion() async -> BudgetExhausted? {
        if let exhausted { return exhausted }
        if finished { return nil }
        return await withCheckedContinuation { waiters.append($0) }
    }

    /// The run is over: wakes every waiter (children waiting for a sandbox slot get none).
    func finish() {
        finished = true
        for waiter in queues.values.joined() { waiter.continuation.resume(returning: false) }
        queues = [:]
        let waiting = waiters
        waiters = []
        waiting.forEach { $0.resume(returning: exhausted) }
    }

    /// Time left before the wall-time limit, if there is one.
    func remainingWallTime() -> Duration? {
        guard let wall = budget.maxWallTime else { return nil }
        return wall - (ContinuousClock.now - start)
    }
}

func formatDuration(_ duration: Duration) -> String {
    let value = duration.inSeconds
    return value >= 1 ? String(format: "%.0f s", value) : String(format: "%.0f ms", value * 1000)
}
