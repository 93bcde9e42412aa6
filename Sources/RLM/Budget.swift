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
        var totalTokens: Int { inputTokens + outputTokens }
    }

    /// Tokens and cost reserved by calls in flight.
    private(set) var reserved = Reservation(inputTokens: 0, outputTokens: 0, cost: 0)

    /// The most output tokens a call with `promptTokens` may be allowed, given what is spent and reserved; `nil` when
    /// no token limit applies.
    func outputAllowance(promptTokens: Int) -> Int? {
        var allowance: Int?
        func limit(_ value: Int) { allowance = min(allowance ?? value, value) }
        if let max = budget.maxTokens {
            limit(max - usage.tokens.totalTokens - reserved.totalTokens - promptTokens)
        }
        if let max = budget.maxOutputTokens { limit(max - usage.tokens.outputTokens - reserved.outputTokens) }
        return allowance
    }

    /// Reserves a call's share of the budget before it is sent.
    /// - Returns: `nil` when reserved, or the limit the call would cross and why (it is then not sent).
    func reserve(_ reservation: Reservation) -> BudgetExhausted? {
        if let exhausted { return exhausted }
        if let refusal = refusal(for: reservation) { return refusal }
        reserved.inputTokens += reservation.inputTokens
        reserved.outputTokens += reservation.outputTokens
        reserved.cost += reservation.cost
        return nil
    }

    private func refusal(for reservation: Reservation) -> BudgetExhausted? {
        func refuse(_ limit: BudgetLimit, _ message: String) -> BudgetExhausted {
            BudgetExhausted(limit: limit, message: message)
        }
        if let max = budget.maxTokens,
            usage.tokens.totalTokens + reserved.totalTokens + reservation.totalTokens > max
        {
            let left = max - usage.tokens.totalTokens - reserved.totalTokens
            return refuse(
                .tokens,
                "this call needs about \(reservation.totalTokens) tokens (prompt and reply) and the run's token "
                    + "budget has \(Swift.max(0, left)) left")
        }
        if let max = budget.maxInputTokens,
            usage.tokens.inputTokens + reserved.inputTokens + reservation.inputTokens > max
        {
            return refuse(
                .inputTokens,
                "this prompt is about \(reservation.inputTokens) tokens and the run's input-token budget has "
                    + "\(Swift.max(0, max - usage.tokens.inputTokens - reserved.inputTokens)) left")
        }
        if let max = budget.maxCostUSD, usage.costUSD + reserved.cost + reservation.cost > max {
            return refuse(
                .cost,
                String(
                    format: "this call may cost up to $%.4f and the run's cost budget has $%.4f left",
                    reservation.cost, Swift.max(0, max - usage.costUSD - reserved.cost)))
        }
        return nil
    }

    /// Ends a reservation; the call's real usage is recorded with ``record(_:cost:isSubcall:)``.
    func release(_ reservation: Reservation) {
        reserved.inputTokens -= reservation.inputTokens
        reserved.outputTokens -= reservation.outputTokens
        reserved.cost -= reservation.cost
    }

    /// Child sandboxes alive now, and children waiting for a slot.
    private var liveChildren = 0
    private var slotWaiters: [(id: UInt64, continuation: CheckedContinuation<Bool, Never>)] = []
    private var nextWaiter: UInt64 = 0

    /// Takes a slot for a child RLM's sandbox, waiting up to `timeout` for one to free up.
    /// - Returns: whether a slot was taken (then call ``releaseChildSlot()`` when the child is closed).
    func acquireChildSlot(timeout: Duration) async -> Bool {
        if liveChildren < budget.maxLiveSandboxes - 1 {
            liveChildren += 1
            return true
        }
        let id = nextWaiter
        nextWaiter += 1
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expireWaiter(id)
        }
        let granted = await withCheckedContinuation { continuation in
            slotWaiters.append((id, continuation))
        }
        timer.cancel()
        return granted
    }

    /// Gives a child's slot back, to the longest waiter if there is one.
    func releaseChildSlot() {
        if slotWaiters.isEmpty {
            liveChildren -= 1
        } else {
            slotWaiters.removeFirst().continuation.resume(returning: true)
        }
    }

    private func expireWaiter(_ id: UInt64) {
        guard let index = slotWaiters.firstIndex(where: { $0.id == id }) else { return }
        slotWaiters.remove(at: index).continuation.resume(returning: false)
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
        let slotWaiting = slotWaiters
        slotWaiters = []
        slotWaiting.forEach { $0.continuation.resume(returning: false) }
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
