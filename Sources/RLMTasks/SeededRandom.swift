/// A small, seeded pseudo-random generator (SplitMix64) whose output depends only on its seed.
///
/// The task suite must produce byte-identical tasks for one seed on every run, machine and Swift version, so it never
/// uses `SystemRandomNumberGenerator` nor the standard library's `random(in:using:)` / `shuffled(using:)` (their
/// algorithms are not a documented contract). Every draw goes through the methods below.
public struct SeededRandom: Sendable, Hashable {
    private var state: UInt64

    /// - Parameter seed: any value; equal seeds give equal sequences.
    public init(seed: UInt64) {
        self.state = seed
    }

    /// A generator for one part of a larger run, independent of the others: the same `seed` and `stream` always give
    /// the same sequence, and different streams give unrelated ones.
    /// - Parameters:
    ///   - seed: the run's seed.
    ///   - stream: which part (a task index, a kind's number, …).
    public init(seed: UInt64, stream: UInt64) {
        var mixer = SeededRandom(seed: seed ^ 0x5851_F42D_4C95_7F2D)
        let first = mixer.next()
        self.state = first ^ Self.mix(stream &+ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    /// A uniform integer in `range` (unbiased: rejection sampling on the top of the 64-bit range).
    /// - Parameter range: a non-empty range.
    public mutating func int(in range: ClosedRange<Int>) -> Int {
        let span = UInt64(bitPattern: Int64(range.upperBound &- range.lowerBound)) &+ 1
        if span == 0 { return Int(bitPattern: UInt(next())) }  // the whole Int range
        let limit = UInt64.max - (UInt64.max % span)
        var value = next()
        while value >= limit { value = next() }
        return range.lowerBound &+ Int(value % span)
    }

    /// A uniform integer in `range`.
    /// - Parameter range: a non-empty range.
    public mutating func int(in range: Range<Int>) -> Int {
        int(in: range.lowerBound...(range.upperBound - 1))
    }

    /// A uniform value in `[0, 1)` with 53 random bits.
    public mutating func unit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// `true` with probability `probability`.
    /// - Parameter probability: between 0 and 1.
    public mutating func chance(_ probability: Double) -> Bool {
        unit() < probability
    }

    /// A uniformly chosen element.
    /// - Parameter items: a non-empty collection.
    public mutating func pick<C: RandomAccessCollection>(_ items: C) -> C.Element where C.Index == Int {
        items[items.startIndex + int(in: 0..<items.count)]
    }

    /// An index drawn with the given relative weights.
    /// - Parameter weights: non-negative weights, not all zero.
    public mutating func weightedIndex(_ weights: [Int]) -> Int {
        let total = weights.reduce(0, +)
        var draw = int(in: 0..<total)
        for (index, weight) in weights.enumerated() {
            if draw < weight { return index }
            draw -= weight
        }
        return weights.count - 1
    }

    /// The elements in a random order (Fisher–Yates).
    /// - Parameter items: what to shuffle.
    public mutating func shuffled<T>(_ items: [T]) -> [T] {
        var items = items
        guard items.count > 1 else { return items }
        for i in stride(from: items.count - 1, to: 0, by: -1) {
            items.swapAt(i, int(in: 0...i))
        }
        return items
    }

    /// `count` lowercase hexadecimal digits.
    /// - Parameter count: how many digits.
    public mutating func hex(_ count: Int) -> String {
        let digits = Array("0123456789abcdef")
        var out = ""
        out.reserveCapacity(count)
        for _ in 0..<count { out.append(digits[int(in: 0..<16)]) }
        return out
    }

    /// `count` uppercase letters.
    /// - Parameter count: how many letters.
    public mutating func letters(_ count: Int) -> String {
        let alphabet = Array("ABCDEFGHJKLMNPQRSTUVWXYZ")
        var out = ""
        for _ in 0..<count { out.append(alphabet[int(in: 0..<alphabet.count)]) }
        return out
    }

    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
