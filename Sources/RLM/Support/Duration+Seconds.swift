/// The one conversion from `Duration` to floating-point time: every module uses these rather than its own
/// `components` arithmetic.
extension Duration {
    /// This duration in seconds.
    public var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// This duration in milliseconds.
    public var inMilliseconds: Double { inSeconds * 1000 }
}

extension Duration {
    /// A duration from seconds a user typed: `nil` unless finite, positive and at most a year (so `inf`, `nan` or
    /// `1e300` are refused instead of trapping).
    /// - Parameter seconds: the value.
    public init?(userSeconds seconds: Double) {
        guard seconds.isFinite, seconds > 0, seconds <= 366 * 86_400 else { return nil }
        self = .nanoseconds(Int64((seconds * 1e9).rounded()))
    }
}
