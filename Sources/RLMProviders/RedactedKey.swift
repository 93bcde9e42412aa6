import Foundation

/// An API key that never prints: its description, debug description and reflection show `[REDACTED]`.
struct RedactedKey: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    let value: String

    init(_ value: String) { self.value = value }

    var description: String { "[REDACTED]" }
    var debugDescription: String { "[REDACTED]" }
    var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

extension RedactedKey {
    /// A key from user input: surrounding whitespace (a file's final newline) dropped; `nil` when nothing is left.
    static func make(_ value: String?) -> RedactedKey? {
        guard let trimmed = value?.trimmingCharacters(in: .whitespacesAndNewlines), !trimmed.isEmpty else {
            return nil
        }
        return RedactedKey(trimmed)
    }
}
