import Foundation
import RLM
import RLMProviders
import Testing

@Suite("ModelPricing")
struct ModelPricingTests {
    typealias Price = ModelPricing.Price

    @Test func theBundledTableLoadsAndPricesTheNamesPeopleUse() throws {
        let table = ModelPricing.defaults
        #expect(table.price(for: "gpt-4o-mini-2024-07-18") == Price(input: 0.15, output: 0.60))
        #expect(table.price(for: "anthropic/claude-sonnet-4-5") == Price(input: 3, output: 15))
        #expect(table.price(for: "gemini-2.5-flash") == Price(input: 0.30, output: 2.50))
    }

    static let required = [
        "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o3",
        "o3-mini", "o4-mini", "o1",
        "claude-opus-4-5", "claude-opus-4-1", "claude-opus-4", "claude-sonnet-4-5", "claude-sonnet-4",
        "claude-haiku-4-5",
        "claude-3-7-sonnet", "claude-3-5-sonnet", "claude-3-5-haiku", "claude-3-haiku",
        "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash", "gemini-2.0-flash-lite",
        "gemini-1.5-pro", "gemini-1.5-flash",
    ]

    @Test(arguments: required)
    func theBundledTableHasAPositivePriceFor(_ model: String) throws {
        let price = try #require(ModelPricing.defaults.prices[model], "\(model) is missing from prices.json")
        #expect(price.input > 0 && price.output > 0)
        #expect(price.output >= price.input)
    }

    @Test func theBundledTableMakesNoModelFreeByItsName() {
        for (model, price) in ModelPricing.defaults.prices {
            #expect(price.input > 0 && price.output > 0, "\(model) is priced at zero")
        }
    }

    @Test(arguments: ["qwen2.5-coder", "qwen2.5-7b-instruct", "llama-3.1-8b-instruct", "gemma-2-9b", "phi-3", "local"])
    func openWeightNamesAreUnknown(_ model: String) {
        #expect(ModelPricing.defaults.price(for: model) == nil)
    }

    @Test(arguments: [
        ("gpt-4o-mini", 0.15),
        ("gpt-4o-mini-2024-07-18", 0.15),
        ("gpt-4o-2024-08-06", 2.50),
        ("gpt-4.1-mini-2025-04-14", 0.40),
        ("gpt-4.1-2025-04-14", 2.00),
        ("gpt-5-2025-08-07", 1.25),
        ("gpt-5-mini-2025-08-07", 0.25),
        ("o3-mini-2025-01-31", 1.10),
        ("o3-2025-04-16", 2.00),
        ("claude-3-5-haiku-20241022", 0.80),
        ("claude-3-haiku-20240307", 0.25),
        ("claude-sonnet-4-20250514", 3.00),
        ("claude-opus-4-0", 15.00),
        ("claude-opus-4-20250514", 15.00),
        ("claude-opus-4-5-20251101", 5.00),
        ("claude-sonnet-4-5@20250929", 3.00),
        ("openai/gpt-4o-mini", 0.15),
        ("GPT-4O-MINI", 0.15),
        // OpenRouter writes versions with a dot.
        ("anthropic/claude-opus-4.5", 5.00),
        ("anthropic/claude-3.5-sonnet", 3.00),
        ("google/gemini-2.5-flash-lite", 0.10),
        ("models/gemini-2.0-flash-001", 0.10),
        ("gemini-1.5-flash-8b", 0.0375),
    ])
    func findsTheLongestPrefix(_ model: String, _ input: Double) {
        #expect(ModelPricing.defaults.price(for: model)?.input == input)
    }

    /// A later version is a different model with its own price: better unknown than wrong.
    @Test(arguments: ["claude-opus-4-7", "claude-sonnet-4-7-20270101", "gpt-5.4", "gpt-5-4-mini", "o30"])
    func aPrefixEndingInAVersionDoesNotPriceALaterVersion(_ model: String) {
        #expect(ModelPricing.defaults.price(for: model) == nil)
    }

    @Test func unknownModelsHaveNoPrice() {
        #expect(ModelPricing.defaults.price(for: "mystery-model") == nil)
        #expect(ModelPricing.defaults.price(for: "") == nil)
        #expect(ModelPricing.defaults.cost(of: TokenUsage(inputTokens: 10), model: "mystery-model") == nil)
    }

    @Test func costIsTokensTimesPricePerMillion() throws {
        let cost = try #require(
            ModelPricing.defaults.cost(
                of: TokenUsage(inputTokens: 1_000_000, outputTokens: 500_000),
                model: "gpt-4o-mini"
            )
        )
        #expect(abs(cost - (0.15 + 0.30)) < 1e-9)
        #expect(Price.free.cost(of: TokenUsage(inputTokens: 5, outputTokens: 5)) == 0)
    }

    @Test func aFlatUserTableParsesAndWins() throws {
        let user = try ModelPricing.parse(
            json: #"{"my-model": {"input": 1, "output": 2.5}, "gpt-4o": {"input": 9, "output": 9}}"#)
        #expect(user.price(for: "my-model-v2") == Price(input: 1, output: 2.5))
        let merged = ModelPricing.defaults.merging(user)
        #expect(merged.price(for: "gpt-4o")?.input == 9)
        #expect(merged.price(for: "gpt-4o-2024-08-06")?.input == 9)
        #expect(merged.price(for: "gpt-4o-mini")?.input == 0.15)
    }

    @Test func aVersionedUserTableParsesAndWins() throws {
        let user = try ModelPricing.parse(
            json: #"""
                {
                  "_comment": "my gateway's prices",
                  "version": 1, "as_of": "2026-11", "currency": "USD", "unit": "per 1M tokens",
                  "models": {
                    "llama-3.1-8b": {"input": 0.02, "output": 0.05, "provider": "gateway"},
                    "GPT-4.1": {"input": 1, "output": 4},
                    "_note": "ignored"
                  }
                }
                """#)
        let merged = ModelPricing.defaults.merging(user)
        #expect(merged.price(for: "meta-llama/llama-3.1-8b-instruct") == Price(input: 0.02, output: 0.05))
        #expect(merged.price(for: "gpt-4.1") == Price(input: 1, output: 4))
        #expect(merged.price(for: "gpt-4.1-mini")?.input == 0.40)
        #expect(merged.prices["_note"] == nil)
    }

    @Test func anOverrideSpelledWithDashesReplacesTheDottedName() throws {
        let user = try ModelPricing.parse(json: #"{"gpt-4-1": {"input": 7, "output": 7}}"#)
        #expect(ModelPricing.defaults.merging(user).price(for: "gpt-4.1-2025-04-14")?.input == 7)
    }

    @Test(arguments: [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (#"{"m": 3}"#, #""m" must be an object"#),
        (#"{"m": {"input": 1}}"#, #""m" has no "output" price"#),
        (#"{"m": {"input": "1", "output": 2}}"#, #""m".input must be a number"#),
        (#"{"m": {"input": -1, "output": 2}}"#, #""m".input must be zero or more"#),
        (#"{"m": {"input": 1, "output": 2, "provider": 3}}"#, #""m".provider must be a string"#),
        (#"{"version": 2, "models": {}}"#, #""version" is 2"#),
        (#"{"version": "1", "models": {}}"#, #""version" is "1""#),
        (#"{"version": 1}"#, #"no "models""#),
        (#"{"version": 1, "models": []}"#, #""models" must be an object"#),
        (#"{"version": 1, "modles": {}}"#, #"unknown key "modles""#),
        (#"{"version": 1, "currency": "EUR", "models": {}}"#, #""currency" is "EUR""#),
        (#"{"version": 1, "unit": "per 1K tokens", "models": {}}"#, #""unit" is "per 1K tokens""#),
        (#"{"version": 1, "models": {"gpt": {"input": 1, "output": true}}}"#, #"models."gpt".output must be a number"#),
        (#"{"version": 1, "models": {"gpt": {"input": 1, "output": null}}}"#, #"models."gpt".output must be a number"#),
    ])
    func aMalformedTableSaysWhichKeyAndWhatIsWrong(_ json: String, _ expected: String) {
        let error = #expect(throws: LLMError.self) { try ModelPricing.parse(json: json) }
        #expect(error?.kind == .configuration)
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "")")
    }
}
