import Foundation
import RLM
import RLMLocal
import RLMProviders

/// Starts (or reuses) the local llama.cpp server for `name` and hands an OpenAI-compatible client for it to `body`.
func withLocalModel<T: Sendable>(
    named name: String, _ body: (any LanguageModel, (any LanguageModel)?) async throws -> T
) async throws -> T {
    throw LocalModelError.serverFailed("the local provider is not wired yet")
}
