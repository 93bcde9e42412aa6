import Foundation

/// Pieces the newer generators share: a parsed service log with lines that can be added, order documents, filler
/// support tickets, and exact decimal arithmetic for rounded answers.

/// One line of the service log with its fields (request fields are `nil` on background lines and tracebacks).
struct LogEntry {
    var text: String
    var level: String?
    var service: String?
    var request: String?
    var method: String?
    var path: String?
    var status: Int?
    var duration: Int?

    /// Reads the fields of a line written by ``LogGenerator`` (space-separated `key=value` before `msg=`).
    init(_ text: String) {
        self.text = text
        guard text.hasPrefix("20") else { return }
        let head = text.split(separator: " msg=", maxSplits: 1).first ?? ""
        let fields = head.split(separator: " ")
        guard fields.count >= 4 else { return }
        level = String(fields[1])
        service = String(fields[2])
        for field in fields.dropFirst(3) {
            let pair = field.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { continue }
            let value = String(pair[1])
            switch pair[0] {
            case "req": request = value == "-" ? nil : value
            case "method": method = value
            case "path": path = value
            case "status": status = Int(value)
            case "dur_ms": duration = Int(value)
            default: break
            }
        }
    }
}

/// A service log as parsed entries, grown to a size, to which lines can be added at random depths.
struct ServiceLog {
    var entries: [LogEntry]

    init(rng: inout SeededRandom, sizeBytes: Int) {
        var log = LogGenerator(rng: &rng)
        entries = []
        var bytes = 0
        while bytes < sizeBytes {
            for line in log.next(rng: &rng) {
                bytes += line.text.utf8.count + 1
                entries.append(LogEntry(line.text))
            }
        }
    }

    var text: String { join(entries.map(\.text)) }

    /// Adds a request line for `service` at `level` (on `path` when given) at a random depth, stamped with the time
    /// of the line above it so times stay in order.
    mutating func addRequest(
        level: String, service: String, path: String? = nil, status: Int? = nil, duration: Int? = nil,
        rng: inout SeededRandom
    ) {
        let position = rng.int(in: 1..<max(2, entries.count))
        let above = entries[..<position].last { $0.text.hasPrefix("20") }?.text ?? entries[0].text
        let path = path ?? rng.pick(Vocabulary.paths)
        let method = rng.pick(Vocabulary.methodsForPath[path]!)
        let code: Int
        let message: String
        let time: Int
        switch level {
        case "ERROR":
            code = status ?? rng.pick(Vocabulary.serverStatuses)
            message = rng.pick(Vocabulary.serverMessages)
            time = duration ?? rng.int(in: 200...30_000)
        case "WARN":
            code = status ?? rng.pick(Vocabulary.clientStatuses)
            message = rng.pick(Vocabulary.clientMessages)
            time = duration ?? rng.int(in: 2...400)
        default:
            code = status ?? rng.pick(Vocabulary.okStatusesByMethod[method]!)
            message = rng.pick(Vocabulary.okMessagesByPath[path]!)
            time = duration ?? rng.int(in: 1...900)
        }
        let text =
            "\(above.prefix(20)) \(level) \(service) req=\(rng.hex(8)) method=\(method) path=\(path) status=\(code) "
            + "dur_ms=\(time) msg=\"\(message)\""
        entries.insert(LogEntry(text), at: position)
    }
}

/// Makes the first `k + 1` values of a ranking strictly decreasing (so "the top k, most first" has one answer) by
/// adding to the item that ties with the next one. `add` adds one unit to an item; `scores` recounts; `fallback` gets
/// the first unit when nothing scores yet.
func breakTies(
    k: Int, fallback: String? = nil, scores: () -> [String: Int], add: (String) -> Void
) -> [String] {
    if let fallback, scores().isEmpty { add(fallback) }
    while true {
        let ranked = scores().sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        guard ranked.count > 1,
            let tie = (0..<min(k, ranked.count - 1)).first(where: { ranked[$0].value == ranked[$0 + 1].value })
        else { return ranked.prefix(k).map(\.key) }
        add(ranked[tie].key)
    }
}

/// An order document: `### ORD-…` then `Field: value` lines, items as `- 2 x Webcam @ $69.00`.
struct OrderDocument {
    var id: String
    var date: String
    var customer: String
    var city: String
    var payment: String
    var items: [(name: String, quantity: Int, price: Int)]
    var status: String

    var total: Int { items.reduce(0) { $0 + $1.quantity * $1.price } }

    func render() -> String {
        var out =
            "### \(id)\nOrder \(id)\nDate: \(date)\nCustomer: \(customer)\nShip to: \(city)\nPayment: \(payment)\n"
        out += "Items:\n"
        for item in items { out += "- \(item.quantity) x \(item.name) @ $\(item.price).00\n" }
        out += "Total: $\(total).00\nStatus: \(status)\n"
        return out
    }
}

/// Orders from skewed customers (a few order far more than most), filled to a size; more can be added.
struct OrderBook {
    static let statuses = [
        "delivered", "delivered", "delivered", "shipped", "shipped", "processing", "cancelled",
        "refunded",
    ]
    static let payments = ["card", "card", "card", "paypal", "invoice", "gift card"]

    var orders: [OrderDocument] = []
    var customers: [String]
    var weights: [Int]
    private var number: Int
    private let startDay: Int

    init(rng: inout SeededRandom, sizeBytes: Int, statuses: [String] = OrderBook.statuses) {
        let count = max(20, sizeBytes / 3_000)
        var ids = Set<String>()
        while ids.count < count { ids.insert("C-" + AggregationTaskGenerator.pad4(rng.int(in: 1...9999))) }
        customers = rng.shuffled(ids.sorted())
        weights = customers.map { _ in rng.chance(0.1) ? rng.int(in: 8...20) : rng.int(in: 1...6) }
        number = rng.int(in: 10_000...90_000)
        startDay = LogGenerator.daysFromCivil(year: 2026, month: 1, day: 1)
        var bytes = 0
        while bytes < sizeBytes {
            let order = make(rng: &rng, statuses: statuses)
            bytes += order.render().utf8.count
            orders.append(order)
        }
    }

    /// A new order (not added); fields left `nil` are drawn.
    mutating func make(
        rng: inout SeededRandom, statuses: [String] = OrderBook.statuses, customer: String? = nil,
        status: String? = nil, city: String? = nil, product: String? = nil
    ) -> OrderDocument {
        number += rng.int(in: 1...3)
        var items = [(name: String, quantity: Int, price: Int)]()
        var names = Set<String>()
        if let product, let price = Vocabulary.products.first(where: { $0.name == product })?.price {
            items.append((product, 1, price))
            names.insert(product)
        }
        for _ in 0..<rng.int(in: 1...3) {
            let product = rng.pick(Vocabulary.products)
            guard names.insert(product.name).inserted else { continue }
            items.append((product.name, rng.weightedIndex([0, 6, 3, 1, 1]), product.price))
        }
        return OrderDocument(
            id: "ORD-\(number)", date: LogGenerator.date(days: startDay + rng.int(in: 0...300)),
            customer: customer ?? customers[rng.weightedIndex(weights)], city: city ?? rng.pick(Vocabulary.cities),
            payment: rng.pick(Self.payments), items: items, status: status ?? rng.pick(statuses))
    }

    /// Adds an order at a random position.
    mutating func insert(_ order: OrderDocument, rng: inout SeededRandom) {
        orders.insert(order, at: rng.int(in: 0...orders.count))
    }

    var documents: [String] { orders.map { $0.render() } }
}

/// Filler support tickets that never use a set of words (so a question about those words has one reading).
enum TicketFiller {
    static let subjects = [
        "Question about the warranty", "App crashes on checkout", "Discount code rejected", "Item out of stock",
        "Size chart unclear", "Gift wrapping request", "Wrong color received", "Assembly instructions missing",
        "Loyalty points not showing", "Newsletter settings", "Store opening hours", "Replacement part needed",
        "Product question", "Feedback on the new website", "Cannot upload a photo", "Review not published",
    ]
    static let sentences = [
        "The customer asked whether the {product} comes in another color.",
        "Agent shared the assembly guide as a PDF.", "Customer says the app closes when opening the cart.",
        "Loyalty points from the last purchase are not visible yet.",
        "Customer wants to know when the {product} is back in stock.",
        "The size chart is hard to read on a phone.", "Screenshots are attached to the thread.",
        "Customer prefers email over phone.", "Similar report came in last week.",
        "Customer is a long-time subscriber to the newsletter.", "Agent asked for a photo of the label.",
        "Escalated to the product team after the second reply.", "The {product} manual is missing page 4.",
        "Customer would like a gift message added.", "The coupon from the spring campaign was not accepted.",
        "Customer asked if the {product} works with older laptops.", "The review form rejects images over 5 MB.",
        "Customer asked for the opening hours of the Lyon store.", "A spare screw for the {product} is needed.",
        "Agent confirmed the {product} is compatible.", "The customer thanked the team for the quick reply.",
        "Customer mentioned the website looks cleaner now.", "Waiting on the product team to confirm.",
    ]

    /// The subjects and sentences that avoid `banned` words (case-insensitive).
    static func allowed(avoiding banned: [String]) -> (subjects: [String], sentences: [String]) {
        func clean(_ text: String) -> Bool { !banned.contains { text.lowercased().contains($0) } }
        return (subjects.filter(clean), sentences.filter(clean))
    }

    /// A ticket body of 1–3 of `sentences`.
    static func body(rng: inout SeededRandom, sentences: [String]) -> String {
        (0..<rng.int(in: 1...3)).map { _ in
            rng.pick(sentences).replacingOccurrences(of: "{product}", with: rng.pick(Vocabulary.products).name)
        }.joined(separator: " ")
    }
}

/// The numbered ids that a substring search for `id` would also hit among ids `prefix` + 1, 2, 3…: the id's own
/// leading digits (`C-123` is found by searching for `C-1`, `C-12` and `C-123`).
func prefixIDs(_ id: String, prefix: String) -> [String] {
    let digits = id.dropFirst(prefix.count)
    return (1...max(1, digits.count)).map { prefix + digits.prefix($0) }
}

/// Exact decimal arithmetic for rounded answers: amounts are whole cents, averages rational.
enum Exact {
    /// `cents` as dollars with two decimals (`12345` → `123.45`).
    static func dollars(_ cents: Int) -> String {
        let sign = cents < 0 ? "-" : ""
        let value = abs(cents)
        return "\(sign)\(value / 100).\(LogGenerator.pad(value % 100))"
    }

    /// `numerator / denominator` (non-negative, in hundredths) rounded to `decimals` (1 or 2), as text with exactly
    /// that many decimals; `nil` when the exact value lies within 1e-6 of a rounding boundary.
    static func rounded(hundredths numerator: Int, over denominator: Int, decimals: Int) -> String? {
        let scale = decimals == 2 ? 1 : 10
        let units = denominator * scale
        let remainder = numerator % units
        // |remainder / units - 0.5| in rounding units, times 10^-decimals, must exceed 1e-6.
        let distance = Double(abs(2 * remainder - units)) / Double(2 * units) * (decimals == 2 ? 0.01 : 0.1)
        guard distance > 1e-6 else { return nil }
        let value = (2 * numerator + units) / (2 * units)
        if decimals == 2 { return dollars(value) }
        return "\(value / 10).\(value % 10)"
    }
}
