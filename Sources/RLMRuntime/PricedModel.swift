import RLM
import RLMProviders

/// A model with its own price: every completion it returns carries its cost, so a run that calls several models
/// counts each at its own price. A cost the provider reported itself (OpenRouter) is kept as it is.
struct PricedModel: LanguageModel {
    let base: any LanguageModel
    /// `nil` when the price is unknown (the cost falls back to the table, by the name the server reports).
    let price: ModelPricing.Price?

    var name: String { base.name }
    var contextWindow: Int? { base.contextWindow }
    var modelID: String? { base.modelID }

    func estimatedCost(of usage: TokenUsage) -> Double? { price?.cost(of: usage) }

    func complete(_ request: CompletionRequest) async throws -> Completion {
        priced(try await base.complete(request))
    }

    func stream(_ request: CompletionRequest) -> AsyncThrowingStream<CompletionChunk, any Error> {
        let upstream = base.stream(request)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await chunk in upstream {
                        switch chunk {
                        case .text: continuation.yield(chunk)
                        case .done(let completion): continuation.yield(.done(priced(completion)))
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private func priced(_ completion: Completion) -> Completion {
        guard completion.reportedCostUSD == nil, let price else { return completion }
        var completion = completion
        completion.reportedCostUSD = price.cost(of: completion.usage)
        return completion
    }
}
