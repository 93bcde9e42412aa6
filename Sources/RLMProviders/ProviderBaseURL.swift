import Foundation

/// Turns the base URL a user typed into the API root a wire format needs.
///
/// People paste base URLs in every shape: with or without `/v1`, with a trailing `/`, or the whole endpoint copied
/// from a curl example. Both model configurations route their ``OpenAIChatModel/Configuration/endpoint`` (and the
/// model-list URL) through here, so every caller accepts the same shapes.
///
/// | Typed | ``openAI(_:)`` | ``anthropic(_:)`` |
/// | --- | --- | --- |
/// | `http://h:8080`, `http://h:8080/` | `http://h:8080/v1` | `http://h:8080/v1` |
/// | `http://h:8080/v1/`, `…/v1/chat/completions` | `http://h:8080/v1` | — |
/// | `https://api.anthropic.com/v1/messages` | — | `https://api.anthropic.com/v1` |
/// | `https://openrouter.ai/api/v1` | unchanged | — |
/// | `https://generativelanguage.googleapis.com/v1beta/openai/` | without the final `/` | — |
///
/// A query (`?api-version=…`) is kept and stays at the end of every URL built from the root.
public enum ProviderBaseURL {
    /// The root of an OpenAI-compatible API, version segment included, without a trailing `/`:
    /// requests go to `root + "/chat/completions"` and `root + "/models"`.
    ///
    /// A pasted endpoint (`/chat/completions`, `/completions`, `/models`) is cut off. `/v1` is added only when no
    /// segment of the path is a version (`v1`, `v2`, `v1beta`…): gateways put their version anywhere in the prefix
    /// (OpenRouter's `/api/v1`, Gemini's `/v1beta/openai`, Cloudflare's `/v1/ACCOUNT/GATEWAY/openai`), and adding
    /// another one would break them.
    /// - Parameter baseURL: the base URL as typed.
    /// - Returns: the API root.
    public static func openAI(_ baseURL: String) -> String {
        var parts = Parts(baseURL)
        parts.dropSuffix(["chat", "completions"])
        parts.dropSuffix(["completions"])
        parts.dropSuffix(["models"])
        if !parts.segments.contains(where: isVersion) { parts.segments.append("v1") }
        return parts.string
    }

    /// The root of the Anthropic Messages API, version segment included, without a trailing `/`:
    /// requests go to `root + "/messages"` and `root + "/models"`.
    ///
    /// A pasted endpoint (`/messages`, `/models`) is cut off, and `/v1` is added unless the path already ends in a
    /// version segment. Only the last segment counts: Anthropic's path is always `{root}/v1/messages`, so a version
    /// further up belongs to a gateway (`https://gateway.example/v1/ACCOUNT/anthropic` still needs its own `/v1`).
    /// - Parameter baseURL: the base URL as typed.
    /// - Returns: the API root.
    public static func anthropic(_ baseURL: String) -> String {
        var parts = Parts(baseURL)
        parts.dropSuffix(["messages"])
        parts.dropSuffix(["models"])
        if !(parts.segments.last.map(isVersion) ?? false) { parts.segments.append("v1") }
        return parts.string
    }

    /// `root` with `path` appended, exactly one `/` between them and any query kept at the end.
    static func join(_ root: String, _ path: String) -> String {
        var parts = Parts(root)
        parts.segments += path.split(separator: "/").map(String.init)
        return parts.string
    }

    /// The host of a URL, lowercased; `nil` when there is none.
    static func host(of baseURL: String) -> String? {
        let parts = Parts(baseURL)
        guard !parts.authority.isEmpty else { return nil }
        var host = Substring(parts.authority)
        if let at = host.lastIndex(of: "@") { host = host[host.index(after: at)...] }
        if host.hasPrefix("[") {
            // An IPv6 literal: `[::1]:8080`.
            if let close = host.firstIndex(of: "]") { host = host[host.startIndex...close] }
        } else if let colon = host.firstIndex(of: ":") {
            host = host[..<colon]
        }
        return host.isEmpty ? nil : host.lowercased()
    }

    /// Whether the base URL points at OpenRouter, which reports each call's cost when asked.
    static func isOpenRouter(_ baseURL: String) -> Bool {
        guard let host = host(of: baseURL) else { return false }
        return host == "openrouter.ai" || host.hasSuffix(".openrouter.ai")
    }

    /// `v1`, `v2`, `v1beta`, `v1alpha1`…
    static func isVersion(_ segment: String) -> Bool {
        let characters = Array(segment.lowercased())
        guard characters.count >= 2, characters[0] == "v", characters[1].isASCII, characters[1].isNumber else {
            return false
        }
        var rest = characters.dropFirst().drop { $0.isASCII && $0.isNumber }
        for word in ["alpha", "beta"] where rest.starts(with: word) {
            rest = rest.dropFirst(word.count)
            rest = rest.drop { $0.isASCII && $0.isNumber }
        }
        return rest.isEmpty
    }

    /// A URL split into what we touch (the path's segments) and what we keep as is.
    private struct Parts {
        /// `https://`, or empty when the text has no scheme.
        var scheme: String
        /// `host:port` (with any user info).
        var authority: String
        var segments: [String]
        /// `?…` and `#…`, kept verbatim.
        var tail: String

        init(_ text: String) {
            var rest = Substring(text.trimmed)
            var tail = ""
            if let mark = rest.firstIndex(where: { $0 == "?" || $0 == "#" }) {
                tail = String(rest[mark...])
                rest = rest[..<mark]
            }
            if let range = rest.range(of: "://") {
                scheme = String(rest[..<range.upperBound])
                rest = rest[range.upperBound...]
            } else {
                scheme = ""
            }
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            authority = String(rest[..<slash])
            segments = rest[slash...].split(separator: "/").map(String.init)
            self.tail = tail
        }

        mutating func dropSuffix(_ suffix: [String]) {
            let lowered = segments.map { $0.lowercased() }
            if lowered.count >= suffix.count, Array(lowered.suffix(suffix.count)) == suffix {
                segments.removeLast(suffix.count)
            }
        }

        var string: String {
            let path = segments.isEmpty ? "" : "/" + segments.joined(separator: "/")
            return scheme + authority + path + tail
        }
    }
}
