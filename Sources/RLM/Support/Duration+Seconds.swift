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
