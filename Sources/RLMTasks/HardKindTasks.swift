import Foundation
import RLM

/// Multi-step: find an entity, then answer a question about it. The one-step shortcut (the same question about
/// everything, or about the first step's runner-up) gives another answer.
enum MultiStepTaskGenerator {
    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        switch rng.int(in: 0..<4) {
        case 0: return refunds(rng: &rng, sizeBytes: sizeBytes)
        case 1: return slowestErrorPath(rng: &rng, sizeBytes: sizeBytes)
        case 2: return busiestServiceSlowestStatus(rng: &rng, sizeBytes: sizeBytes)
        default: return cityCancellations(rng: &rng, sizeBytes: sizeBytes)
        }
    }

    /// The customer with the most refunded orders, then the total of that customer's other orders.
    private static func refunds(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var book = OrderBook(rng: &rng, sizeBytes: sizeBytes)
        let leader = breakTies(
            k: 1, fallback: book.customers[0],
            scores: {
                var counts = [String: Int]()
                for order in book.orders where order.status == "refunded" { counts[order.customer, default: 0] += 1 }
                return counts
            },
            add: { book.insert(book.make(rng: &rng, customer: $0, status: "refunded"), rng: &rng) })[0]
        if !book.orders.contains(where: { $0.customer == leader && $0.status != "refunded" }) {
            book.insert(book.make(rng: &rng, customer: leader, status: "delivered"), rng: &rng)
        }
        let sum = book.orders.filter { $0.customer == leader && $0.status != "refunded" }.reduce(0) { $0 + $1.total }
        let query = rng.pick([
            "Find the customer with the most orders whose status is refunded. What is the total amount, in whole "
                + "dollars, of that customer's orders that were not refunded?",
            "One customer has more refunded orders than anyone else. Summing the Total of all of that customer's "
                + "orders with any status other than refunded, how many dollars is it?",
        ])
        return GeneratedTask(
            query: query, context: .documents(book.documents), answer: String(sum), answerKind: .number)
    }

    /// The slowest ERROR request of one service, then its path.
    private static func slowestErrorPath(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var log = ServiceLog(rng: &rng, sizeBytes: sizeBytes)
        let errors = log.entries.filter { $0.level == "ERROR" && $0.duration != nil }
        let slowest = errors.max { $0.duration! < $1.duration! }
        var candidates = [(service: String, path: String)]()
        for service in Vocabulary.questionServices {
            let own = errors.filter { $0.service == service }
            guard let top = own.map(\.duration!).max(), own.filter({ $0.duration == top }).count == 1,
                let line = own.first(where: { $0.duration == top }), line.text != slowest?.text
            else { continue }
            candidates.append((service, line.path!))
        }
        let preferred = candidates.filter { $0.path != slowest?.path }
        let service: String
        let path: String
        if let choice = (preferred.isEmpty ? candidates : preferred).isEmpty
            ? nil : rng.pick(preferred.isEmpty ? candidates : preferred)
        {
            (service, path) = choice
        } else {
            service = rng.pick(Vocabulary.questionServices)
            let top = errors.filter { $0.service == service }.map(\.duration!).max() ?? 199
            path = rng.pick(Vocabulary.paths)
            log.addRequest(level: "ERROR", service: service, path: path, duration: top + 1, rng: &rng)
        }
        let query = rng.pick([
            "Among the ERROR lines of \(service), which request had the largest dur_ms? Which path did that request "
                + "hit? Answer with the path.",
            "Take the ERROR request of \(service) with the highest dur_ms. What was its path?",
            "Which path did the slowest ERROR request (largest dur_ms) of service \(service) go to?",
        ])
        return GeneratedTask(query: query, context: .text(log.text), answer: path, answerKind: .text)
    }

    /// The service with the most ERROR lines, then the status of its slowest ERROR request.
    private static func busiestServiceSlowestStatus(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var log = ServiceLog(rng: &rng, sizeBytes: sizeBytes)
        let leader = breakTies(
            k: 1, fallback: "svc-3",
            scores: {
                var counts = [String: Int]()
                for entry in log.entries where entry.level == "ERROR" { counts[entry.service!, default: 0] += 1 }
                return counts
            },
            add: { log.addRequest(level: "ERROR", service: $0, rng: &rng) })[0]
        var own = log.entries.filter { $0.service == leader && $0.level == "ERROR" && $0.duration != nil }
        let top = own.map(\.duration!).max() ?? 0
        if own.filter({ $0.duration == top }).count != 1 {
            // A tie for the slowest (or no request at all): one more ERROR line, slower than the rest. It also keeps
            // the leader's lead.
            log.addRequest(level: "ERROR", service: leader, duration: top + 1, rng: &rng)
            own = log.entries.filter { $0.service == leader && $0.level == "ERROR" && $0.duration != nil }
        }
        let status = own.max { $0.duration! < $1.duration! }!.status!
        // The shortcut "the slowest ERROR request of any service" must give another status: when it does not, a
        // slower ERROR request with another status goes to a service far enough behind the leader to stay behind.
        let slowest = log.entries.filter { $0.level == "ERROR" && $0.duration != nil }.max {
            $0.duration! < $1.duration!
        }!
        if slowest.status == status {
            var counts = [String: Int]()
            for entry in log.entries where entry.level == "ERROR" { counts[entry.service!, default: 0] += 1 }
            let lead = counts[leader] ?? 0
            let behind = Vocabulary.services.filter { $0 != leader && (counts[$0] ?? 0) <= lead - 2 }
            if !behind.isEmpty {
                log.addRequest(
                    level: "ERROR", service: rng.pick(behind),
                    status: rng.pick(Vocabulary.serverStatuses.filter { $0 != status }),
                    duration: slowest.duration! + rng.int(in: 1...500), rng: &rng)
            }
        }
        let query = rng.pick([
            "Which service logged the most ERROR lines? Of that service's ERROR requests, the one with the largest "
                + "dur_ms returned which status code?",
            "Find the service with the most ERROR lines in the log. What status code did its slowest ERROR request "
                + "(largest dur_ms) return?",
        ])
        return GeneratedTask(query: query, context: .text(log.text), answer: String(status), answerKind: .integer)
    }

    /// The ship-to city with the most delivered orders, then the total of the cancelled orders shipped there.
    private static func cityCancellations(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var book = OrderBook(rng: &rng, sizeBytes: sizeBytes)
        let city = breakTies(
            k: 1, fallback: Vocabulary.cities[0],
            scores: {
                var counts = [String: Int]()
                for order in book.orders where order.status == "delivered" { counts[order.city, default: 0] += 1 }
                return counts
            },
            add: { book.insert(book.make(rng: &rng, status: "delivered", city: $0), rng: &rng) })[0]
        if !book.orders.contains(where: { $0.city == city && $0.status == "cancelled" }) {
            book.insert(book.make(rng: &rng, status: "cancelled", city: city), rng: &rng)
        }
        let sum = book.orders.filter { $0.city == city && $0.status == "cancelled" }.reduce(0) { $0 + $1.total }
        let query = rng.pick([
            "Which ship-to city received the most orders with the status delivered? What is the total amount, in "
                + "whole dollars, of the cancelled orders shipped to that city?",
            "Find the city (the Ship to field) with the largest number of delivered orders, then add up the Total of "
                + "the orders with the status cancelled shipped to that same city. How many dollars is it?",
        ])
        return GeneratedTask(
            query: query, context: .documents(book.documents), answer: String(sum), answerKind: .number)
    }
}

/// Needle among decoys: the current code of one exactly named entity in a long log. Around it: the same fact for
/// names one edit away, the target's old code (set earlier, later said to be replaced), the same name with another
/// holder or another kind of code, other wordings for the decoys, and mentions of the target without a code.
/// Built as bytes from a pool of log lines, so 20 MB takes well under a second in an optimized build.
enum NeedleDecoysTaskGenerator {
    private struct Template: Sendable {
        var thing: String
        var otherThing: String
        var holder: String
        var otherHolder: String
        var names: [String]
        var numberRange: ClosedRange<Int>
        var value: @Sendable (inout SeededRandom) -> String
        var mention: @Sendable (String) -> String
    }

    private static let templates: [Template] = [
        Template(
            thing: "activation code", otherThing: "backup code", holder: "device", otherHolder: "gateway",
            names: Vocabulary.greek, numberRange: 10...99,
            value: { "AC-\($0.letters(2))\($0.int(in: 1000...9999))" },
            mention: { "device \($0) rebooted after a firmware update" }),
        Template(
            thing: "license key", otherThing: "support key", holder: "site", otherHolder: "mirror",
            names: Vocabulary.stars, numberRange: 2...60,
            value: { "LK-\($0.int(in: 100...999))-\($0.letters(3))-\($0.int(in: 10...99))" },
            mention: { "site \($0) passed its quarterly audit" }),
        Template(
            thing: "signing secret", otherThing: "webhook secret", holder: "tenant", otherHolder: "workspace",
            names: Vocabulary.companies, numberRange: 100...999,
            value: { "ss_\($0.hex(14))" },
            mention: { "tenant \($0) moved to the eu-west region" }),
    ]

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let template = rng.pick(templates)
        let number = rng.int(in: template.numberRange)
        let base = rng.pick(template.names)
        let target = "\(base)-\(number)"
        var values = Set<String>()
        func fresh() -> String {
            while true {
                let value = template.value(&rng)
                if values.insert(value).inserted { return value }
            }
        }
        let current = fresh()
        let old = fresh()
        func fact(_ holder: String, _ name: String, _ thing: String, _ value: String) -> String {
            "the \(thing) for \(holder) \(name) is \(value)"
        }
        let digits = String(number)
        let others = template.names.filter { $0 != base }
        var decoys = [
            "\(base)-\(String(digits.reversed()))", "\(base)-\(number)0", "\(base)-\(number + 1)",
            "\(base)-\(number - 1)", "\(rng.pick(others))-\(number)",
        ]
        var seen = Set([target])
        decoys = rng.shuffled(decoys.filter { seen.insert($0).inserted })
        // (depth as a fraction of the size, message); the current code first.
        let currentDepth = 0.3 + 0.64 * rng.unit()
        let oldDepth = 0.05 + (currentDepth - 0.1) * rng.unit()
        var planted: [(Double, String)] = [
            (currentDepth, fact(template.holder, target, template.thing, current)),
            (oldDepth, fact(template.holder, target, template.thing, old)),
            (
                oldDepth + (currentDepth - oldDepth) * rng.unit(),
                "\(template.thing) \(old) of \(template.holder) \(target) was replaced and no longer works"
            ),
            (0.02 + 0.95 * rng.unit(), fact(template.otherHolder, target, template.thing, fresh())),
            (0.02 + 0.95 * rng.unit(), fact(template.holder, target, template.otherThing, fresh())),
        ]
        for (index, decoy) in decoys.prefix(rng.int(in: 3...decoys.count)).enumerated() {
            let message =
                index % 2 == 0
                ? fact(template.holder, decoy, template.thing, fresh())
                : "\(template.holder) \(decoy): new \(template.thing) \(fresh()) issued"
            planted.append((0.02 + 0.95 * rng.unit(), message))
        }
        for _ in 0..<rng.int(in: 1...3) { planted.append((0.02 + 0.95 * rng.unit(), template.mention(target))) }
        let query = rng.pick([
            "What is the current \(template.thing) for \(template.holder) \(target)?",
            "Which \(template.thing) is valid now for \(template.holder) \(target)?",
            "\(template.holder.prefix(1).uppercased() + template.holder.dropFirst()) \(target) needs its "
                + "\(template.thing). What is the one currently in effect?",
        ])
        let text = write(planted: planted, sizeBytes: sizeBytes, rng: &rng)
        return GeneratedTask(query: query, context: .text(text), answer: current, answerKind: .text)
    }

    /// A log of `sizeBytes` with each planted message as a background line once its depth is reached.
    private static func write(planted: [(Double, String)], sizeBytes: Int, rng: inout SeededRandom) -> String {
        // A pool of line bodies (everything after the timestamp), split around the request id.
        var generator = LogGenerator(rng: &rng)
        var pool = [(head: [UInt8], tail: [UInt8])]()
        while pool.count < 3_000 {
            for line in generator.next(rng: &rng) where line.text.hasPrefix("20") {
                let body = line.text.dropFirst(20)
                if body.contains(" req=- ") {
                    pool.append((Array(body.utf8), []))
                } else if let range = body.range(of: "req=") {
                    let head = body[..<range.upperBound]
                    let tail = body[range.upperBound...].dropFirst(8)
                    pool.append((Array(head.utf8), Array(tail.utf8)))
                }
            }
        }
        let order = planted.sorted { $0.0 < $1.0 }
        var next = 0
        var out = [UInt8]()
        out.reserveCapacity(sizeBytes + 512)
        var clock = LogGenerator.epochSeconds(year: 2026, month: 11, day: 21) + Int64(rng.int(in: 0..<21_600))
        var day = -1
        var date = [UInt8]()
        let hex = Array("0123456789abcdef".utf8)
        let services = Vocabulary.services.map { Array($0.utf8) }
        func stamp() {
            let days = Int(clock / 86_400)
            if days != day {
                day = days
                date = Array((LogGenerator.date(days: days) + "T").utf8)
            }
            out.append(contentsOf: date)
            let rest = Int(clock % 86_400)
            for (index, value) in [rest / 3600, rest / 60 % 60, rest % 60].enumerated() {
                if index > 0 { out.append(58) }  // ":"
                out.append(UInt8(48 + value / 10))
                out.append(UInt8(48 + value % 10))
            }
            out.append(90)  // "Z"
        }
        while out.count < sizeBytes {
            while next < order.count, Double(out.count) >= order[next].0 * Double(sizeBytes) {
                stamp()
                out.append(contentsOf: " INFO ".utf8)
                out.append(contentsOf: services[Int(rng.next() % 20)])
                out.append(contentsOf: " req=- msg=\"\(order[next].1)\"\n".utf8)
                next += 1
            }
            clock += Int64(rng.next() % 3)
            stamp()
            let entry = pool[Int(rng.next() % UInt64(pool.count))]
            out.append(contentsOf: entry.head)
            if !entry.tail.isEmpty {
                var bits = rng.next()
                for _ in 0..<8 {
                    out.append(hex[Int(bits & 15)])
                    bits >>= 4
                }
                out.append(contentsOf: entry.tail)
            }
            out.append(10)
        }
        return String(decoding: out, as: UTF8.self)
    }
}
