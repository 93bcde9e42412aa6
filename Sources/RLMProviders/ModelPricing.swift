// The bundled price table is data, in Resources/prices.json:
//
//     {
//       "_comment": "…",                       keys starting with "_" are comments, anywhere
//       "version": 1,                          the format version; only 1 exists
//       "as_of": "2026-11",                    when the prices were read
//       "currency": "USD",                     only USD
//       "unit": "per 1M tokens",               only per million tokens
//       "models": {
//         "gpt-4o": {"input": 2.5, "output": 10, "provider": "openai"},
//         …
//       }
//     }
//
// `input` and `output` are USD per million tokens, ≥ 0; `provider` is informational. A user's table (`--prices FILE`)
// uses the same format, or the older flat `{"gpt-4o": {"input": 2.5, "output": 10}, …}`, and is merged over the
// bundled one. Update the JSON, not this file, when prices change.

import Foundation
import RLM

/// Prices of models in US dollars per million tokens, to turn ``TokenUsage`` into cost.
///
/// Lookup tries the exact name, then the longest known prefix (so `gpt-4o-mini-2024-07-18` finds `gpt-4o-mini`, not
/// `gpt-4o`), then the same for the part after the last `/` (`openai/gpt-4o`). Names are compared
/// case-insensitively, with `.` and `-` equal (OpenRouter's `claude-sonnet-4.5` is Anthropic's `claude-sonnet-4-5`).
/// A prefix that ends in a version number does not match a later version: `claude-opus-4` prices
/// `claude-opus-4-20250514` and `claude-opus-4-0` but not `claude-opus-4-6`, and `gpt-5` does not price `gpt-5.4`:
/// an unknown price is safer than a wrong one.
///
/// ``defaults`` is the bundled table; no name is free by itself (a `llama-…` on a paid gateway costs money), so
/// callers that know a model is local price it themselves.
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
    /// The same entries by ``comparable(_:)`` name, which lookups use.
    private var index: [String: Price]

    /// - Parameter prices: model name (or prefix) → price.
    public init(_ prices: [String: Price] = [:]) {
        self.prices = Dictionary(prices.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { _, last in last })
        // Sorted, so that two spellings of one name (`gpt-4.1`, `gpt-4-1`) resolve the same way on every run.
        var index: [String: Price] = [:]
        for (name, price) in self.prices.sorted(by: { $0.key < $1.key }) { index[Self.comparable(name)] = price }
        self.index = index
    }

    /// The bundled table of published list prices (`Resources/prices.json`, see the comment at the top of this
    /// file), loaded once.
    public static let defaults: ModelPricing = {
        guard let data = bundledTable() else {
            preconditionFailure("RLMProviders: the bundled price table prices.json is missing from the resources")
        }
        do {
            return try parse(json: String(decoding: data, as: UTF8.self))
        } catch {
            // The file ships with the library and a test loads it: this is a build mistake, not a user's.
            preconditionFailure("RLMProviders: the bundled price table prices.json is malformed: \(error)")
        }
    }()

    /// The bytes of `Resources/prices.json`.
    /// The table is compiled into the binary (`.embedInCode`), so an installed `rlm` needs no resource bundle.
    static func bundledTable() -> Data? { Data(PackageResources.prices_json) }

    /// The price of a model.
    /// - Parameter model: the model name as the server reports it.
    /// - Returns: the price, or `nil` when the table knows no such model or prefix.
    public func price(for model: String) -> Price? {
        let name = Self.comparable(model)
        if let price = lookup(name) { return price }
        if let slash = name.lastIndex(of: "/") { return lookup(String(name[name.index(after: slash)...])) }
        return nil
    }

    private func lookup(_ name: String) -> Price? {
        guard !name.isEmpty else { return nil }
        if let exact = index[name] { return exact }
        let match = index.keys
            .filter { name.hasPrefix($0) && Self.extends($0, with: name.dropFirst($0.count)) }
            .max { $0.count < $1.count }
        return match.flatMap { index[$0] }
    }

    /// Whether `rest` after `prefix` names a snapshot or variant of the same model rather than a later version.
    /// After a prefix ending in a digit, a further digit (`gpt-4` → `gpt-40`) or a short number segment
    /// (`claude-opus-4` → `-6`, `gpt-5` → `-4` from `gpt-5.4`) is a different model; a date (`-20250514`,
    /// `-2024-07-18`) and the `-0` alias are the same one.
    private static func extends(_ prefix: String, with rest: Substring) -> Bool {
        guard let last = prefix.last, last.isASCII, last.isNumber, let first = rest.first else { return true }
        if first.isASCII && first.isNumber { return false }
        guard first == "-" || first == "_" else { return true }
        let digits = rest.dropFirst().prefix { $0.isASCII && $0.isNumber }
        guard (1...2).contains(digits.count) else { return true }
        return digits.allSatisfy { $0 == "0" }
    }

    /// A name as lookups compare it: lowercased, trimmed, `.` read as `-`.
    static func comparable(_ name: String) -> String {
        name.lowercased().trimmingCharacters(in: .whitespaces).replacingOccurrences(of: ".", with: "-")
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
    /// Names equal but for case or `.`/`-` count as equal.
    /// - Parameter other: the entries to add.
    public func merging(_ other: ModelPricing) -> ModelPricing {
        let replaced = Set(other.prices.keys.map(Self.comparable))
        var merged = prices.filter { !replaced.contains(Self.comparable($0.key)) }
        merged.merge(other.prices) { _, new in new }
        return ModelPricing(merged)
    }

    /// Parses a price table: the versioned format of the bundled table (see the top of this file) or the older flat
    /// `{"model-name": {"input": 0.15, "output": 0.6}, …}`; prices in USD per million tokens. Keys starting with `_`
    /// are comments.
    /// - Parameter json: the JSON text.
    /// - Returns: the table.
    /// - Throws: ``LLMError`` of kind `.configuration` naming the key and what is wrong with it.
    public static func parse(json: String) throws -> ModelPricing {
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8))
        } catch {
            throw invalid("is not valid JSON (\(decodingProblem(error)))")
        }
        guard case .object(let object) = root else {
            throw invalid(
                #"must be a JSON object like {"version": 1, "models": {"gpt-4o": {"input": 2.5, "output": 10}}}"#)
        }
        let isVersioned = object["version"] != nil || object["models"] != nil
        guard isVersioned else { return ModelPricing(try entries(object, at: "")) }

        for key in object.keys.sorted() where !key.hasPrefix("_") {
            guard ["version", "as_of", "currency", "unit", "models"].contains(key) else {
                throw invalid(
                    #"has an unknown key "\#(key)" (expected "version", "as_of", "currency", "unit", "models")"#)
            }
        }
        if let version = object["version"] {
            guard case .int(1) = version else {
                throw invalid(#""version" is \#(describe(version)); this build reads version 1"#)
            }
        }
        if let asOf = object["as_of"], asOf.stringValue == nil {
            throw invalid(#""as_of" must be a string like "2026-11", not \#(describe(asOf))"#)
        }
        if let currency = object["currency"], currency.stringValue?.uppercased() != "USD" {
            throw invalid(#""currency" is \#(describe(currency)); prices must be in "USD""#)
        }
        if let unit = object["unit"] {
            let words = unit.stringValue?.lowercased().split(separator: " ").joined(separator: " ")
            guard ["per 1m tokens", "per million tokens"].contains(words ?? "") else {
                throw invalid(#""unit" is \#(describe(unit)); prices must be "per 1M tokens""#)
            }
        }
        guard let models = object["models"] else { throw invalid(#"has "version" but no "models""#) }
        guard case .object(let table) = models else {
            throw invalid(
                #""models" must be an object of model name → {"input", "output"}, not \#(describe(models))"#)
        }
        return ModelPricing(try entries(table, at: "models."))
    }

    private static func entries(_ table: [String: JSONValue], at path: String) throws -> [String: Price] {
        var prices: [String: Price] = [:]
        for (model, entry) in table.sorted(by: { $0.key < $1.key }) where !model.hasPrefix("_") {
            let key = "\(path)\"\(model)\""
            guard !model.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw invalid("has an empty model name at \(path.isEmpty ? "the top level" : path)")
            }
            guard case .object(let fields) = entry else {
                throw invalid(
                    #"\#(key) must be an object like {"input": 0.15, "output": 0.6} (USD per 1M tokens), not \#(describe(entry))"#
                )
            }
            func amount(_ field: String) throws -> Double {
                guard let value = fields[field] else {
                    throw invalid(#"\#(key) has no "\#(field)" price (USD per 1M tokens)"#)
                }
                let number: Double
                switch value {
                case .int(let int): number = Double(int)
                case .double(let double): number = double
                default:
                    throw invalid(#"\#(key).\#(field) must be a number (USD per 1M tokens), not \#(describe(value))"#)
                }
                guard number.isFinite, number >= 0 else {
                    throw invalid(#"\#(key).\#(field) must be zero or more, not \#(number)"#)
                }
                return number
            }
            let price = Price(input: try amount("input"), output: try amount("output"))
            if let provider = fields["provider"], provider.stringValue == nil {
                throw invalid(#"\#(key).provider must be a string, not \#(describe(provider))"#)
            }
            prices[model] = price
        }
        return prices
    }

    private static func invalid(_ problem: String) -> LLMError {
        LLMError(.configuration, "the price table \(problem)")
    }

    /// A short rendering of a JSON value for error messages.
    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let bool): return "\(bool)"
        case .int(let int): return "\(int)"
        case .double(let double): return "\(double)"
        case .string(let string): return "\"\(string.prefix(40))\"" + (string.count > 40 ? "…" : "")
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// Where the JSON parser stopped, when it says.
    private static func decodingProblem(_ error: any Error) -> String {
        guard case DecodingError.dataCorrupted(let context) = error else { return "\(error)" }
        if let underlying = context.underlyingError {
            return (underlying as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(underlying)"
        }
        return context.debugDescription
    }
}
