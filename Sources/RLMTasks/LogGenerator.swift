/// Writes a realistic service log, one line at a time:
///
/// ```text
/// 2026-11-21T10:04:05Z ERROR svc-7 req=9f3a1c2e method=GET path=/api/orders status=503 dur_ms=87 msg="upstream timed out"
/// 2026-11-21T10:04:06Z INFO svc-12 req=- msg="scheduled job finished"
/// ```
///
/// Fields are separated by single spaces: timestamp, level, service, `req=` (`-` for background lines), then for
/// requests `method=`, `path=`, `status=`, `dur_ms=`, and always a quoted `msg=` last. Some ERROR lines are followed by
/// indented traceback lines that carry no timestamp.
struct LogGenerator {
    /// One generated line and what it says, so questions can be answered while the log is written.
    struct Line {
        var text: String
        var level: String?
        var service: String?
        var path: String?
        var status: Int?
    }

    private var clock: Int64
    private let serviceErrorWeight: [Int]
    private let serviceWeight: [Int]

    /// - Parameter rng: draws the services' personalities (volume and failure rate) and the start time.
    init(rng: inout SeededRandom) {
        // 2026-11-21T00:00:00Z plus up to six hours.
        clock = Self.epochSeconds(year: 2026, month: 11, day: 21) + Int64(rng.int(in: 0..<21_600))
        serviceWeight = Vocabulary.services.map { _ in rng.int(in: 2...12) }
        serviceErrorWeight = Vocabulary.services.map { _ in rng.int(in: 2...18) }
    }

    /// The next line (or a traceback line after an ERROR).
    mutating func next(rng: inout SeededRandom) -> [Line] {
        clock += Int64(rng.weightedIndex([5, 4, 2, 1]))
        let serviceIndex = rng.weightedIndex(serviceWeight)
        let service = Vocabulary.services[serviceIndex]
        let level = Vocabulary.levels[rng.weightedIndex([14, 60, 14, serviceErrorWeight[serviceIndex]])]
        let stamp = Self.timestamp(clock)
        if rng.chance(0.28) {
            let message = rng.pick(Vocabulary.backgroundMessages[level]!)
            let text = "\(stamp) \(level) \(service) req=- msg=\"\(message)\""
            return [Line(text: text, level: level, service: service)]
        }
        let path = rng.pick(Vocabulary.paths)
        let method = rng.pick(Vocabulary.methodsForPath[path]!)
        let status: Int
        let message: String
        let duration: Int
        switch level {
        case "ERROR":
            status = rng.pick(Vocabulary.serverStatuses)
            message = rng.pick(Vocabulary.serverMessages)
            duration = rng.int(in: 200...30_000)
        case "WARN":
            if rng.chance(0.6) {
                status = rng.pick(Vocabulary.clientStatuses)
                message = rng.pick(Vocabulary.clientMessages)
                duration = rng.int(in: 2...400)
            } else {
                status = 200
                message = rng.pick(Vocabulary.slowMessages)
                duration = rng.int(in: 1_500...9_000)
            }
        default:
            status = rng.pick(Vocabulary.okStatusesByMethod[method]!)
            message = rng.chance(0.3) ? rng.pick(Vocabulary.okMessages) : rng.pick(Vocabulary.okMessagesByPath[path]!)
            duration = rng.int(in: 1...900)
        }
        let text =
            "\(stamp) \(level) \(service) req=\(rng.hex(8)) method=\(method) path=\(path) status=\(status) "
            + "dur_ms=\(duration) msg=\"\(message)\""
        var lines = [Line(text: text, level: level, service: service, path: path, status: status)]
        if level == "ERROR" && rng.chance(0.08) {
            lines.append(Line(text: "Traceback (most recent call last):"))
            for _ in 0..<rng.int(in: 1...3) { lines.append(Line(text: rng.pick(Vocabulary.traceFrames.dropLast(2)))) }
            lines.append(Line(text: rng.pick(Vocabulary.traceFrames.suffix(2))))
        }
        return lines
    }

    /// Seconds since 1970-01-01T00:00:00Z of midnight on a date (proleptic Gregorian calendar).
    static func epochSeconds(year: Int, month: Int, day: Int) -> Int64 {
        Int64(daysFromCivil(year: year, month: month, day: day)) * 86_400
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`, computed without Foundation's calendars (same output on every platform).
    static func timestamp(_ seconds: Int64) -> String {
        let days = Int(seconds / 86_400)
        let rest = Int(seconds % 86_400)
        let (year, month, day) = civilFromDays(days)
        return "\(year)-\(pad(month))-\(pad(day))T\(pad(rest / 3600)):\(pad(rest / 60 % 60)):\(pad(rest % 60))Z"
    }

    /// `YYYY-MM-DD` of a day number since 1970-01-01.
    static func date(days: Int) -> String {
        let (year, month, day) = civilFromDays(days)
        return "\(year)-\(pad(month))-\(pad(day))"
    }

    static func pad(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }

    // Howard Hinnant's algorithms (days since 1970-01-01 ↔ civil date).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ days: Int) -> (Int, Int, Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
