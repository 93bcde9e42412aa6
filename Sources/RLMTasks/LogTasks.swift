import RLM

/// What a generator produces before the suite names it.
struct GeneratedTask {
    var query: String
    var context: ContextValue
    var answer: String
    var answerKind: AnswerKind
}

/// Which count a counting task asks for.
public enum CountingQuestion: Sendable, Hashable {
    /// "How many `level` lines are there for service `service`?"
    case levelForService(level: String, service: String)
    /// "How many requests to `path` returned status `status`?"
    case pathWithStatus(path: String, status: Int)

    var query: String {
        switch self {
        case .levelForService(let level, let service):
            return "How many \(level) lines are there for service \(service)?"
        case .pathWithStatus(let path, let status):
            return "How many requests to \(path) returned status \(status)?"
        }
    }

    func matches(_ line: LogGenerator.Line) -> Bool {
        switch self {
        case .levelForService(let level, let service): return line.level == level && line.service == service
        case .pathWithStatus(let path, let status): return line.path == path && line.status == status
        }
    }
}

/// Counting: a long log, and a question whose answer is the number of lines with some fields.
enum CountingTaskGenerator {
    static func make(rng: inout SeededRandom, sizeBytes: Int, question: CountingQuestion? = nil) -> GeneratedTask {
        var log = LogGenerator(rng: &rng)
        var lines = [LogGenerator.Line]()
        var bytes = 0
        while bytes < sizeBytes {
            for line in log.next(rng: &rng) {
                bytes += line.text.utf8.count + 1
                lines.append(line)
            }
        }
        let chosen = question ?? pickQuestion(lines: lines, rng: &rng)
        let count = lines.reduce(0) { $0 + (chosen.matches($1) ? 1 : 0) }
        return GeneratedTask(
            query: chosen.query, context: .text(join(lines.map(\.text))), answer: String(count),
            answerKind: .integer)
    }

    private static func pickQuestion(lines: [LogGenerator.Line], rng: inout SeededRandom) -> CountingQuestion {
        if rng.chance(0.5) {
            let level = Vocabulary.levels[rng.weightedIndex([1, 0, 3, 6])]
            return .levelForService(level: level, service: rng.pick(Vocabulary.questionServices))
        }
        // A path and status that failed at least three times (a count of one is a lookup, not a count), in a fixed
        // order so the choice depends only on the draw.
        var counts = [String: Int]()
        for line in lines where (line.status ?? 0) >= 400 { counts["\(line.path!) \(line.status!)", default: 0] += 1 }
        let frequent = counts.filter { $0.value >= 3 }.keys.sorted()
        let pool = frequent.isEmpty ? counts.keys.sorted() : frequent
        guard !pool.isEmpty else { return .pathWithStatus(path: "/api/orders", status: 503) }
        let parts = rng.pick(pool).split(separator: " ")
        return .pathWithStatus(path: String(parts[0]), status: Int(parts[1])!)
    }
}

/// Needle: one fact planted at a random depth in a long log or prose, among near-miss decoys (the same fact for
/// other, similarly named entities, and mentions of the entity without the fact).
enum NeedleTaskGenerator {
    private struct Template: Sendable {
        var thing: String
        var holder: String
        var names: [String]
        var numberRange: ClosedRange<Int>
        var value: @Sendable (inout SeededRandom) -> String
        var mention: @Sendable (String) -> String
    }

    private static let templates: [Template] = [
        Template(
            thing: "deploy key", holder: "cluster", names: Vocabulary.greek, numberRange: 10...99,
            value: { "\($0.letters(2))-\($0.int(in: 1000...9999))-\($0.letters(2))" },
            mention: { "cluster \($0) scaled to 12 nodes" }),
        Template(
            thing: "recovery code", holder: "vault", names: Vocabulary.stars, numberRange: 2...60,
            value: { "\($0.int(in: 1000...9999))-\($0.letters(4))-\($0.int(in: 10...99))" },
            mention: { "vault \($0) sealed for maintenance" }),
        Template(
            thing: "access token", holder: "tenant", names: Vocabulary.companies, numberRange: 100...999,
            value: { "tk_\($0.hex(12))" },
            mention: { "tenant \($0) exceeded its request quota" }),
    ]

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        let template = rng.pick(templates)
        let number = rng.int(in: template.numberRange)
        let base = rng.pick(template.names)
        let target = "\(base)-\(number)"
        let decoys = decoyNames(base: base, number: number, template: template, rng: &rng)
        var values = Set<String>()
        func freshValue() -> String {
            while true {
                let value = template.value(&rng)
                if values.insert(value).inserted { return value }
            }
        }
        let answer = freshValue()
        func fact(_ name: String, _ value: String) -> String {
            "the \(template.thing) for \(template.holder) \(name) is \(value)"
        }
        var planted = [fact(target, answer)]
        planted += decoys.map { fact($0, freshValue()) }
        planted += (0..<rng.int(in: 1...3)).map { _ in template.mention(target) }
        let query = "What is the \(template.thing) for \(template.holder) \(target)?"
        let context: String
        if rng.chance(0.5) {
            context = plantInLog(planted, sizeBytes: sizeBytes, rng: &rng)
        } else {
            context = plantInProse(planted, sizeBytes: sizeBytes, rng: &rng)
        }
        return GeneratedTask(query: query, context: .text(context), answer: answer, answerKind: .text)
    }

    /// Names one edit away from the target: digits swapped, a digit appended, the number ±1, another base name.
    private static func decoyNames(base: String, number: Int, template: Template, rng: inout SeededRandom) -> [String] {
        let digits = String(number)
        var candidates = [
            "\(base)-\(String(digits.reversed()))", "\(base)-\(number)0", "\(base)-\(number + 1)",
            "\(base)-\(number - 1)", "\(rng.pick(template.names.filter { $0 != base }))-\(number)",
            "\(rng.pick(template.names.filter { $0 != base }))-\(number)",
        ]
        let target = "\(base)-\(number)"
        var seen = Set([target])
        candidates = candidates.filter { seen.insert($0).inserted }
        return Array(rng.shuffled(candidates).prefix(rng.int(in: 3...candidates.count)))
    }

    /// Plants each fact as its own background line at a random depth (the true fact between 5% and 95%).
    private static func plantInLog(_ planted: [String], sizeBytes: Int, rng: inout SeededRandom) -> String {
        var log = LogGenerator(rng: &rng)
        var lines = [String]()
        let plantedBytes = planted.reduce(0) { $0 + $1.utf8.count + 60 }
        var bytes = 0
        while bytes < sizeBytes - plantedBytes {
            for line in log.next(rng: &rng) {
                bytes += line.text.utf8.count + 1
                lines.append(line.text)
            }
        }
        let positions = planted.indices.map { index -> Int in
            index == 0
                ? Int(Double(lines.count) * (0.05 + 0.9 * rng.unit()))
                : rng.int(in: 1..<max(2, lines.count))
        }
        // Insert from the deepest position up so earlier indices stay valid; equal positions keep input order.
        let order = positions.indices.sorted {
            positions[$0] != positions[$1] ? positions[$0] > positions[$1] : $0 > $1
        }
        for index in order {
            // The planted line takes the timestamp of the line above it, so times stay in order.
            let above = lines[..<positions[index]].last { $0.hasPrefix("20") } ?? lines[0]
            let service = rng.pick(Vocabulary.services)
            lines.insert("\(above.prefix(20)) INFO \(service) req=- msg=\"\(planted[index])\"", at: positions[index])
        }
        return join(lines)
    }

    /// Plants each fact as a sentence inside a paragraph of meeting-notes prose.
    private static func plantInProse(_ planted: [String], sizeBytes: Int, rng: inout SeededRandom) -> String {
        var paragraphs = [String]()
        var bytes = 0
        let plantedBytes = planted.reduce(0) { $0 + $1.utf8.count + 2 }
        var week = rng.int(in: 1...20)
        while bytes < sizeBytes - plantedBytes {
            let paragraph: String
            if rng.chance(0.08) {
                week += 1
                paragraph = "## Notes, week \(week)"
            } else {
                paragraph = (0..<rng.int(in: 3...7)).map { _ in ProseGenerator.sentence(rng: &rng) }.joined(
                    separator: " ")
            }
            bytes += paragraph.utf8.count + 2
            paragraphs.append(paragraph)
        }
        for (index, fact) in planted.enumerated() {
            let sentence = "Note that " + fact + "."
            let at =
                index == 0
                ? Int(Double(paragraphs.count) * (0.05 + 0.9 * rng.unit()))
                : rng.int(in: 1..<max(2, paragraphs.count))
            let position = min(at, paragraphs.count - 1)
            if paragraphs[position].hasPrefix("## ") {
                paragraphs.insert(sentence, at: position + 1)
            } else {
                paragraphs[position] += " " + sentence
            }
        }
        return paragraphs.joined(separator: "\n\n") + "\n"
    }
}

/// Sentences of plausible, unremarkable meeting notes.
enum ProseGenerator {
    static func sentence(rng: inout SeededRandom) -> String {
        let person = rng.pick(Vocabulary.people)
        let other = rng.pick(Vocabulary.people)
        let team = rng.pick(Vocabulary.teams)
        let noun = rng.pick(Vocabulary.nouns)
        let region = rng.pick(Vocabulary.regions)
        switch rng.int(in: 0..<9) {
        case 0: return "The \(team) team \(rng.pick(Vocabulary.pastVerbs)) the \(noun) for the \(region) region."
        case 1: return "\(person) \(rng.pick(Vocabulary.pastVerbs)) the \(noun) on \(rng.pick(Vocabulary.weekdays))."
        case 2:
            return "After a \(rng.pick(Vocabulary.adjectives)) discussion about \(rng.pick(Vocabulary.topics)), "
                + "\(person) agreed to follow up with \(other)."
        case 3: return "\(person) asked whether the \(noun) still matches what the \(team) team needs."
        case 4:
            return "The \(region) office reported \(rng.int(in: 2...40)) open items, down from "
                + "\(rng.int(in: 41...90)) last month."
        case 5: return "Nobody objected when \(person) suggested moving \(rng.pick(Vocabulary.topics)) to next week."
        case 6: return "\(person) and \(other) will pair on the \(noun) before the \(team) sync."
        case 7:
            return "A \(rng.pick(Vocabulary.adjectives)) review of the \(noun) found \(rng.int(in: 2...9)) "
                + "small issues and no blockers."
        default: return "The \(team) team thanked \(person) for the \(rng.pick(Vocabulary.adjectives)) summary."
        }
    }
}

/// Lines joined with `\n`, ending with one.
func join(_ lines: [String]) -> String {
    var text = ""
    text.reserveCapacity(lines.reduce(0) { $0 + $1.utf8.count + 1 })
    for line in lines {
        text += line
        text += "\n"
    }
    return text
}
