import RLM

/// Aggregation: many short documents (orders, invoices or support tickets), each headed by `### <id>`, and a question
/// that sums or compares a field over all of them.
enum AggregationTaskGenerator {
    private enum Flavor: CaseIterable {
        case orders, invoices, tickets
    }

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        switch rng.pick(Flavor.allCases) {
        case .orders: return orders(rng: &rng, sizeBytes: sizeBytes)
        case .invoices: return invoices(rng: &rng, sizeBytes: sizeBytes)
        case .tickets: return tickets(rng: &rng, sizeBytes: sizeBytes)
        }
    }

    /// Customer ids (`C-0421`) with skewed weights: a few customers order far more than most.
    private static func customers(count: Int, rng: inout SeededRandom) -> (ids: [String], weights: [Int]) {
        var ids = Set<String>()
        while ids.count < count { ids.insert("C-" + pad4(rng.int(in: 1...9999))) }
        let sorted = rng.shuffled(ids.sorted())
        let weights = sorted.map { _ in rng.chance(0.1) ? rng.int(in: 8...20) : rng.int(in: 1...6) }
        return (sorted, weights)
    }

    private struct Record {
        var owner: String
        var render: (String) -> String
        var amount: Int
        var flag: Bool
    }

    /// Fills documents until `sizeBytes`; `make` draws one record. Returns the records (rendered by their owner).
    private static func fill(
        sizeBytes: Int, rng: inout SeededRandom, make: (inout SeededRandom, Int) -> Record
    ) -> [Record] {
        var records = [Record]()
        var bytes = 0
        while bytes < sizeBytes {
            let record = make(&rng, records.count)
            bytes += record.render(record.owner).utf8.count
            records.append(record)
        }
        return records
    }

    /// Makes the owner with the most records unique by moving one record from a tied owner to it (ids have equal
    /// lengths, so sizes do not change). Returns the winner.
    private static func uniqueLeader(_ records: inout [Record], rng: inout SeededRandom) -> String {
        var counts = [String: Int]()
        for record in records { counts[record.owner, default: 0] += 1 }
        let top = counts.values.max() ?? 0
        let leaders = counts.filter { $0.value == top }.keys.sorted()
        let winner = rng.pick(leaders)
        if leaders.count > 1 {
            for other in leaders where other != winner {
                if let index = records.firstIndex(where: { $0.owner == other }) { records[index].owner = winner }
            }
        }
        return winner
    }

    private static func orders(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let customerCount = max(20, sizeBytes / 3_000)
        let (ids, weights) = customers(count: customerCount, rng: &rng)
        var number = rng.int(in: 1_000...90_000)
        let startDay = LogGenerator.daysFromCivil(year: 2026, month: 1, day: 1)
        var records = fill(sizeBytes: sizeBytes, rng: &rng) { rng, _ in
            number += rng.int(in: 1...3)
            let id = "ORD-\(number)"
            let date = LogGenerator.date(days: startDay + rng.int(in: 0...300))
            let city = rng.pick(Vocabulary.cities)
            var items = [String]()
            var total = 0
            for _ in 0..<rng.int(in: 1...4) {
                let product = rng.pick(Vocabulary.products)
                let quantity = rng.weightedIndex([0, 6, 3, 1, 1])
                items.append("- \(quantity) x \(product.name) @ $\(product.price).00")
                total += quantity * product.price
            }
            let status = rng.pick(Vocabulary.orderStatuses)
            let lines = items.joined(separator: "\n")
            let amount = total
            return Record(
                owner: ids[rng.weightedIndex(weights)],
                render: { owner in
                    "### \(id)\nOrder \(id)\nDate: \(date)\nCustomer: \(owner)\nShip to: \(city)\nItems:\n\(lines)\n"
                        + "Total: $\(amount).00\nStatus: \(status)\n"
                }, amount: total, flag: false)
        }
        if rng.chance(0.5) {
            let leader = uniqueLeader(&records, rng: &rng)
            return GeneratedTask(
                query: "Which customer placed the most orders? Answer with the customer id.",
                context: .documents(records.map { $0.render($0.owner) }), answer: leader, answerKind: .text)
        }
        let customer = rng.pick(records).owner
        let sum = records.filter { $0.owner == customer }.reduce(0) { $0 + $1.amount }
        return GeneratedTask(
            query: "What is the total amount, in whole dollars, of all orders from customer \(customer)?",
            context: .documents(records.map { $0.render($0.owner) }), answer: String(sum), answerKind: .number)
    }

    private static func invoices(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let vendors = (0..<Vocabulary.vendorNames.count).map { "V-\(100 + $0 * 7 + rng.int(in: 0...6))" }
        var number = rng.int(in: 10_000...60_000)
        let startDay = LogGenerator.daysFromCivil(year: 2026, month: 1, day: 1)
        let records = fill(sizeBytes: sizeBytes, rng: &rng) { rng, _ in
            number += rng.int(in: 1...2)
            let id = "INV-\(number)"
            let vendorIndex = rng.int(in: 0..<vendors.count)
            let issued = startDay + rng.int(in: 0...280)
            let amount = rng.int(in: 40...4_800)
            let status = rng.pick(Vocabulary.invoiceStatuses)
            let lines = (0..<rng.int(in: 1...3)).map { _ in
                "- \(rng.pick(Vocabulary.products).name): $\(rng.int(in: 5...900)).00 (see schedule)"
            }.joined(separator: "\n")
            return Record(
                owner: vendors[vendorIndex],
                render: { owner in
                    "### \(id)\nInvoice \(id)\nVendor: \(owner) (\(Vocabulary.vendorNames[vendorIndex]))\n"
                        + "Issued: \(LogGenerator.date(days: issued))\nDue: \(LogGenerator.date(days: issued + 30))\n"
                        + "Lines:\n\(lines)\nAmount due: $\(amount).00\nStatus: \(status)\n"
                }, amount: amount, flag: status == "overdue")
        }
        if rng.chance(0.5) {
            let count = records.filter(\.flag).count
            return GeneratedTask(
                query: "How many invoices have the status overdue?",
                context: .documents(records.map { $0.render($0.owner) }), answer: String(count), answerKind: .integer)
        }
        let sum = records.filter(\.flag).reduce(0) { $0 + $1.amount }
        return GeneratedTask(
            query: "What is the total amount due, in whole dollars, over all overdue invoices?",
            context: .documents(records.map { $0.render($0.owner) }), answer: String(sum), answerKind: .number)
    }

    private static func tickets(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let customerCount = max(20, sizeBytes / 4_000)
        let (ids, weights) = customers(count: customerCount, rng: &rng)
        var number = rng.int(in: 50_000...90_000)
        let startDay = LogGenerator.daysFromCivil(year: 2026, month: 3, day: 1)
        var records = fill(sizeBytes: sizeBytes, rng: &rng) { rng, _ in
            number += rng.int(in: 1...4)
            let id = "TCK-\(number)"
            let opened = LogGenerator.date(days: startDay + rng.int(in: 0...200))
            let priority = "P\(rng.weightedIndex([1, 3, 6, 4]) + 1)"
            let status = rng.pick(["open", "open", "pending", "closed", "closed", "closed"])
            let subject = rng.pick(Vocabulary.ticketSubjects)
            let body = (0..<rng.int(in: 1...3)).map { _ in rng.pick(Vocabulary.ticketSentences) }.joined(
                separator: " ")
            return Record(
                owner: ids[rng.weightedIndex(weights)],
                render: { owner in
                    "### \(id)\nTicket \(id)\nOpened: \(opened)\nCustomer: \(owner)\nPriority: \(priority)\n"
                        + "Status: \(status)\nSubject: \(subject)\n\(body)\n"
                }, amount: 0, flag: priority == "P1" && status == "open")
        }
        if rng.chance(0.5) {
            let leader = uniqueLeader(&records, rng: &rng)
            return GeneratedTask(
                query: "Which customer opened the most tickets? Answer with the customer id.",
                context: .documents(records.map { $0.render($0.owner) }), answer: leader, answerKind: .text)
        }
        let count = records.filter(\.flag).count
        return GeneratedTask(
            query: "How many tickets with priority P1 have the status open?",
            context: .documents(records.map { $0.render($0.owner) }), answer: String(count), answerKind: .integer)
    }

    static func pad4(_ value: Int) -> String {
        let text = String(value)
        return String(repeating: "0", count: max(0, 4 - text.count)) + text
    }
}
