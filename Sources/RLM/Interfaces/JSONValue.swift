import Foundation

/// A JSON value, used where model-written code may pass arbitrary structured data (a context, an `rlm_query`
/// context argument), and for the typed fields of events (``RLMEvent/data``).
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// The string inside, when this is a `.string`.
    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}

// Literals keep call sites that build event data readable: `["block": 1, "code": code, "error": nil]`.
extension JSONValue: ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    /// - Parameter value: the string.
    public init(stringLiteral value: String) { self = .string(value) }

    /// - Parameter stringInterpolation: the interpolated string.
    public init(stringInterpolation: DefaultStringInterpolation) {
        self = .string(String(stringInterpolation: stringInterpolation))
    }
}

extension JSONValue: ExpressibleByIntegerLiteral {
    /// - Parameter value: the integer.
    public init(integerLiteral value: Int) { self = .int(value) }
}

extension JSONValue: ExpressibleByFloatLiteral {
    /// - Parameter value: the number.
    public init(floatLiteral value: Double) { self = .double(value) }
}

extension JSONValue: ExpressibleByBooleanLiteral {
    /// - Parameter value: the boolean.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension JSONValue: ExpressibleByNilLiteral {
    /// `null`.
    public init(nilLiteral: ()) { self = .null }
}

extension JSONValue: ExpressibleByArrayLiteral {
    /// - Parameter elements: the array's elements.
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
}

extension JSONValue: ExpressibleByDictionaryLiteral {
    /// - Parameter elements: the object's members (a repeated key keeps its last value).
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}

extension JSONValue {
    /// A string, or `null` for `nil`.
    /// - Parameter value: the string.
    public init(_ value: String?) { self = value.map(JSONValue.string) ?? .null }

    /// An integer, or `null` for `nil`.
    /// - Parameter value: the integer.
    public init(_ value: Int?) { self = value.map(JSONValue.int) ?? .null }

    /// A number, or `null` for `nil` and for a value JSON cannot hold (NaN, infinity).
    /// - Parameter value: the number.
    public init(_ value: Double?) {
        guard let value, value.isFinite else {
            self = .null
            return
        }
        self = .double(value)
    }

    /// The integer inside, when this is an `.int` (or a `.double` holding a whole number).
    public var intValue: Int? {
        switch self {
        case .int(let value): return value
        case .double(let value) where value.rounded() == value && abs(value) < 1e15: return Int(value)
        default: return nil
        }
    }

    /// The number inside, when this is an `.int` or a `.double`.
    public var doubleValue: Double? {
        switch self {
        case .int(let value): return Double(value)
        case .double(let value): return value
        default: return nil
        }
    }

    /// The boolean inside, when this is a `.bool`.
    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The elements, when this is an `.array`.
    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// The members, when this is an `.object`.
    public var objectValue: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// Whether this is `null`.
    public var isNull: Bool { self == .null }

    /// The member named `key`, when this is an `.object` that has it.
    /// - Parameter key: the member's name.
    public subscript(key: String) -> JSONValue? { objectValue?[key] }

    /// Every string inside (this one, or those nested in arrays and objects) transformed by `transform`, which also
    /// receives the name of the object member the string is under (`nil` at the top or directly in an array).
    /// - Parameters:
    ///   - key: the member name this value is under.
    ///   - transform: the new text for a string and its key.
    public func mapStrings(key: String? = nil, _ transform: (String, String?) -> String) -> JSONValue {
        switch self {
        case .string(let text): return .string(transform(text, key))
        case .array(let items): return .array(items.map { $0.mapStrings(key: key, transform) })
        case .object(let members):
            return .object(Dictionary(uniqueKeysWithValues: members.map { ($0, $1.mapStrings(key: $0, transform)) }))
        default: return self
        }
    }
}
