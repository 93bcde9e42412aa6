/// Word lists the generators draw from. ASCII only, so a context's characters and bytes agree.
enum Vocabulary {
    static let services = (1...20).map { "svc-\($0)" }

    /// Services whose name is not a prefix of another's (`svc-1` is a prefix of `svc-10`…`svc-19`, `svc-2` of
    /// `svc-20`): questions name only these, so a plain substring search is not a trap the question sets on purpose.
    static let questionServices = services.filter { name in
        !services.contains { $0 != name && $0.hasPrefix(name) }
    }

    static let levels = ["DEBUG", "INFO", "WARN", "ERROR"]

    static let paths = [
        "/api/orders", "/api/users", "/api/cart", "/api/payments", "/api/search", "/api/login", "/api/inventory",
        "/api/shipping", "/api/reviews", "/api/recommendations", "/health", "/metrics",
    ]

    static let methodsForPath: [String: [String]] = [
        "/api/orders": ["GET", "POST", "PUT"], "/api/users": ["GET", "PATCH"], "/api/cart": ["GET", "POST", "DELETE"],
        "/api/payments": ["POST"], "/api/search": ["GET"], "/api/login": ["POST"], "/api/inventory": ["GET", "PUT"],
        "/api/shipping": ["GET", "POST"], "/api/reviews": ["GET", "POST"], "/api/recommendations": ["GET"],
        "/health": ["GET"], "/metrics": ["GET"],
    ]

    static let okStatusesByMethod: [String: [Int]] = [
        "GET": [200, 200, 200, 200, 304], "POST": [200, 201, 201], "PUT": [200, 204], "PATCH": [200, 204],
        "DELETE": [200, 204, 204],
    ]
    static let clientStatuses = [400, 401, 403, 404, 404, 409, 422, 429]
    static let serverStatuses = [500, 502, 503, 503, 504]

    // Messages never contain a level word (in any case) nor `svc-`, `path=` or `status=`, so the questions' fields
    // are unambiguous.
    static let okMessages = ["request completed", "response streamed", "cache hit", "served from replica"]
    static let okMessagesByPath: [String: [String]] = [
        "/api/orders": ["order created", "orders listed", "order updated"],
        "/api/users": ["user profile served", "user updated"],
        "/api/cart": ["cart updated", "cart served", "item removed from cart"],
        "/api/payments": ["payment authorized", "payment captured"],
        "/api/search": ["search results returned", "search served from cache"],
        "/api/login": ["token issued", "session refreshed"],
        "/api/inventory": ["inventory checked", "stock level updated"],
        "/api/shipping": ["shipment quote computed", "label created"],
        "/api/reviews": ["review stored", "reviews listed"],
        "/api/recommendations": ["recommendations served"],
        "/health": ["ok"],
        "/metrics": ["metrics scraped"],
    ]
    static let clientMessages = [
        "validation failed: missing field", "unauthorized: token expired", "forbidden: role check denied",
        "not found", "conflict: version mismatch", "rate limit exceeded", "invalid coupon code",
        "malformed json body", "payment method declined",
    ]
    static let serverMessages = [
        "upstream timed out", "database connection reset", "circuit breaker open", "deadlock detected, rolled back",
        "out of file descriptors", "dependency returned garbage", "tls handshake failed with upstream",
        "queue publish failed", "null reference in handler", "disk quota exceeded on volume data-2",
    ]
    static let slowMessages = [
        "slow response", "retrying upstream call", "cache miss, falling back to db", "payload larger than expected",
        "pool nearly exhausted",
    ]
    static let backgroundMessages: [String: [String]] = [
        "DEBUG": [
            "gc pause 12ms", "config reloaded", "heartbeat sent", "connection pool stats: 14 idle, 2 busy",
            "feature flag checkout_v2 evaluated", "span exported", "dns cache refreshed",
        ],
        "INFO": [
            "worker started", "scheduled job finished", "leader elected", "snapshot written", "cron tick",
            "deployment marker received", "autoscaler added 1 replica", "metrics flushed",
        ],
        "WARN": [
            "replica lag 4.2s", "certificate expires in 9 days", "memory usage at 81%", "retry budget low",
            "clock skew detected", "queue depth above 500",
        ],
        "ERROR": [
            "job crashed, will retry", "lost connection to broker", "snapshot upload failed", "health probe failed",
            "consumer group rebalance failed",
        ],
    ]
    static let traceFrames = [
        "  File \"/app/handlers/orders.py\", line 88, in process", "  File \"/app/db/pool.py\", line 214, in acquire",
        "  File \"/app/net/client.py\", line 57, in send", "  File \"/app/core/retry.py\", line 31, in call",
        "TimeoutError: operation timed out", "ConnectionResetError: [Errno 104] Connection reset by peer",
    ]

    static let greek = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "sigma",
        "omega", "tau", "rho",
    ]
    static let stars = ["orion", "vega", "lyra", "draco", "cygnus", "aquila", "altair", "rigel", "sirius", "pavo"]
    static let companies = [
        "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell", "wonka", "cyberdyne",
    ]

    // Prose filler.
    static let teams = [
        "platform", "payments", "search", "mobile", "data", "security", "growth", "infrastructure", "support",
        "design", "billing", "logistics",
    ]
    static let regions = ["eastern", "western", "northern", "southern", "central", "coastal", "alpine", "metro"]
    static let nouns = [
        "capacity plan", "migration schedule", "onboarding guide", "incident review", "budget forecast",
        "roadmap draft", "vendor contract", "release checklist", "hiring plan", "training program",
        "retention report", "pricing study", "backup policy", "access review", "latency dashboard",
    ]
    static let pastVerbs = [
        "reviewed", "updated", "postponed", "approved", "rewrote", "presented", "questioned", "simplified",
        "archived", "circulated",
    ]
    static let people = [
        "Maria", "Kenji", "Aisha", "Tomas", "Priya", "Lucas", "Ingrid", "Omar", "Chen", "Fatima", "Diego", "Hannah",
    ]
    static let weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
    static let adjectives = [
        "careful", "lengthy", "brief", "heated", "productive", "quiet", "unexpected", "thorough", "informal",
    ]
    static let topics = [
        "office move", "quarterly goals", "customer feedback", "conference travel", "the new intern program",
        "coffee machine repairs", "parking permits", "the holiday schedule", "laptop refresh", "team offsite",
    ]

    // Documents.
    static let products: [(name: String, price: Int)] = [
        ("USB-C cable", 12), ("Desk lamp", 45), ("Wireless mouse", 29), ("Mechanical keyboard", 119),
        ("27in monitor", 289), ("Laptop stand", 39), ("Noise-cancelling headphones", 199), ("Webcam", 69),
        ("Office chair", 349), ("Notebook pack", 9), ("Standing desk", 499), ("HDMI adapter", 19),
        ("Portable SSD 1TB", 109), ("Phone charger", 24), ("Cable organizer", 14), ("Ergonomic footrest", 55),
    ]
    static let cities = [
        "Lisbon, PT", "Austin, US", "Osaka, JP", "Lyon, FR", "Leeds, GB", "Porto, PT", "Denver, US", "Graz, AT",
        "Cork, IE", "Turin, IT", "Malmo, SE", "Ghent, BE",
    ]
    static let orderStatuses = ["shipped", "shipped", "shipped", "delivered", "delivered", "processing", "cancelled"]
    static let vendorNames = [
        "Northwind Supplies", "Contoso Office", "Fabrikam Parts", "Tailspin Logistics", "Litware Labs",
        "Adventure Works", "Proseware", "Wide World Importers", "Coho Vineyard", "Lucerne Publishing",
    ]
    static let invoiceStatuses = ["paid", "paid", "paid", "unpaid", "overdue"]
    static let ticketSubjects = [
        "Refund not received", "Cannot log in", "Package arrived damaged", "Wrong item shipped",
        "Invoice address wrong", "Discount code rejected", "App crashes on checkout", "Change delivery date",
        "Account locked", "Missing items in order",
    ]
    static let ticketSentences = [
        "The customer says they contacted us twice already.", "Screenshots are attached to the thread.",
        "Agent asked for the order number and a photo.", "Escalated after the second reply.",
        "Customer prefers email over phone.", "Similar report came in last week.",
        "Waiting on the warehouse to confirm.", "Customer is a long-time subscriber.",
    ]

    // Python source.
    static let packages = [
        "net", "db", "api", "auth", "core", "utils", "jobs", "cache", "billing", "search", "cli", "metrics",
    ]
    static let subpackages = ["internal", "proto", "adapters", "models", "v2"]
    static let modules = [
        "client", "server", "http", "pool", "codec", "session", "config", "errors", "retry", "schema", "router",
        "handlers", "worker", "queue", "storage", "tokens", "helpers", "formats", "events", "policy", "limits",
        "registry", "loader", "stream", "backoff", "signals", "views", "service", "mapper", "validators",
    ]
    static let verbs = [
        "parse", "build", "load", "save", "fetch", "send", "read", "write", "encode", "decode", "validate",
        "normalize", "resolve", "compute", "merge", "split", "render", "open", "close", "flush", "reset", "check",
        "find", "apply", "format", "collect", "drain", "schedule", "refresh", "convert",
    ]
    static let objects = [
        "header", "payload", "token", "session", "record", "batch", "frame", "request", "response", "config",
        "schema", "cursor", "row", "message", "chunk", "socket", "buffer", "route", "policy", "metric", "event",
        "job", "user", "account", "invoice", "cache_key", "address", "timeout", "checksum", "manifest",
    ]
    static let qualifiers = [
        "raw", "next", "all", "cached", "default", "pending", "remote", "local", "safe", "batch", "partial", "signed",
    ]
    static let classNouns = [
        "Pool", "Client", "Handler", "Registry", "Encoder", "Decoder", "Manager", "Store", "Queue", "Parser",
        "Builder", "Router", "Worker", "Cache", "Limiter", "Session", "Validator", "Scheduler",
    ]
    static let classPrefixes = [
        "Connection", "Request", "Token", "Batch", "Event", "Schema", "Retry", "Stream", "Metric", "Account",
        "Message", "Frame",
    ]
    static let params = ["data", "value", "items", "path", "options", "timeout", "limit", "name", "key", "raw", "ctx"]
}
