import Foundation
import RLM

/// Join: a small directory (documents headed `### path`) of files in different formats, and a question that needs an
/// exact join on an id. Ids are numbered without padding (`C-12`, `C-120`), so a substring match over-counts.
enum JoinTaskGenerator {
    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        switch rng.int(in: 0..<3) {
        case 0: return customersOrders(rng: &rng, sizeBytes: sizeBytes)
        case 1: return productsSales(rng: &rng, sizeBytes: sizeBytes)
        default: return usersEvents(rng: &rng, sizeBytes: sizeBytes)
        }
    }

    static let regions = ["north", "south", "east", "west", "central"]
    static let surnames = ["Silva", "Tanaka", "Okafor", "Novak", "Berg", "Costa", "Moreau", "Khan", "Lopez", "Weber"]

    /// Picks the group whose exact answer differs most often from a substring count, so the trap is real; `exact`
    /// and `naive` answer for one group.
    private static func pickGroup(
        _ groups: [String], rng: inout SeededRandom, exact: (String) -> Int, naive: (String) -> Int
    ) -> String {
        let trapped = groups.filter { exact($0) != naive($0) && exact($0) > 0 }
        return rng.pick(trapped.isEmpty ? groups : trapped)
    }

    private static func customersOrders(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let customerCount = max(150, sizeBytes / 1_500)
        var region = [String: String]()
        var csv = "customer_id,name,region,signup_date,tier,email\n"
        let startDay = LogGenerator.daysFromCivil(year: 2024, month: 1, day: 1)
        for number in 1...customerCount {
            let id = "C-\(number)"
            let first = rng.pick(Vocabulary.people)
            let last = rng.pick(surnames)
            region[id] = rng.pick(regions)
            csv +=
                "\(id),\(first) \(last),\(region[id]!),\(LogGenerator.date(days: startDay + rng.int(in: 0...700))),"
                + "\(rng.pick(["basic", "basic", "plus", "pro"])),\(first.lowercased()).\(last.lowercased())"
                + "\(number)@example.com\n"
        }
        var orders = [(customer: String, amount: Int, status: String)]()
        var jsonl = ""
        var number = rng.int(in: 10_000...50_000)
        let weights = (1...customerCount).map { _ in rng.int(in: 1...6) }
        let orderDay = LogGenerator.daysFromCivil(year: 2026, month: 1, day: 1)
        while csv.utf8.count + jsonl.utf8.count < sizeBytes - 400 {
            number += rng.int(in: 1...3)
            let customer = "C-\(rng.weightedIndex(weights) + 1)"
            let amount = rng.int(in: 8...900)
            let status = rng.pick(["paid", "paid", "paid", "refunded", "pending"])
            orders.append((customer, amount, status))
            jsonl +=
                "{\"order_id\": \"O-\(number)\", \"customer_id\": \"\(customer)\", \"amount\": \(amount), "
                + "\"currency\": \"USD\", \"status\": \"\(status)\", \"created\": "
                + "\"\(LogGenerator.date(days: orderDay + rng.int(in: 0...300)))\", \"channel\": "
                + "\"\(rng.pick(["web", "app", "phone"]))\"}\n"
        }
        let readme =
            "# Export\n\ncustomers.csv: one row per customer. orders.jsonl: one JSON object per order; customer_id "
            + "refers to customers.csv.\n"
        let documents = ["### README.md\n" + readme, "### customers.csv\n" + csv, "### orders.jsonl\n" + jsonl]
        let counting = rng.chance(0.5)
        func exact(_ group: String) -> Int {
            let matching = orders.filter { region[$0.customer] == group && $0.status == "paid" }
            return counting ? matching.count : matching.reduce(0) { $0 + $1.amount }
        }
        func naive(_ group: String) -> Int {
            let matching = orders.filter { order in
                order.status == "paid" && prefixIDs(order.customer, prefix: "C-").contains { region[$0] == group }
            }
            return counting ? matching.count : matching.reduce(0) { $0 + $1.amount }
        }
        let group = pickGroup(regions, rng: &rng, exact: exact, naive: naive)
        let query =
            counting
            ? rng.pick([
                "How many orders with the status paid in orders.jsonl came from customers whose region is \(group) "
                    + "in customers.csv?",
                "Counting only paid orders, how many orders were placed by customers in the \(group) region?",
            ])
            : rng.pick([
                "What is the total amount, in dollars, of the paid orders from customers in the \(group) region? "
                    + "(Regions are in customers.csv, orders in orders.jsonl.)",
                "Sum the amount of every order with the status paid whose customer's region is \(group). What is "
                    + "the total?",
            ])
        return GeneratedTask(
            query: query, context: .documents(documents), answer: String(exact(group)),
            answerKind: counting ? .integer : .number)
    }

    static let categories = ["audio", "lighting", "furniture", "cables", "storage", "office", "peripherals"]

    /// The category of each of ``Vocabulary/products``.
    static let categoryOfProduct: [String: String] = [
        "USB-C cable": "cables", "Desk lamp": "lighting", "Wireless mouse": "peripherals",
        "Mechanical keyboard": "peripherals", "27in monitor": "peripherals", "Laptop stand": "office",
        "Noise-cancelling headphones": "audio", "Webcam": "peripherals", "Office chair": "furniture",
        "Notebook pack": "office", "Standing desk": "furniture", "HDMI adapter": "cables",
        "Portable SSD 1TB": "storage",
        "Phone charger": "cables", "Cable organizer": "office", "Ergonomic footrest": "furniture",
    ]

    private static func productsSales(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let productCount = max(130, min(400, sizeBytes / 1_000))
        var category = [String: String]()
        var products = "sku,name,category,unit_price,supplier,weight_kg\n"
        for number in 1...productCount {
            let sku = "SKU-\(number)"
            let base = rng.pick(Vocabulary.products).name
            category[sku] = categoryOfProduct[base]!
            products +=
                "\(sku),\(base) \(rng.pick(["mk\(rng.int(in: 2...5))", "pro", "lite", "s", "x"])),\(category[sku]!),"
                + "\(rng.int(in: 5...600)).\(LogGenerator.pad(rng.int(in: 0...99))),"
                + "\(rng.pick(Vocabulary.vendorNames)),\(rng.int(in: 0...9)).\(rng.int(in: 1...9))\n"
        }
        let months = rng.int(in: 2...3)
        let budget = max(1, (sizeBytes - products.utf8.count) / months)
        var sales = [(sku: String, quantity: Int)]()
        var documents = ["### products.csv\n" + products]
        let weights = (1...productCount).map { _ in rng.int(in: 1...5) }
        for month in 1...months {
            var file = "date,store,sku,quantity,unit_price,discount\n"
            while file.utf8.count < budget {
                let sku = "SKU-\(rng.weightedIndex(weights) + 1)"
                let quantity = rng.weightedIndex([0, 8, 4, 2, 1, 1])
                sales.append((sku, quantity))
                file +=
                    "2026-\(LogGenerator.pad(month))-\(LogGenerator.pad(rng.int(in: 1...28))),"
                    + "\(rng.pick(["LIS-01", "OPO-02", "MAD-01", "BCN-03", "ONLINE"])),\(sku),\(quantity),"
                    + "\(rng.int(in: 5...600)).\(LogGenerator.pad(rng.int(in: 0...99))),"
                    + "\(rng.pick(["0", "0", "0", "0.1", "0.15"]))\n"
            }
            documents.append("### sales/2026-\(LogGenerator.pad(month)).csv\n" + file)
        }
        func exact(_ group: String) -> Int {
            sales.filter { category[$0.sku] == group }.reduce(0) { $0 + $1.quantity }
        }
        func naive(_ group: String) -> Int {
            sales.filter { sale in prefixIDs(sale.sku, prefix: "SKU-").contains { category[$0] == group } }
                .reduce(0) { $0 + $1.quantity }
        }
        let group = pickGroup(categories, rng: &rng, exact: exact, naive: naive)
        let query = rng.pick([
            "What is the total quantity sold of products in the category \(group), over all files under sales/?",
            "How many units of \(group) products were sold in total? Categories are in products.csv; sales are in "
                + "the files under sales/.",
        ])
        return GeneratedTask(
            query: query, context: .documents(documents), answer: String(exact(group)), answerKind: .integer)
    }

    static let teams = ["payments", "search", "mobile", "data", "security", "growth"]

    private static func usersEvents(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let userCount = max(120, min(400, sizeBytes / 900))
        var team = [String: String]()
        var users = "[\n"
        for number in 1...userCount {
            let id = "u\(number)"
            team[id] = rng.pick(teams)
            let name = "\(rng.pick(Vocabulary.people)) \(rng.pick(surnames))"
            users +=
                "  {\"id\": \"\(id)\", \"name\": \"\(name)\", \"team\": \"\(team[id]!)\", \"active\": "
                + "\(rng.chance(0.85) ? "true" : "false"), \"joined\": \"20\(rng.int(in: 19...25))-"
                + "\(LogGenerator.pad(rng.int(in: 1...12)))-\(LogGenerator.pad(rng.int(in: 1...28)))\"}"
                + (number == userCount ? "\n" : ",\n")
        }
        users += "]\n"
        var events = [(user: String, action: String, result: String)]()
        var log = ""
        var clock = LogGenerator.epochSeconds(year: 2026, month: 11, day: 21) + Int64(rng.int(in: 0..<3_600))
        let weights = (1...userCount).map { _ in rng.int(in: 1...6) }
        while users.utf8.count + log.utf8.count < sizeBytes - 100 {
            clock += Int64(rng.int(in: 0...20))
            let user = "u\(rng.weightedIndex(weights) + 1)"
            let action = rng.pick(["login", "login", "logout", "view", "export", "password_change"])
            let result = action == "login" && rng.chance(0.2) ? "denied" : "ok"
            events.append((user, action, result))
            log +=
                "\(LogGenerator.timestamp(clock)) user=\(user) action=\(action) result=\(result) ip=10.1."
                + "\(rng.int(in: 0...9)).\(rng.int(in: 1...250))\n"
        }
        let documents = ["### users.json\n" + users, "### events.log\n" + log]
        func exact(_ group: String) -> Int {
            events.filter { team[$0.user] == group && $0.action == "login" && $0.result == "ok" }.count
        }
        func naive(_ group: String) -> Int {
            events.filter { event in
                event.action == "login" && event.result == "ok"
                    && prefixIDs(event.user, prefix: "u").contains { team[$0] == group }
            }.count
        }
        let group = pickGroup(teams, rng: &rng, exact: exact, naive: naive)
        let query = rng.pick([
            "How many successful logins (action=login result=ok) in events.log were made by users of the team "
                + "\(group) in users.json?",
            "Users belong to teams (users.json). How many login events with result=ok did members of the \(group) "
                + "team have in events.log?",
        ])
        return GeneratedTask(
            query: query, context: .documents(documents), answer: String(exact(group)), answerKind: .integer)
    }
}

/// JSON lines: orders with nested objects (`customer`, `shipping.address`, `payment`), a list of item objects, and
/// optional fields (`refund`, `coupon`, `shipping.address.zip`). The question averages a nested field over a filter
/// and states the rounding; the data never puts the exact value within 1e-6 of a rounding boundary.
/// Each field has one casing: lowercase (`status`, `tier`, `method`), capitalized (`payment.method`: `Card`,
/// `PayPal`; cities) or upper case (`country`, `coupon`), and the question quotes values exactly.
enum JSONLinesTaskGenerator {
    private static let places: [(country: String, cities: [String])] = [
        ("NO", ["Oslo", "Bergen"]), ("SE", ["Stockholm", "Malmo"]), ("DK", ["Copenhagen", "Aarhus"]),
        ("DE", ["Berlin", "Hamburg"]), ("FR", ["Paris", "Lyon"]), ("NL", ["Amsterdam", "Utrecht"]),
        ("PT", ["Lisbon", "Porto"]),
    ]
    private static let statuses = ["pending", "paid", "shipped", "delivered", "delivered", "cancelled", "returned"]

    struct Record {
        var status: String
        var tier: String
        var country: String
        var method: String
        var hasCoupon: Bool
        var quantities: [Int]
        var amountCents: Int
        var text: String
    }

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var records = [Record]()
        var bytes = 0
        var number = rng.int(in: 1_000...50_000)
        let startDay = LogGenerator.daysFromCivil(year: 2026, month: 1, day: 1)
        while bytes < sizeBytes {
            number += 1
            let record = makeRecord(id: number, day: startDay + rng.int(in: 0...300), rng: &rng)
            bytes += record.text.utf8.count + 1
            records.append(record)
        }
        let template = rng.int(in: 0..<3)
        let filter: (Record) -> Bool
        let query: String
        // Makes one more record that passes the filter.
        let matchingRecord: (Int, inout SeededRandom) -> Record
        var numerator: (Record) -> Int = { $0.amountCents }
        switch template {
        case 0:
            let country = rng.pick(places).country
            let status = rng.pick(["delivered", "shipped", "paid"])
            filter = { $0.country == country && $0.status == status }
            matchingRecord = { makeRecord(id: $0, day: startDay + 300, rng: &$1, status: status, country: country) }
            query = rng.pick([
                "What is the average `payment.amount` of the records with `shipping.country` equal to "
                    + "\"\(country)\" and `status` equal to \"\(status)\", rounded to 2 decimals?",
                "Over the lines whose status is \"\(status)\" and whose shipping country is \"\(country)\", what "
                    + "is the mean of payment.amount? Round to 2 decimal places.",
            ])
        case 1:
            let tier = rng.pick(["gold", "silver", "bronze"])
            filter = { $0.tier == tier && $0.hasCoupon }
            matchingRecord = { makeRecord(id: $0, day: startDay + 300, rng: &$1, tier: tier, coupon: true) }
            query =
                "What is the average `payment.amount` of the records that have a `coupon` field and whose "
                + "`customer.tier` is \"\(tier)\", rounded to 1 decimal?"
        default:
            let method = rng.pick(["express", "standard", "pickup"])
            filter = { $0.method == method && $0.status == "delivered" }
            matchingRecord = {
                makeRecord(id: $0, day: startDay + 300, rng: &$1, status: "delivered", method: method)
            }
            numerator = { $0.quantities.reduce(0, +) * 100 }
            query =
                "For records with `shipping.method` \"\(method)\" and `status` \"delivered\", what is the average "
                + "total quantity per record (the sum of `qty` over its `items`), rounded to 2 decimals?"
        }
        let decimals = template == 1 ? 1 : 2
        // Add matching records (at random places) until at least three match and the average is clear of a
        // rounding boundary.
        var answer: String?
        while answer == nil {
            let matching = records.filter(filter)
            if matching.count >= 3 {
                let sum = matching.reduce(0) { $0 + numerator($1) }
                answer = Exact.rounded(hundredths: sum, over: matching.count, decimals: decimals)
                if answer != nil { break }
            }
            number += 1
            records.insert(matchingRecord(number, &rng), at: rng.int(in: 0...records.count))
        }
        return GeneratedTask(
            query: query, context: .text(join(records.map(\.text))), answer: answer!, answerKind: .number)
    }

    private static func makeRecord(
        id: Int, day: Int, rng: inout SeededRandom, status: String? = nil, tier: String? = nil,
        country: String? = nil, method: String? = nil, coupon: Bool? = nil
    ) -> Record {
        let status = status ?? rng.pick(statuses)
        let tier = tier ?? rng.pick(["gold", "silver", "silver", "bronze", "bronze", "bronze"])
        let place = country.flatMap { code in places.first { $0.country == code } } ?? rng.pick(places)
        let method = method ?? rng.pick(["standard", "standard", "express", "pickup"])
        let hasCoupon = coupon ?? rng.chance(0.3)
        var items = [String]()
        var quantities = [Int]()
        var cents = 0
        for _ in 0..<rng.int(in: 1...4) {
            let quantity = rng.weightedIndex([0, 6, 3, 1])
            let price = rng.int(in: 199...25_000)
            quantities.append(quantity)
            cents += quantity * price
            items.append(
                "{\"sku\": \"SKU-\(rng.int(in: 1...400))\", \"qty\": \(quantity), \"price\": \(Exact.dollars(price))}")
        }
        let fee = method == "express" ? 1_490 : method == "standard" ? 490 : 0
        cents += fee
        if hasCoupon { cents -= min(cents / 10, 2_000) }
        let customer = "{\"id\": \"C-\(rng.int(in: 1...3_000))\", \"tier\": \"\(tier)\"}"
        let zip = rng.chance(0.7) ? ", \"zip\": \"\(rng.int(in: 1_000...9_999))\"" : ""
        let shipping =
            "{\"country\": \"\(place.country)\", \"method\": \"\(method)\", \"address\": {\"city\": "
            + "\"\(rng.pick(place.cities))\"\(zip)}}"
        var text =
            "{\"id\": \"ord_\(id)\", \"created\": \"\(LogGenerator.date(days: day))T"
            + "\(LogGenerator.pad(rng.int(in: 0...23))):\(LogGenerator.pad(rng.int(in: 0...59))):00Z\", "
            + "\"status\": \"\(status)\", \"customer\": \(customer), \"shipping\": \(shipping), "
            + "\"items\": [\(items.joined(separator: ", "))]"
        if status == "returned" || (status == "delivered" && rng.chance(0.1)) {
            text +=
                ", \"refund\": {\"amount\": \(Exact.dollars(rng.int(in: 100...max(101, cents)))), \"reason\": "
                + "\"\(rng.pick(["damaged", "late", "wrong item", "changed mind"]))\"}"
        }
        text +=
            ", \"payment\": {\"amount\": \(Exact.dollars(cents)), \"currency\": \"EUR\", \"method\": "
            + "\"\(rng.pick(["Card", "Card", "PayPal", "Klarna"]))\"}"
        if hasCoupon { text += ", \"coupon\": \"\(rng.pick(["SPRING10", "WELCOME", "VIP10", "BLACKFRIDAY"]))\"" }
        text += "}"
        return Record(
            status: status, tier: tier, country: place.country, method: method, hasCoupon: hasCoupon,
            quantities: quantities, amountCents: cents, text: text)
    }
}

/// CSV: a header, quoted fields with commas and doubled quotes, decimal amounts, a `tags` column of `a;b;c` with near
/// misses (`refund` and `refund-requested`), and a `meta` column holding a JSON object. A filtered sum or average,
/// rounding stated.
enum CSVTaskGenerator {
    private static let tags = ["urgent", "gift", "bulk", "refund", "refund-requested", "b2b", "promo", "promo-code"]
    private static let channels = ["web", "store", "phone", "partner"]

    struct Row {
        var category: String
        var amountCents: Int
        var currency: String
        var tags: [String]
        var channel: String
    }

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var rows = [Row]()
        var text = "txn_id,date,customer,description,category,amount,currency,tags,meta\n"
        var number = rng.int(in: 100_000...400_000)
        let colors = ["black", "white", "oak", "grey", "red"]
        while text.utf8.count < sizeBytes {
            number += rng.int(in: 1...3)
            let product = rng.pick(Vocabulary.products)
            let category = JoinTaskGenerator.categoryOfProduct[product.name]!
            let cents = rng.int(in: 150...90_000)
            let currency = rng.pick(["EUR", "EUR", "USD", "GBP"])
            let rowTags = Array(rng.shuffled(tags).prefix(rng.weightedIndex([3, 4, 2, 1])))
            let channel = rng.pick(channels)
            rows.append(
                Row(category: category, amountCents: cents, currency: currency, tags: rowTags, channel: channel))
            let description: String
            switch rng.int(in: 0..<3) {
            case 0:
                let units = rng.int(in: 1...5)
                description = "\"\(product.name), \(rng.pick(colors)), \(units) unit\(units == 1 ? "" : "s")\""
            case 1: description = "\"\(product.name) \"\"\(rng.pick(["refurbished", "demo", "boxed"]))\"\"\""
            default: description = product.name
            }
            let tagCell = rowTags.count > 1 ? "\"\(rowTags.joined(separator: ";"))\"" : rowTags.first ?? ""
            let meta =
                "\"{\"\"channel\"\": \"\"\(channel)\"\", \"\"priority\"\": \(rng.int(in: 1...4))"
                + (rng.chance(0.3)
                    ? ", \"\"note\"\": \"\"\(rng.pick(["call first", "fragile", "split, if needed"]))\"\"" : "")
                + "}\""
            text +=
                "T-\(number),2026-\(LogGenerator.pad(rng.int(in: 1...12)))-\(LogGenerator.pad(rng.int(in: 1...28))),"
                + "C-\(AggregationTaskGenerator.pad4(rng.int(in: 1...9999))),\(description),\(category),"
                + "\(Exact.dollars(cents)),\(currency),\(tagCell),\(meta)\n"
        }
        switch rng.int(in: 0..<3) {
        case 0:
            // A category and tag with at least two rows (in a fixed order, so the choice depends only on the draw).
            var pairs = [(String, String)]()
            for category in JoinTaskGenerator.categories {
                for tag in ["refund", "promo"]
                where rows.filter({ $0.category == category && $0.tags.contains(tag) }).count >= 2 {
                    pairs.append((category, tag))
                }
            }
            let (category, tag) = pairs.isEmpty ? ("audio", "refund") : rng.pick(pairs)
            let sum = rows.filter { $0.category == category && $0.tags.contains(tag) }.reduce(0) { $0 + $1.amountCents }
            return GeneratedTask(
                query: "What is the total `amount` of the rows with category \(category) whose `tags` include the "
                    + "tag \(tag) (exactly that tag, not a longer one), rounded to 2 decimals?",
                context: .text(text), answer: Exact.dollars(sum), answerKind: .number)
        default:
            // Averages: choose a filter whose exact mean is clear of rounding boundaries.
            let decimals = rng.chance(0.5) ? 2 : 1
            var options = [(String, (Row) -> Bool)]()
            for channel in channels {
                for currency in ["EUR", "USD", "GBP"] {
                    options.append(
                        (
                            "whose `meta` has \"channel\": \"\(channel)\" and whose currency is \(currency)",
                            { $0.channel == channel && $0.currency == currency }
                        ))
                }
            }
            for category in JoinTaskGenerator.categories {
                options.append(
                    (
                        "with category \(category), currency EUR and the tag bulk",
                        { $0.category == category && $0.currency == "EUR" && $0.tags.contains("bulk") }
                    ))
            }
            let order = rng.shuffled(Array(options.indices))
            for index in order {
                let (phrase, filter) = options[index]
                let matching = rows.filter(filter)
                guard matching.count >= 3,
                    let answer = Exact.rounded(
                        hundredths: matching.reduce(0) { $0 + $1.amountCents }, over: matching.count,
                        decimals: decimals)
                else { continue }
                return GeneratedTask(
                    query: "What is the average `amount` of the rows \(phrase), rounded to \(decimals) "
                        + "decimal\(decimals == 1 ? "" : "s")?",
                    context: .text(text), answer: answer, answerKind: .number)
            }
            let sum = rows.reduce(0) { $0 + $1.amountCents }
            return GeneratedTask(
                query: "What is the total `amount` of all rows, rounded to 2 decimals?", context: .text(text),
                answer: Exact.dollars(sum), answerKind: .number)
        }
    }
}
