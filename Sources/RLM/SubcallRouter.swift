import Foundation
import Glibc

/// Answers the sandbox's sub-calls on the host: `llm_query` to the sub-model, `llm_query_batched` concurrently with a
/// limit, `rlm_query` to a child RLM one level deeper (a plain `llm_query` at the maximum depth). Budgets are charged
/// here, where the REPL cannot reach them.
struct SubcallRouter: SubcallHandler {
    let configuration: RLMConfiguration
    let tracker: BudgetTracker
    let depth: Int
    let events: EventEmitter
    /// The loop's iteration now: the cell making the call runs in it.
    let iteration: IterationCounter
    /// The loop's tokens and cost: every sub-call adds its own.
    let meter: UsageMeter

    /// What one sub-call spent and said, for its `subcall` event.
    struct Record: Sendable {
        var reply = ""
        var spent = UsageMeter.Spent()
        var error: String?

        mutating func add(_ outcome: QueryOutcome) {
            spent.inputTokens += outcome.inputTokens
            spent.outputTokens += outcome.outputTokens
            spent.costUSD = spent.costUSD.flatMap { sum in outcome.costUSD.map { sum + $0 } }
            if error == nil { error = outcome.error }
        }
    }

    /// One model call's text, usage, and the error it reports to the code (the text then says it too).
    struct QueryOutcome: Sendable {
        var text: String
        var inputTokens = 0
        var outputTokens = 0
        var costUSD: Double? = 0
        var error: String?
    }

    func handle(_ request: SubcallRequest) async throws -> SubcallResponse {
        let callID = events.calls.nextID()
        let iteration = iteration.value
        let started = ContinuousClock.now
        let call: String
        let prompts: [String]
        var modelName: String
        switch request {
        case .llmQuery(let prompt, let name):
            (call, prompts, modelName) = ("llm_query", [prompt], name ?? configuration.subcallModel.name)
        case .llmQueryBatched(let batch, let name):
            (call, prompts, modelName) = ("llm_query_batched", batch, name ?? configuration.subcallModel.name)
        case .rlmQuery(let prompt, _, let name):
            (call, prompts, modelName) = ("rlm_query", [prompt], name ?? configuration.rootModel.name)
        }
        await events.emit(
            .subcallStarted, depth: depth, iteration: iteration,
            data: [
                "call_id": .string(callID), "call": .string(call), "model": .string(modelName),
                "prompts": .int(prompts.count),
            ])
        var record = Record()
        func finish(_ response: SubcallResponse?, thrown: (any Error)? = nil) async {
            switch response {
            case .text(let text)?: record.reply = text
            case .batch(let texts)?: record.reply = texts.first ?? ""
            default: break
            }
            if let thrown { record.error = String(describing: thrown) }
            meter.add(record.spent)
            await events.emit(
                .subcall, depth: depth, iteration: iteration,
                data: [
                    "call_id": .string(callID), "call": .string(call), "model": .string(modelName),
                    "prompt": .string(prompts.first ?? ""), "reply": .string(record.reply),
                    "prompts": .int(prompts.count), "input_tokens": .int(record.spent.inputTokens),
                    "output_tokens": .int(record.spent.outputTokens), "cost_usd": JSONValue(record.spent.costUSD),
                    "latency_ms": JSONValue(milliseconds(since: started)), "error": JSONValue(record.error),
                ])
        }
        do {
            let response = try await route(request, callID: callID, model: &modelName, record: &record)
            await finish(response)
            return response
        } catch {
            await finish(nil, thrown: error)
            throw error
        }
    }

    private func route(
        _ request: SubcallRequest, callID: String, model modelName: inout String, record: inout Record
    ) async throws -> SubcallResponse {
        switch request {
        case .llmQuery(let prompt, let name):
            let model: any LanguageModel
            switch configuration.model(named: name) {
            case .success(let found): model = found
            case .failure(let refusal):
                record.error = refusal.message
                return .text(refusal.message)
            }
            modelName = name ?? model.name
            try await tracker.beginSubcalls(1)
            let outcome = try await query(prompt, model: model)
            record.add(outcome)
            return .text(outcome.text)
        case .llmQueryBatched(let prompts, let name):
            let model: any LanguageModel
            switch configuration.model(named: name) {
            case .success(let found): model = found
            case .failure(let refusal):
                record.error = refusal.message
                return .batch(Array(repeating: refusal.message, count: prompts.count))
            }
            modelName = name ?? model.name
            try await tracker.beginSubcalls(prompts.count)
            let outcomes = try await queryBatch(prompts, model: model)
            for outcome in outcomes { record.add(outcome) }
            return .batch(outcomes.map(\.text))
        case .rlmQuery(let prompt, let context, let name):
            // A child RLM is driven by the named model, or by the root model like its parent.
            var childConfiguration = configuration
            if let name {
                switch configuration.model(named: name) {
                case .success(let found): childConfiguration.rootModel = found
                case .failure(let refusal):
                    record.error = refusal.message
                    return .text(refusal.message)
                }
            }
            try await tracker.beginSubcalls(1)
            let canRecurse = depth + 1 <= configuration.budget.maxDepth
            let childContext: ContextSource? =
                switch context {
                case .value(let json): ContextSource(Self.contextValue(json))
                case .streamed(let streamed): streamed.source
                case nil: nil
                }
            guard canRecurse else {
                var text = prompt
                if let context, let rendered = Self.render(context) { text += "\n\n" + rendered }
                let model = name == nil ? configuration.subcallModel : childConfiguration.rootModel
                modelName = model.name
                let outcome = try await query(text, model: model)
                record.add(outcome)
                return .text(outcome.text)
            }
            // Every child holds a sandbox: the run's cap on live sandboxes bounds fan-out through threads or recursion.
            guard await tracker.acquireChildSlot(timeout: configuration.cellTimeout) else {
                let message =
                    "Error: rlm_query was not started: \(configuration.budget.maxLiveSandboxes) sandboxes are already "
                    + "alive in this run and none freed up in time. Run fewer rlm_query calls at once."
                record.error = message
                return .text(message)
            }
            // The child's events carry this call's id as their scope: the sub-call tree can be rebuilt from them.
            let child = RLMLoop(
                configuration: childConfiguration, context: childContext, depth: depth + 1,
                events: events.scoped(callID))
            let outcome: RLMLoop.Outcome
            do {
                outcome = try await child.answer(query: prompt, tracker: tracker, calls: events.calls)
            } catch let refused as ChildCallRefused {
                // A child's call that would cross the budget ends the child, not the run: the parent's code reads why.
                await child.close()
                await tracker.releaseChildSlot()
                record.spent = child.meter.total
                let message = "Error: the sub-RLM stopped: its next model call was not sent: \(refused.reason.message)."
                record.error = message
                return .text(message)
            } catch {
                await child.close()
                await tracker.releaseChildSlot()
                record.spent = child.meter.total
                throw error
            }
            await child.close()
            await tracker.releaseChildSlot()
            record.spent = child.meter.total
            switch outcome {
            case .answered(let answer): return .text(answer)
            case .noAnswer:
                let message = "Error: the sub-RLM ran out of steps without an answer."
                record.error = message
                return .text(message)
            }
        }
    }

    /// One `llm_query`. A prompt that cannot fit the sub-model's window, or that would cross the remaining token or
    /// cost budget, comes back as an error string the code can read — and is never sent: the model's fix is to split
    /// its input. The call's share of the budget is reserved before it is sent (so concurrent calls cannot together
    /// overshoot) and settled with the provider's real usage after.
    func query(_ prompt: String, model: any LanguageModel) async throws -> QueryOutcome {
        let promptTokens = estimateTokens(prompt)
        let reserve = min(configuration.maxOutputTokens ?? 1024, 1024)
        if let window = model.contextWindow, promptTokens + reserve > window {
            let message = Self.overflowMessage(tokens: promptTokens, window: window, reserve: reserve)
            return QueryOutcome(text: message, error: message)
        }
        let reservation: BudgetTracker.Reservation
        let maxOutput: Int?
        switch await Self.reserve(
            promptTokens: promptTokens, model: model, configuration: configuration, tracker: tracker)
        {
        case .refused(let reason):
            let message = "Error: this call was not sent: \(reason.message). Send a shorter prompt or fewer calls."
            return QueryOutcome(text: message, error: message)
        case .reserved(let granted, let cap):
            reservation = granted
            maxOutput = cap
        }
        do {
            let completion = try await model.complete(
                CompletionRequest(
                    messages: [.user(prompt)], maxOutputTokens: maxOutput, temperature: configuration.temperature))
            // Priced once: what the provider reported, else the table; `nil` (unknown) settles as 0.
            let cost = completion.reportedCostUSD ?? configuration.cost(completion.model, completion.usage)
            await tracker.settle(reservation, usage: completion.usage, cost: cost ?? 0, isSubcall: true)
            return QueryOutcome(
                text: completion.text, inputTokens: completion.usage.inputTokens,
                outputTokens: completion.usage.outputTokens, costUSD: cost)
        } catch let error as LLMError where error.kind == .contextOverflow {
            await tracker.release(reservation)
            let window = model.contextWindow ?? 0
            let message = Self.overflowMessage(tokens: promptTokens, window: window, reserve: reserve)
            return QueryOutcome(text: message, error: message)
        } catch {
            await tracker.release(reservation)
            throw error
        }
    }

    /// Reserves a call's tokens and cost before it is sent (see ``BudgetTracker/reserve(promptTokens:configuredMaxOutput:price:)``).
    static func reserve(
        promptTokens: Int, model: any LanguageModel, configuration: RLMConfiguration, tracker: BudgetTracker
    ) async -> BudgetTracker.ReservationOutcome {
        await tracker.reserve(
            promptTokens: promptTokens, configuredMaxOutput: configuration.maxOutputTokens,
            price: { usage in configuration.estimatedCost(of: usage, model: model) })
    }

    func queryBatch(_ prompts: [String], model: any LanguageModel) async throws -> [QueryOutcome] {
        let limit = max(1, configuration.batchConcurrency)
        return try await withThrowingTaskGroup(of: (Int, QueryOutcome).self) { group in
            var answers = [QueryOutcome](repeating: QueryOutcome(text: ""), count: prompts.count)
            var next = 0
            while next < min(limit, prompts.count) {
                let index = next
                group.addTask { (index, try await query(prompts[index], model: model)) }
                next += 1
            }
            while let (index, answer) = try await group.next() {
                answers[index] = answer
                if next < prompts.count {
                    let index = next
                    group.addTask { (index, try await query(prompts[index], model: model)) }
                    next += 1
                }
            }
            return answers
        }
    }

    static func overflowMessage(tokens: Int, window: Int, reserve: Int) -> String {
        let fits = max(0, (window - reserve) * 3)
        return "Error: this prompt is about \(tokens) tokens, more than the sub-model's window"
            + (window > 0 ? " of \(window) tokens" : "")
            + ". Split the text and send pieces of at most about \(fits) characters each."
    }

    static func contextValue(_ json: JSONValue) -> ContextValue {
        switch json {
        case .string(let text): return .text(text)
        case .array(let items) where items.allSatisfy({ $0.stringValue != nil }):
            return .documents(items.compactMap(\.stringValue))
        default: return .json(json)
        }
    }

    /// A child context as prompt text, for `rlm_query` at the depth limit (a plain query on prompt and context).
    /// A streamed context is read up to ``renderLimit`` bytes: no model window holds more, and the sub-model's
    /// window check refuses what does not fit.
    static func render(_ context: ChildContext) -> String? {
        switch context {
        case .value(let json):
            switch contextValue(json) {
            case .text(let text): return text
            case .documents(let documents): return documents.joined(separator: "\n\n")
            case .json(let value):
                return (try? JSONEncoder().encode(value)).map { String(decoding: $0, as: UTF8.self) }
            }
        case .streamed(let streamed):
            guard let file = streamed.source.files.first, let fd = try? file.openForReading() else { return nil }
            defer { close(fd) }
            var data = Data(count: min(file.size, renderLimit))
            let count = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            return String(decoding: data.prefix(max(0, count)), as: UTF8.self)
        }
    }

    /// The most bytes of a streamed child context put into a plain query's prompt.
    static let renderLimit = 16 << 20
}

/// A rough token count: about three characters a token, which overestimates English prose and fits logs and code.
func estimateTokens(_ text: String) -> Int {
    (text.utf8.count + 2) / 3
}

/// A child RLM's model call would cross the run's budget: the child stops and its parent's cell is told why.
struct ChildCallRefused: Error {
    var reason: BudgetExhausted
}
