import RLM

/// One page of a model list as OpenAI (`{"object":"list","data":[{"id":…}]}`) and Anthropic
/// (`{"data":[{"id":…}],"has_more":…,"last_id":…}`) return it.
struct ModelListPage: Decodable, Sendable {
    struct Entry: Decodable, Sendable {
        var id: String?
    }

    var data: [Entry]?
    var has_more: Bool?
    var last_id: String?

    /// The ids on this page, in the server's order.
    var ids: [String] { (data ?? []).compactMap { $0.id?.trimmed }.filter { !$0.isEmpty } }

    /// Reads a page, refusing a body without a `data` array (an HTML page, another API's shape).
    static func decode(_ bytes: [UInt8], errors: ErrorMapper) throws -> ModelListPage {
        let page = try WireJSON.decode(ModelListPage.self, from: bytes, errors: errors, what: "a model list")
        guard page.data != nil else {
            let preview = errors.sanitize(String(decoding: bytes.prefix(200), as: UTF8.self), limit: 200)
            throw errors.invalidResponse(#"a model list without a "data" array ("# + preview + ")")
        }
        return page
    }
}

extension ProviderTransport {
    /// GETs `url` (this transport's own timeouts, retries and error mapping) and reads one model-list page.
    func modelListPage(at url: String) async throws -> ModelListPage {
        try await with(endpoint: url).get { attempt in
            try ModelListPage.decode(try await attempt.collect(), errors: attempt.errors)
        }
    }
}

/// `url` with `item` (`name=value`) added to its query.
func appendingQueryItem(_ url: String, _ item: String) -> String {
    if let hash = url.firstIndex(of: "#") {
        return appendingQueryItem(String(url[..<hash]), item) + url[hash...]
    }
    return url + (url.contains("?") ? "&" : "?") + item
}
