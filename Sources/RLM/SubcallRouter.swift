import Foundation

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
            let childContext = context.map(Self.contextValue)
            guard canRecurse else {
                var text = prompt
                if let childContext, let rendered = Self.render(childContext) { text += "\n\n" + rendered }
                let model = name == nil ? configuration.subcallModel : childConfiguration.rootModel
                return .text(try await query(text, model: model))
            }
            let child = RLMLoop(
                configuration: childConfiguration, context: childContext, depth: depth + 1, events: events)
            let outcome = try await child.answer(query: prompt, tracker: tracker)
            await child.close()
            switch outcome {
            case .answered(let answer): return .text(answer)
            case .noAnswer:
                return .text("Error: the sub-RLM ran out of steps without an answer.")
            }
        }
    }

    /// One `llm_query`. A prompt that cannot fit the sub-model's window comes back as an error string the code can
    /// read, not as an exception: the model's fix is to split its input.
    func query(_ prompt: String, model: any LanguageModel) async throws -> String {
        let reserve = min(configuration.maxOutputTokens ?? 1024, 1024)
        if let window = model.contextWindow, estimateTokens(prompt) + reserve > window {
            return Self.overflowMessage(tokens: estimateTokens(prompt), window: window, reserve: reserve)
        }
        do {
            let completion = try await model.complete(
                CompletionRequest(messages: [.user(prompt)], maxOutputTokens: configuration.maxOutputTokens))
            await tracker.record(completion.usage, cost: configuration.cost(of: completion), isSubcall: true)
            return completion.text
        } catch let error as LLMError where error.kind == .contextOverflow {
            let window = model.contextWindow ?? 0
            return Self.overflowMessage(tokens: estimateTokens(prompt), window: window, reserve: reserve)
        }
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

    static func render(_ context: ContextValue) -> String? {
        switch context {
        case .text(let text): return text
        case .documents(let documents): return documents.joined(separator: "\n\n")
        case .json(let value):
            return (try? JSONEncoder().encode(value)).map { String(decoding: $0, as: UTF8.self) }
        }
    }
}

/// A rough token count: about three characters a token, which overestimates English prose and fits logs and code.
func estimateTokens(_ text: String) -> Int {
    (text.utf8.count + 2) / 3
}

func cut(_ text: String, _ limit: Int = 2000) -> String {
    Prompts.headTail(text, limit: limit)
}
