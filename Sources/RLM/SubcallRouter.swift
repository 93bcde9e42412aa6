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

    func handle(_ request: SubcallRequest) async throws -> SubcallResponse {
        switch request {
        case .llmQuery(let prompt, let name):
            let model: any LanguageModel
            switch configuration.model(named: name) {
            case .success(let found): model = found
            case .failure(let refusal): return .text(refusal.message)
            }
            try await tracker.beginSubcalls(1)
            await events.emit(
                .subcall, depth: depth,
                data: ["call": "llm_query", "prompt": cut(prompt), "model": name ?? model.name])
            return .text(try await query(prompt, model: model))
        case .llmQueryBatched(let prompts, let name):
            let model: any LanguageModel
            switch configuration.model(named: name) {
            case .success(let found): model = found
            case .failure(let refusal): return .batch(Array(repeating: refusal.message, count: prompts.count))
            }
            try await tracker.beginSubcalls(prompts.count)
            await events.emit(
                .subcall, depth: depth,
                data: ["call": "llm_query_batched", "count": "\(prompts.count)", "model": name ?? model.name])
            return .batch(try await queryBatch(prompts, model: model))
        case .rlmQuery(let prompt, let context, let name):
            // A child RLM is driven by the named model, or by the root model like its parent.
            var childConfiguration = configuration
            if let name {
                switch configuration.model(named: name) {
                case .success(let found): childConfiguration.rootModel = found
                case .failure(let refusal): return .text(refusal.message)
                }
            }
            try await tracker.beginSubcalls(1)
            let canRecurse = depth + 1 <= configuration.budget.maxDepth
            await events.emit(
                .subcall, depth: depth,
                data: [
                    "call": "rlm_query", "prompt": cut(prompt), "recursed": "\(canRecurse)",
                    "model": name ?? childConfiguration.rootModel.name,
                ])
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
                return .text(try await query(text, model: model))
            }
            // Every child holds a sandbox: the run's cap on live sandboxes bounds fan-out through threads or recursion.
            guard await tracker.acquireChildSlot(timeout: configuration.cellTimeout) else {
                return .text(
                    "Error: rlm_query was not started: \(configuration.budget.maxLiveSandboxes) sandboxes are already "
                        + "alive in this run and none freed up in time. Run fewer rlm_query calls at once.")
            }
            let child = RLMLoop(
                configuration: childConfiguration, context: childContext, depth: depth + 1, events: events)
            let outcome: RLMLoop.Outcome
            do {
                outcome = try await child.answer(query: prompt, tracker: tracker)
            } catch let refused as ChildCallRefused {
                // A child's call that would cross the budget ends the child, not the run: the parent's code reads why.
                await child.close()
                await tracker.releaseChildSlot()
                return .text("Error: the sub-RLM stopped: its next model call was not sent: \(refused.reason.message).")
            } catch {
                await child.close()
                await tracker.releaseChildSlot()
                throw error
            }
            await child.close()
            await tracker.releaseChildSlot()
            switch outcome {
            case .answered(let answer): return .text(answer)
            case .noAnswer:
                return .text("Error: the sub-RLM ran out of steps without an answer.")
            }
        }
    }

    /// One `llm_query`. A prompt that cannot fit the sub-model's window, or that would cross the remaining token or
    /// cost budget, comes back as an error string the code can read — and is never sent: the model's fix is to split
    /// its input. The call's share of the budget is reserved before it is sent (so concurrent calls cannot together
    /// overshoot) and settled with the provider's real usage after.
    func query(_ prompt: String, model: any LanguageModel) async throws -> String {
        let promptTokens = estimateTokens(prompt)
        let reserve = min(configuration.maxOutputTokens ?? 1024, 1024)
        if let window = model.contextWindow, promptTokens + reserve > window {
            return Self.overflowMessage(tokens: promptTokens, window: window, reserve: reserve)
        }
        let reservation: BudgetTracker.Reservation
        let maxOutput: Int?
        switch await Self.reserve(
            promptTokens: promptTokens, model: model, configuration: configuration, tracker: tracker)
        {
        case .refused(let reason):
            return "Error: this call was not sent: \(reason.message). Send a shorter prompt or fewer calls."
        case .reserved(let granted, let cap):
            reservation = granted
            maxOutput = cap
        }
        do {
            let completion = try await model.complete(
                CompletionRequest(messages: [.user(prompt)], maxOutputTokens: maxOutput))
            await tracker.settle(
                reservation, usage: completion.usage, cost: configuration.cost(of: completion), isSubcall: true)
            return completion.text
        } catch let error as LLMError where error.kind == .contextOverflow {
            await tracker.release(reservation)
            let window = model.contextWindow ?? 0
            return Self.overflowMessage(tokens: promptTokens, window: window, reserve: reserve)
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

    func queryBatch(_ prompts: [String], model: any LanguageModel) async throws -> [String] {
        let limit = max(1, configuration.batchConcurrency)
        return try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var answers = [String](repeating: "", count: prompts.count)
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

func cut(_ text: String, _ limit: Int = 2000) -> String {
    Prompts.headTail(text, limit: limit)
}

/// A child RLM's model call would cross the run's budget: the child stops and its parent's cell is told why.
struct ChildCallRefused: Error {
    var reason: BudgetExhausted
}
