import Foundation
import MCP

/// A mistake in a tool call's arguments, said so the model that made it can correct itself (answered as a tool
/// result with `isError: true`, never as a protocol error).
struct ToolArgumentError: Error, Sendable, CustomStringConvertible {
    var message: String

    init(_ message: String) { self.message = message }

    var description: String { message }
}

/// One tool call's arguments, checked against what the tool takes: names, types, required ones.
///
/// JSON `null` counts as absent (some clients send every optional field). A string argument comes back exactly as
/// the client sent it, even one that looks like a data URL (see ``ArgumentEscaping``).
struct ToolArguments {
    let tool: String
    private let values: [String: Value]

    /// - Parameters:
    ///   - tool: the tool's name, for messages.
    ///   - arguments: the call's arguments.
    ///   - allowed: every argument the tool takes.
    /// - Throws: ``ToolArgumentError`` naming the first unknown argument.
    init(tool: String, arguments: [String: Value]?, allowed: [String]) throws {
        self.tool = tool
        let values = (arguments ?? [:]).filter { !$0.value.isNull }
        if let unknown = values.keys.sorted().first(where: { !allowed.contains($0) }) {
            let takes = allowed.isEmpty ? "no arguments" : "only " + allowed.joined(separator: ", ")
            throw ToolArgumentError("\(tool) has no argument \(Self.quoted(unknown)); it takes \(takes)")
        }
        self.values = values
    }

    /// Whether the argument was given (and not null).
    func has(_ name: String) -> Bool { values[name] != nil }

    /// A string argument.
    /// - Parameters:
    ///   - name: the argument.
    ///   - required: whether a missing one is a mistake.
    ///   - allowEmpty: whether `""` is accepted.
    func string(_ name: String, required: Bool = false, allowEmpty: Bool = false) throws -> String? {
        guard let value = values[name] else {
            if required { throw ToolArgumentError("\(tool) needs \(Self.quoted(name)), a string") }
            return nil
        }
        guard let text = ArgumentEscaping.string(value) else {
            throw ToolArgumentError("\(tool): \(Self.quoted(name)) must be a string, not \(Self.kind(of: value))")
        }
        if !allowEmpty && text.isEmpty { throw ToolArgumentError("\(tool): \(Self.quoted(name)) is empty") }
        return text
    }

    /// An array-of-strings argument; `[]` when absent.
    func strings(_ name: String, maxCount: Int = 1000) throws -> [String] {
        guard let value = values[name] else { return [] }
        guard case .array(let items) = value else {
            throw ToolArgumentError(
                "\(tool): \(Self.quoted(name)) must be an array of strings, not \(Self.kind(of: value))")
        }
        guard items.count <= maxCount else {
            throw ToolArgumentError("\(tool): \(Self.quoted(name)) has \(items.count) items; at most \(maxCount)")
        }
        return try items.enumerated().map { index, item in
            guard let text = ArgumentEscaping.string(item), !text.isEmpty else {
                throw ToolArgumentError(
                    "\(tool): \(Self.quoted(name))[\(index)] must be a non-empty string, not \(Self.kind(of: item))")
            }
            return text
        }
    }

    /// An integer argument within `range` (a number with no fractional part counts).
    func integer(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let value = values[name] else { return nil }
        let number: Int?
        switch value {
        case .int(let int): number = int
        case .double(let double) where double.rounded() == double && abs(double) < 1e15: number = Int(double)
        default: number = nil
        }
        guard let number else {
            throw ToolArgumentError("\(tool): \(Self.quoted(name)) must be an integer, not \(Self.kind(of: value))")
        }
        guard range.contains(number) else {
            let bound =
                range.upperBound == Int.max
                ? "at least \(range.lowerBound)" : "\(range.lowerBound) to \(range.upperBound)"
            throw ToolArgumentError("\(tool): \(Self.quoted(name)) must be \(bound); it is \(number)")
        }
        return number
    }

    /// A number argument, finite, more than `lower` and at most `upper`.
    func number(_ name: String, above lower: Double, atMost upper: Double) throws -> Double? {
        guard let value = values[name] else { return nil }
        let number: Double?
        switch value {
        case .int(let int): number = Double(int)
        case .double(let double): number = double
        default: number = nil
        }
        guard let number, number.isFinite else {
            throw ToolArgumentError("\(tool): \(Self.quoted(name)) must be a number, not \(Self.kind(of: value))")
        }
        guard number > lower, number <= upper else {
            throw ToolArgumentError(
                "\(tool): \(Self.quoted(name)) must be more than \(Self.shown(lower)) and at most \(Self.shown(upper)); "
                    + "it is \(Self.shown(number))")
        }
        return number
    }

    // MARK: - Words

    /// A name quoted back: short, on one line.
    static func quoted(_ text: String) -> String {
        let clean = String(text.prefix(60).map { $0.isNewline || ($0.asciiValue.map { $0 < 32 } ?? false) ? " " : $0 })
        return "'\(clean)'" + (text.count > 60 ? "…" : "")
    }

    static func kind(of value: Value) -> String {
        switch value {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string, .data: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    static func shown(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 1e15 ? String(Int(number)) : String(number)
    }
}

/// Keeps strings intact through the SDK, both ways.
///
/// The SDK (0.12.1) turns every JSON string that matches `data:…,…` into binary data, keeping only what follows the
/// comma: when it decodes a call's arguments, and again when it converts a handler's result to send it. So Python
/// code such as `data: list = [1, 2]`, a log whose first line is `data: {…}`, or an answer quoting one, would be
/// mangled. Such strings (and strings already starting with the marker) get a private marker in front while the SDK
/// holds them, U+FFFF, a noncharacter no text holds:
/// - arguments: ``escape(request:)`` before the server decodes a `tools/call`, ``string(_:)`` when a tool reads one;
/// - results: ``protect(_:)`` before a tool returns, ``unprotect(_:)`` on the bytes the server sends.
enum ArgumentEscaping {
    static let marker: Character = "\u{FFFF}"
    /// The marker in UTF-8, as JSON encoders write it.
    static let markerBytes = Data([0xEF, 0xBF, 0xBF])

    /// `text` made safe from the SDK's data-URL decoding, or `nil` when it needs nothing.
    static func escaped(_ text: String) -> String? {
        guard text.hasPrefix("data:") || text.first == marker else { return nil }
        return String(marker) + text
    }

    /// The string a client sent, from a decoded argument; `nil` when the value is not a string.
    static func string(_ value: Value) -> String? {
        switch value {
        case .string(let text):
            return text.first == marker ? String(text.dropFirst()) : text
        case .data(let mimeType, let data):
            // Only reached when a message bypassed the escaping; the original text is gone, so say it as a URL.
            return data.dataURLEncoded(mimeType: mimeType)
        default:
            return nil
        }
    }

    /// Escapes the strings inside a `tools/call` request's `params.arguments`, in a JSON object from
    /// `JSONSerialization`.
    /// - Returns: the object with the strings escaped, or `nil` when nothing needed escaping.
    static func escape(request: [String: Any]) -> [String: Any]? {
        guard request["method"] as? String == CallTool.name, var params = request["params"] as? [String: Any],
            let arguments = params["arguments"], let escaped = map(arguments, escaped)
        else { return nil }
        params["arguments"] = escaped
        var request = request
        request["params"] = params
        return request
    }

    /// A result's strings escaped, for the SDK to hold.
    static func protect(_ value: Value) -> Value {
        switch value {
        case .string(let text): return .string(protect(text))
        case .array(let items): return .array(items.map(protect))
        case .object(let fields): return .object(fields.mapValues(protect))
        default: return value
        }
    }

    /// A result's text escaped, for the SDK to hold.
    static func protect(_ text: String) -> String { escaped(text) ?? text }

    /// A message the server is sending with the markers ``protect(_:)`` added taken out; `nil` when it has none.
    static func unprotect(_ data: Data) -> Data? {
        guard data.firstRange(of: markerBytes) != nil,
            let json = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
            let mapped = map(json, { $0.first == marker ? String($0.dropFirst()) : nil })
        else { return nil }
        return try? JSONSerialization.data(
            withJSONObject: mapped, options: [.withoutEscapingSlashes, .fragmentsAllowed])
    }

    /// `value` (from `JSONSerialization`) with `transform` applied to its strings, or `nil` when it changed none.
    private static func map(_ value: Any, _ transform: (String) -> String?) -> Any? {
        switch value {
        case let text as String:
            return transform(text)
        case let array as [Any]:
            var changed = false
            let mapped = array.map { item -> Any in
                guard let new = map(item, transform) else { return item }
                changed = true
                return new
            }
            return changed ? mapped : nil
        case let object as [String: Any]:
            var changed = false
            var mapped = object
            for (key, item) in object {
                if let new = map(item, transform) {
                    mapped[key] = new
                    changed = true
                }
            }
            return changed ? mapped : nil
        default:
            return nil
        }
    }
}
