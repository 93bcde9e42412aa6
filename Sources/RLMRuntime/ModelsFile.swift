import Foundation
import RLM
import RLMProviders

/// A models file: names code may pass as `model=`, each placed on a provider of its own.
///
/// ```json
/// {
///   "models": {
///     "fast":  {"provider": "openai", "base_url": "https://openrouter.ai/api/v1", "model": "openai/gpt-4o-mini",
///               "key_env": "OPENROUTER_API_KEY"},
///     "judge": {"provider": "anthropic", "model": "claude-sonnet-4-5", "key_env": "ANTHROPIC_API_KEY",
///               "price": {"input": 3, "output": 15}}
///   }
/// }
/// ```
///
/// `provider` is `openai` (any OpenAI-compatible server) or `anthropic`; `model` defaults to the entry's name;
/// `base_url` to the provider's own; `key_env` names the environment variable holding the key (`NAME_FILE` works
/// too) — the key itself never belongs in the file. `context_window` (tokens) and `price` (USD per 1M tokens) are
/// optional. Every entry is callable by its name.
public struct ModelsFile: Sendable, Hashable {
    /// One entry.
    public struct Entry: Sendable, Hashable {
        /// The name code uses.
        public var name: String
        /// The wire format.
        public var provider: ProviderKind
        /// The API base URL; `nil` uses the provider's own.
        public var baseURL: String?
        /// The model name sent to the server.
        public var model: String
        /// The environment variable holding the key.
        public var keyVariable: String?
        /// The context window in tokens.
        public var contextWindow: Int?
        /// USD per 1M input and output tokens, when the file gives it.
        public var price: ModelPricing.Price?
    }

    /// The entries, by name.
    public var entries: [String: Entry]

    /// Reads and checks a models file.
    /// - Parameter path: the file.
    /// - Throws: ``RuntimeError`` of kind `.usage` naming the file, the entry and what is wrong.
    public static func load(path: String) throws -> ModelsFile {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw RuntimeError.usage("cannot read the models file \(path): \(error.localizedDescription)")
        }
        return try parse(data, source: path)
    }

    /// Parses a models file's bytes.
    /// - Parameters:
    ///   - data: the JSON.
    ///   - source: the name used in errors.
    public static func parse(_ data: Data, source: String) throws -> ModelsFile {
        func fail(_ message: String) -> RuntimeError { RuntimeError.usage("models file \(source): \(message)") }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let models = root["models"] as? [String: Any]
        else {
            throw fail("expected a JSON object {\"models\": {\"NAME\": {\"provider\": …}}}")
        }
        var entries = [String: Entry]()
        for (name, value) in models {
            guard !name.isEmpty, name.count <= 200, !name.contains(where: \.isNewline) else {
                throw fail("model names must be 1–200 characters on one line")
            }
            guard let object = value as? [String: Any] else { throw fail("'\(name)' must be an object") }
            if object["key"] != nil || object["api_key"] != nil {
                throw fail("'\(name)': keys do not belong in a file; name the variable with \"key_env\"")
            }
            let known: Set = ["provider", "base_url", "model", "key_env", "context_window", "price"]
            if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
                throw fail("'\(name)': unknown field '\(unknown)' (known: \(known.sorted().joined(separator: ", ")))")
            }
            guard let providerText = object["provider"] as? String,
                let provider = ProviderKind(rawValue: providerText), provider != .local
            else {
                throw fail("'\(name)': \"provider\" must be \"openai\" or \"anthropic\"")
            }
            func string(_ key: String) throws -> String? {
                guard let value = object[key] else { return nil }
                guard let text = value as? String, !text.isEmpty else {
                    throw fail("'\(name)': \"\(key)\" must be a non-empty string")
                }
                return text
            }
            var entry = Entry(
                name: name, provider: provider, baseURL: try string("base_url"), model: try string("model") ?? name,
                keyVariable: try string("key_env"), contextWindow: nil, price: nil)
            if let window = object["context_window"] {
                guard let tokens = window as? Int, tokens >= 256 else {
                    throw fail("'\(name)': \"context_window\" must be a whole number of tokens ≥ 256")
                }
                entry.contextWindow = tokens
            }
            if let price = object["price"] {
                guard let price = price as? [String: Any], let input = (price["input"] as? NSNumber)?.doubleValue,
                    let output = (price["output"] as? NSNumber)?.doubleValue, input >= 0, output >= 0
                else {
                    throw fail("'\(name)': \"price\" must be {\"input\": USD per 1M, \"output\": USD per 1M}")
                }
                entry.price = ModelPricing.Price(input: input, output: output)
            }
            if let variable = entry.keyVariable,
                variable.contains(where: { !($0.isLetter || $0.isNumber || $0 == "_") })
            {
                throw fail("'\(name)': \"key_env\" must be an environment variable name")
            }
            entries[name] = entry
        }
        return ModelsFile(entries: entries)
    }
}
