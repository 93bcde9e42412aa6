import Foundation
import RLM

/// Prices of models in US dollars per million tokens, to turn ``TokenUsage`` into cost.
///
/// Lookup tries the exact name, then the longest known prefix (so `gpt-4o-mini-2024-07-18` finds `gpt-4o-mini`, not
/// `gpt-4o`), then the same for the part after a `/` (`openai/gpt-4o`). Names are compared case-insensitively.
public struct ModelPricing: Sendable, Hashable {
    /// One model's prices.
    public struct Price: Sendable, Hashable, Codable {
        /// USD per million input (prompt) tokens.
        public var input: Double
        /// USD per million output (generated) tokens.
        public var output: Double

        /// - Parameters:
        ///   - input: USD per million input tokens.
        ///   - output: USD per million output tokens.
        public init(input: Double, output: Double) {
            self.input = input
            self.output = output
        }

        /// A model that costs nothing (a local one).
        public static let free = Price(input: 0, output: 0)

        /// The cost of `usage` at this price, in USD.
        /// - Parameter usage: the tokens used.
        public func cost(of usage: TokenUsage) -> Double {
            (Double(usage.inputTokens) * input + Double(usage.outputTokens) * output) / 1e6
        }
    }

    /// The table, by lowercased model name or name prefix.
    public private(set) var prices: [String: Price]

    /// - Parameter prices: model name (or prefix) → price.
    public init(_ prices: [String: Price] = [:]) {
        self.prices = Dictionary(prices.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { _, last in last })
    }

    /// Published list prices of common hosted models (as of 2025), and zero for names of local models.
    public static let defaults = ModelPricing([
        "gpt-4o": Price(input: 2.50, output: 10.00),
        "gpt-4o-mini": Price(input: 0.15, output: 0.60),
        "gpt-4.1": Price(input: 2.00, output: 8.00),
        "gpt-4.1-mini": Price(input: 0.40, output: 1.60),
        "gpt-4.1-nano": Price(input: 0.10, output: 0.40),
        "o3-mini": Price(input: 1.10, output: 4.40),
        "claude-3-5-sonnet": Price(input: 3.00, output: 15.00),
        "claude-3-7-sonnet": Price(input: 3.00, output: 15.00),
        "claude-3-5-haiku": Price(input: 0.80, output: 4.00),
        "claude-3-haiku": Price(input: 0.25, output: 1.25),
        "claude-sonnet-4": Price(input: 3.00, output: 15.00),
        "claude-opus-4": Price(input: 15.00, output: 75.00),
        "local": .free,
        "llama": .free,
        "qwen": .free,
        "gemma": .free,
        "phi-": .free,
    ])

    /// The price of a model.
    /// - Parameter model: the model name as the server reports it.
    /// - Returns: the price, or `nil` when the table knows no such model or prefix.
    public func price(for model: String) -> Price? {
        let name = model.lowercased().trimmingCharacters(in: .whitespaces)
        if let price = lookup(name) { return price }
        if let slash = name.lastIndex(of: "/") { return lookup(String(name[name.index(after: slash)...])) }
        return nil
    }

    private func lookup(_ name: String) -> Price? {
        guard !name.isEmpty else { return nil }
        if let exact = prices[name] { return exact }
        let match = prices.keys.filter { name.hasPrefix($0) }.max { $0.count < $1.count }
        return match.flatMap { prices[$0] }
    }

    /// The cost of `usage` on `model`, in USD.
    /// - Parameters:
    ///   - usage: the tokens used.
    ///   - model: the model name.
    /// - Returns: the cost, or `nil` when the model's price is unknown.
    public func cost(of usage: TokenUsage, model: String) -> Double? {
        price(for: model)?.cost(of: usage)
    }

    /// This table with `other`'s entries added, `other` winning on equal names (a user table over the defaults).
    /// - Parameter other: the entries to add.
    public func merging(_ other: ModelPricing) -> ModelPricing {
        var merged = self
        merged.prices.merge(other.prices) { _, new in new }
        return merged
    }

    /// Parses a user's price table: `{"model-name": {"input": 0.15, "output": 0.6}, …}` (USD per million tokens).
    /// - Parameter json: the JSON text.
    /// - Returns: the table.
    /// - Throws: ``LLMError`` of kind `.configuration` naming what is wrong.
    public static func parse(json: String) throws -> ModelPricing {
        guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) else {
            throw LLMError(.configuration, "the price table is not valid JSON")
        }
        guard let table = object as? [String: Any] else {
            throw LLMError(
                .configuration,
                #"the price table must be a JSON object like {"model": {"input": 0.15, "output": 0.6}}"#
            )
        }
        var prices: [String: Price] = [:]
        for (model, entry) in table {
            guard let entry = entry as? [String: Any],
                let input = (entry["input"] as? NSNumber)?.doubleValue,
                let output = (entry["output"] as? NSNumber)?.doubleValue
            else {
                throw LLMError(
                    .configuration,
                    "the price of \(model) must be an object with numbers \"input\" and \"output\" (USD per 1M tokens)"
                )
            }
            guard input.isFinite, output.isFinite, input >= 0, output >= 0 else {
                throw LLMError(.configuration, "the price of \(model) must be zero or more")
            }
            prices[model] = Price(input: input, output: output)
        }
        return ModelPricing(prices)
    }
}
