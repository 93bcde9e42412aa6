import Foundation
import NIOHTTP1
import RLM

/// When and how long to wait before trying a failed call again: exponential backoff with full jitter.
///
/// Attempt `n` (1-based) that failed with a retryable error waits a random time in `0 ... min(maxDelay, baseDelay ×
/// 2^(n-1))`, or the server's `Retry-After` (capped at `maxDelay`) when it sent one.
public struct RetryPolicy: Sendable, Hashable {
    /// The most attempts, the first included; `1` disables retries.
    public var maxAttempts: Int
    /// The backoff ceiling for the first retry.
    public var baseDelay: Duration
    /// The longest wait between two attempts, `Retry-After` included.
    public var maxDelay: Duration
    /// Whether to wait a random fraction of the backoff (full jitter) rather than all of it.
    public var jitter: Bool

    /// - Parameters:
    ///   - maxAttempts: the most attempts, the first included (default 4).
    ///   - baseDelay: the backoff ceiling for the first retry (default 0.5 s).
    ///   - maxDelay: the longest wait between two attempts (default 30 s).
    ///   - jitter: whether to use full jitter (default `true`).
    public init(
        maxAttempts: Int = 4,
        baseDelay: Duration = .milliseconds(500),
        maxDelay: Duration = .seconds(30),
        jitter: Bool = true
    ) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.jitter = jitter
    }

    /// Never retry.
    public static let none = RetryPolicy(maxAttempts: 1)

    /// The wait before the next attempt.
    /// - Parameters:
    ///   - attempt: the attempt that just failed, starting at 1.
    ///   - retryAfter: the server's `Retry-After`, when it sent one.
    /// - Returns: how long to wait.
    public func delay(afterAttempt attempt: Int, retryAfter: Duration? = nil) -> Duration {
        if let retryAfter {
            return min(max(retryAfter, .zero), maxDelay)
        }
        let exponent = min(max(attempt - 1, 0), 30)
        let ceilingSeconds = min(maxDelay.inSeconds, baseDelay.inSeconds * Double(1 << exponent))
        guard ceilingSeconds > 0 else { return .zero }
        let seconds = jitter ? Double.random(in: 0...ceilingSeconds) : ceilingSeconds
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }

    /// Reads how long the server asks us to wait from `retry-after-ms` (milliseconds) or `Retry-After` (seconds or
    /// an HTTP date).
    /// - Parameters:
    ///   - headers: the response headers.
    ///   - now: the current time, for HTTP dates.
    /// - Returns: the wait, or `nil` when the server gave none (or gave one we cannot read).
    public static func retryAfter(from headers: HTTPHeaders, now: Date = Date()) -> Duration? {
        if let milliseconds = headers.first(name: "retry-after-ms").flatMap({ Double($0.trimmed) }),
            milliseconds.isFinite, milliseconds >= 0
        {
            return .milliseconds(Int64(min(milliseconds, 86_400_000).rounded(.up)))
        }
        guard let value = headers.first(name: "retry-after")?.trimmed, !value.isEmpty else { return nil }
        if let seconds = Double(value) {
            guard seconds.isFinite, seconds >= 0 else { return nil }
            return .milliseconds(Int64((min(seconds, 86_400) * 1000).rounded(.up)))
        }
        guard let date = HTTPDate.parse(value) else { return nil }
        let seconds = max(0, min(date.timeIntervalSince(now), 86_400))
        return .milliseconds(Int64((seconds * 1000).rounded(.up)))
    }
}

/// Parses the three date formats HTTP allows (RFC 9110 §5.6.7).
enum HTTPDate {
    private static let formats = [
        "EEE, dd MMM yyyy HH:mm:ss zzz",  // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        "EEEE, dd-MMM-yy HH:mm:ss zzz",  // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        "EEE MMM d HH:mm:ss yyyy",  // asctime: Sun Nov  6 08:49:37 1994
    ]

    static func parse(_ text: String) -> Date? {
        let collapsed = text.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        for format in formats {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = format
            if let date = formatter.date(from: collapsed) { return date }
        }
        return nil
    }

    static func format(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = formats[0]
        return formatter.string(from: date)
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
