import Foundation
import RLM

/// Top k: "Which 3 services logged the most ERROR lines? List them most first, separated by commas." over a service
/// log, or the top customers or products over order documents. The ranking is strict down to place k + 1.
enum TopKTaskGenerator {
    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let k = rng.int(in: 3...5)
        switch rng.int(in: 0..<4) {
        case 0: return servicesByLevel(k: k, rng: &rng, sizeBytes: sizeBytes)
        case 1: return pathsByServerErrors(k: k, rng: &rng, sizeBytes: sizeBytes)
        case 2: return customersBySpend(k: k, rng: &rng, sizeBytes: sizeBytes)
        default: return productsByUnits(k: k, rng: &rng, sizeBytes: sizeBytes)
        }
    }

    private static let listTail = [
        "List them most first, separated by commas.", "Answer with a comma-separated list, highest first.",
        "Give them in order, most first, separated by commas.",
    ]

    private static func servicesByLevel(k: Int, rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var log = ServiceLog(rng: &rng, sizeBytes: sizeBytes)
        let level = rng.pick(["ERROR", "WARN"])
        let top = breakTies(
            k: k,
            scores: {
                var counts = [String: Int]()
                for service in Vocabulary.services { counts[service] = 0 }
                for entry in log.entries where entry.level == level { counts[entry.service!, default: 0] += 1 }
                return counts
            },
            add: { log.addRequest(level: level, service: $0, rng: &rng) })
        let query = rng.pick([
            "Which \(k) services logged the most \(level) lines?", "Which \(k) services have the most \(level) lines?",
        ])
        return GeneratedTask(
            query: query + " " + rng.pick(listTail), context: .text(log.text), answer: top.joined(separator: ", "),
            answerKind: .list)
    }

    private static func pathsByServerErrors(k: Int, rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var log = ServiceLog(rng: &rng, sizeBytes: sizeBytes)
        let top = breakTies(
            k: k,
            scores: {
                var counts = [String: Int]()
                for path in Vocabulary.paths { counts[path] = 0 }
                for entry in log.entries where (entry.status ?? 0) >= 500 { counts[entry.path!, default: 0] += 1 }
                return counts
            },
            add: { log.addRequest(level: "ERROR", service: rng.pick(Vocabulary.services), path: $0, rng: &rng) })
        let query = rng.pick([
            "Which \(k) paths returned a 5xx status (500-599) most often?",
            "Which \(k) request paths had the most responses with a status from 500 to 599?",
        ])
        return GeneratedTask(
            query: query + " " + rng.pick(listTail), context: .text(log.text), answer: top.joined(separator: ", "),
            answerKind: .list)
    }

    private static func customersBySpend(k: Int, rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var book = OrderBook(rng: &rng, sizeBytes: sizeBytes)
        let status = rng.pick(["delivered", "shipped"])
        let top = breakTies(
            k: k,
            scores: {
                var sums = [String: Int]()
                for order in book.orders where order.status == status {
                    sums[order.customer, default: 0] += order.total
                }
                return sums
            },
            add: { customer in
                // A one-item order for the cheapest product moves the customer up by a small step.
                var order = book.make(rng: &rng, customer: customer, status: status)
                order.items = [("Notebook pack", 1, 9)]
                book.insert(order, rng: &rng)
            })
        let query = rng.pick([
            "Which \(k) customers spent the most in total on orders with the status \(status)? Answer with their "
                + "customer ids, highest total first, separated by commas.",
            "Counting only orders whose status is \(status), which \(k) customers have the largest sum of order "
                + "totals? List the customer ids, largest first, separated by commas.",
        ])
        return GeneratedTask(
            query: query, context: .documents(book.documents), answer: top.joined(separator: ", "), answerKind: .list)
    }

    private static func productsByUnits(k: Int, rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var book = OrderBook(rng: &rng, sizeBytes: sizeBytes)
        let top = breakTies(
            k: k,
            scores: {
                var units = [String: Int]()
                for order in book.orders where order.status != "cancelled" {
                    for item in order.items { units[item.name, default: 0] += item.quantity }
                }
                return units
            },
            add: { product in
                var order = book.make(rng: &rng, status: "delivered")
                order.items = [(product, 1, Vocabulary.products.first { $0.name == product }!.price)]
                book.insert(order, rng: &rng)
            })
        let query = rng.pick([
            "Which \(k) products sold the most units over all orders that are not cancelled? Count the quantity of "
                + "each item line. List the product names, most units first, separated by commas.",
            "Leaving out cancelled orders, which \(k) products were ordered in the largest total quantity? Answer "
                + "with the product names, largest first, separated by commas.",
        ])
        return GeneratedTask(
            query: query, context: .documents(book.documents), answer: top.joined(separator: ", "), answerKind: .list)
    }
}

/// Distinct: "How many distinct client IPs received a 503 response?" over an access log, or distinct customers over
/// order documents with a filter.
enum DistinctTaskGenerator {
    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        rng.chance(0.6) ? accessLog(rng: &rng, sizeBytes: sizeBytes) : orders(rng: &rng, sizeBytes: sizeBytes)
    }

    struct AccessLine {
        var ip: String
        var user: String
        var method: String
        var path: String
        var status: Int
        var text: String
    }

    /// Client IPs with near misses (`10.0.3.17` and `10.0.3.170`), users with near misses (`maria`, `maria2`).
    private static func clients(rng: inout SeededRandom, count: Int) -> [String] {
        var ips = [String]()
        var seen = Set<String>()
        while ips.count < count {
            let base = "10.\(rng.int(in: 0...3)).\(rng.int(in: 0...9)).\(rng.int(in: 1...25))"
            for ip in [base, base + "\(rng.int(in: 0...9))"] where seen.insert(ip).inserted { ips.append(ip) }
        }
        return ips
    }

    static func accessLog(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let ips = clients(rng: &rng, count: max(30, sizeBytes / 2_500))
        let ipWeights = ips.map { _ in rng.chance(0.15) ? rng.int(in: 10...40) : rng.int(in: 1...5) }
        let users =
            ["-", "-", "-"] + Vocabulary.people.flatMap { name in [name.lowercased(), name.lowercased() + "2"] }
        let agents = [
            "Mozilla/5.0 (X11; Linux x86_64)", "curl/8.4.0", "python-requests/2.31", "Mozilla/5.0 (Macintosh)",
            "okhttp/4.12.0",
        ]
        let months = ["Nov"]
        var clock = rng.int(in: 0..<21_600)
        var lines = [AccessLine]()
        var bytes = 0
        while bytes < sizeBytes {
            clock += rng.weightedIndex([5, 4, 2, 1])
            let ip = ips[rng.weightedIndex(ipWeights)]
            let user = rng.pick(users)
            let path = rng.pick(Vocabulary.paths)
            let method = rng.pick(Vocabulary.methodsForPath[path]!)
            let status: Int
            switch rng.weightedIndex([80, 12, 8]) {
            case 0: status = rng.pick(Vocabulary.okStatusesByMethod[method]!)
            case 1: status = rng.pick(Vocabulary.clientStatuses)
            default: status = rng.pick(Vocabulary.serverStatuses)
            }
            let stamp =
                "21/\(months[0])/2026:\(LogGenerator.pad(clock / 3600 % 24)):\(LogGenerator.pad(clock / 60 % 60)):"
                + "\(LogGenerator.pad(clock % 60)) +0000"
            let text =
                "\(ip) - \(user) [\(stamp)] \"\(method) \(path) HTTP/1.1\" \(status) \(rng.int(in: 0...40_000)) "
                + "\"-\" \"\(rng.pick(agents))\""
            bytes += text.utf8.count + 1
            lines.append(AccessLine(ip: ip, user: user, method: method, path: path, status: status, text: text))
        }
        let context = ContextValue.text(join(lines.map(\.text)))
        switch rng.int(in: 0..<3) {
        case 0:
            let status = rng.pick([500, 502, 503, 504, 429, 404])
            let count = Set(lines.filter { $0.status == status }.map(\.ip)).count
            let query = rng.pick([
                "How many distinct client IPs received a response with status \(status)?",
                "How many different client IP addresses got status \(status) at least once?",
            ])
            return GeneratedTask(query: query, context: context, answer: String(count), answerKind: .integer)
        case 1:
            let path = rng.pick(["/api/cart", "/api/orders", "/api/shipping", "/api/reviews"])
            let method = rng.pick(Vocabulary.methodsForPath[path]!.filter { $0 != "GET" })
            let count = Set(lines.filter { $0.path == path && $0.method == method && $0.user != "-" }.map(\.user))
                .count
            let query =
                "How many distinct users made a \(method) request to \(path)? Count user names (the third field), "
                + "not anonymous requests (-)."
            return GeneratedTask(query: query, context: context, answer: String(count), answerKind: .integer)
        default:
            let count = Set(lines.filter { $0.path == "/api/login" && $0.status >= 400 }.map(\.ip)).count
            let query =
                "How many distinct client IPs had at least one request to /api/login that failed with a status of "
                + "400 or above?"
            return GeneratedTask(query: query, context: context, answer: String(count), answerKind: .integer)
        }
    }

    static func orders(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let book = OrderBook(rng: &rng, sizeBytes: sizeBytes)
        let city = rng.pick(Vocabulary.cities)
        let status = rng.pick(["delivered", "shipped", "cancelled", "refunded"])
        let count = Set(book.orders.filter { $0.city == city && $0.status == status }.map(\.customer)).count
        let query = rng.pick([
            "How many distinct customers have at least one order shipped to \(city) with the status \(status)?",
            "Among orders with the status \(status) whose ship-to city is \(city), how many different customer ids "
                + "appear?",
        ])
        return GeneratedTask(
            query: query, context: .documents(book.documents), answer: String(count), answerKind: .integer)
    }
}

/// Mentions: notes, tickets or wiki pages, and "How many documents mention the word Redis (in any case)?". The word
/// appears in several cases and next to punctuation; near-miss words never contain it, so whole-word and substring
/// readings agree.
enum MentionsTaskGenerator {
    private static let words: [(word: String, nearMisses: [String])] = [
        ("postgres", ["PostGIS", "Postman", "progress", "postmortem"]),
        ("redis", ["Redshift", "redirect", "Reddit", "radish"]),
        ("kafka", ["Kinesis", "Kafdrop", "karaoke", "kappa"]),
        ("nginx", ["Envoy", "engine", "ingress", "origin"]),
        ("terraform", ["Terragrunt", "terrain", "transform", "platform"]),
        ("grafana", ["Graphite", "granola", "Granada", "graph"]),
        ("vault", ["volt", "valet", "fault", "vaunt"]),
    ]

    private static let flavors: [(header: String, noun: String)] = [
        ("NOTE", "notes"), ("TCK", "tickets"), ("WIKI", "wiki pages"),
    ]

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let choice = rng.pick(words)
        let word = choice.word
        let flavor = rng.pick(flavors)
        let capitalized = word.prefix(1).uppercased() + word.dropFirst()
        let spellings = [word, capitalized, word.uppercased()]
        let sentencesWith = [
            "We moved the session store to {w} last sprint.", "The {w} cluster needs a version bump.",
            "Alerts for {w} fire too often at night.", "{w} was restarted twice during the rollout.",
            "Ask the platform team before changing {w} settings.", "Latency went up after the {w} upgrade.",
            "The runbook for {w} is out of date.", "Nobody owns the {w} dashboards (yet).",
            "Backups of {w}, per the policy, run nightly.", "See the {w}: section of the handbook.",
        ]
        let sentencesWithout = [
            "The {n} setup was demoed on Friday.", "Someone should document the {n} workflow.",
            "We compared {n} with the current approach.", "The {n} step failed once and was retried.",
        ]
        var documents = [String]()
        var number = rng.int(in: 1_000...8_000)
        var mentions = 0
        var bytes = 0
        let mentionRate = min(0.2, 12_000.0 / Double(max(sizeBytes, 1)) + 0.01)
        while bytes < sizeBytes {
            number += rng.int(in: 1...4)
            var sentences = [String]()
            for _ in 0..<rng.int(in: 2...5) { sentences.append(ProseGenerator.sentence(rng: &rng)) }
            if rng.chance(0.15) {
                let near = rng.pick(choice.nearMisses)
                sentences.insert(
                    rng.pick(sentencesWithout).replacingOccurrences(of: "{n}", with: near),
                    at: rng.int(in: 0...sentences.count))
            }
            let mentioning = rng.chance(mentionRate)
            if mentioning {
                for _ in 0..<rng.weightedIndex([0, 5, 2, 1]) {
                    sentences.insert(
                        rng.pick(sentencesWith).replacingOccurrences(of: "{w}", with: rng.pick(spellings)),
                        at: rng.int(in: 0...sentences.count))
                }
                mentions += 1
            }
            let id = "\(flavor.header)-\(number)"
            let title = rng.pick(Vocabulary.nouns)
            let document =
                "### \(id)\n\(flavor.header == "WIKI" ? "Page" : "Title"): \(title.prefix(1).uppercased() + title.dropFirst())\n"
                + "Author: \(rng.pick(Vocabulary.people))\n\n\(sentences.joined(separator: " "))\n"
            bytes += document.utf8.count
            documents.append(document)
        }
        let display = rng.pick(spellings)
        let query = rng.pick([
            "How many \(flavor.noun) mention the word \(display) (in any case)? Count each document once.",
            "In how many \(flavor.noun) does the word \"\(display)\" appear, ignoring case? Count whole words only, "
                + "each document once.",
            "Count the \(flavor.noun) that mention \(display), matching the whole word in any capitalization.",
        ])
        return GeneratedTask(
            query: query, context: .documents(documents), answer: String(mentions), answerKind: .integer)
    }
}
