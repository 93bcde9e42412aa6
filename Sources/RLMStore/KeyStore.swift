import Foundation

/// Per-key limits; `nil` is no limit of that kind.
public struct APIKeyLimits: Sendable, Hashable, Codable {
    /// Requests per minute (every authenticated request counts).
    public var requestsPerMinute: Int?
    /// Tokens (input + output, the whole run tree) per UTC day.
    public var tokensPerDay: Int?
    /// Runs in flight at once.
    public var maxConcurrentRuns: Int?
    /// USD the key may spend in all (the key's cost budget).
    public var maxCostUSD: Double?

    /// - Parameters: as the properties.
    public init(
        requestsPerMinute: Int? = nil, tokensPerDay: Int? = nil, maxConcurrentRuns: Int? = nil,
        maxCostUSD: Double? = nil
    ) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerDay = tokensPerDay
        self.maxConcurrentRuns = maxConcurrentRuns
        self.maxCostUSD = maxCostUSD
    }

    /// What `rlm keys create` gives a key when a flag is not given: locked down, not unlimited.
    public static let defaults = APIKeyLimits(requestsPerMinute: 60, tokensPerDay: nil, maxConcurrentRuns: 2)
}

extension APIKeyLimits {
    /// Checks that every limit given is positive (and the cost finite), as every ``KeyStore`` requires.
    /// - Throws: ``KeyStoreError/invalid(_:)`` naming the `rlm keys create` flag of the first bad limit.
    public func validate() throws {
        if let requestsPerMinute, requestsPerMinute < 1 { throw KeyStoreError.invalid("--rpm must be at least 1") }
        if let tokensPerDay, tokensPerDay < 1 { throw KeyStoreError.invalid("--tokens-per-day must be at least 1") }
        if let maxConcurrentRuns, maxConcurrentRuns < 1 {
            throw KeyStoreError.invalid("--max-concurrent must be at least 1")
        }
        if let maxCostUSD, !(maxCostUSD > 0 && maxCostUSD.isFinite) {
            throw KeyStoreError.invalid("--max-cost must be a positive number of USD")
        }
    }
}

/// A stored API key: never the key itself, only its id, name and limits.
public struct APIKeyRecord: Sendable, Hashable, Codable {
    /// The key's public id (`key_` and 16 hex digits); it also appears inside the key.
    public var id: String
    /// The name given at creation (unique among keys not revoked).
    public var name: String
    /// Its limits.
    public var limits: APIKeyLimits
    /// When it was created.
    public var created: Date
    /// When it was revoked, if it was.
    public var revoked: Date?
    /// USD spent by the key's runs in all (against ``APIKeyLimits/maxCostUSD``).
    public var spentUSD: Double

    /// - Parameters: as the properties.
    public init(
        id: String, name: String, limits: APIKeyLimits, created: Date, revoked: Date? = nil, spentUSD: Double = 0
    ) {
        self.id = id
        self.name = name
        self.limits = limits
        self.created = created
        self.revoked = revoked
        self.spentUSD = spentUSD
    }
}

extension APIKeyRecord {
    /// Checks a key name: 1 to 64 characters, each an ASCII letter or digit, `-`, `_` or `.` (so a name is safe in a
    /// log line, a table and a shell).
    /// - Parameter name: the name asked for.
    /// - Throws: ``KeyStoreError/invalid(_:)``.
    public static func validate(name: String) throws {
        let allowed = name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."):
                return true
            default:
                return false
            }
        }
        guard allowed, (1...64).contains(name.utf8.count) else {
            let shown = name.count > 70 ? String(name.prefix(64)) + "…" : name
            throw KeyStoreError.invalid(
                "the key name \(shown.debugDescription) is not acceptable: a name is 1 to 64 characters, each a "
                    + "letter, a digit, '-', '_' or '.'")
        }
    }
}

/// A key just created: the record and the secret, which is shown once and never stored.
public struct CreatedKey: Sendable {
    /// The stored record.
    public var record: APIKeyRecord
    /// The key to hand to the client (`rlm_…`).
    public var secret: String

    /// - Parameters: as the properties.
    public init(record: APIKeyRecord, secret: String) {
        self.record = record
        self.secret = secret
    }
}

/// An uploaded context: which key owns it, its size and where its bytes are on disk.
public struct ContextRecord: Sendable, Hashable, Codable {
    /// The id clients refer to (`ctx_` and 24 hex digits).
    public var id: String
    /// The key that uploaded it (the only one that can see it).
    public var keyID: String
    /// The name given at upload (a label, never a path), if any.
    public var name: String?
    /// Its size in bytes.
    public var bytes: Int
    /// When it was uploaded.
    public var created: Date

    /// - Parameters: as the properties.
    public init(id: String, keyID: String, name: String?, bytes: Int, created: Date) {
        self.id = id
        self.keyID = keyID
        self.name = name
        self.bytes = bytes
        self.created = created
    }
}

/// Failures of the store; the description is safe to show.
public enum KeyStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No key with that id or name.
    case notFound(String)
    /// A key not revoked already has that name.
    case nameTaken(String)
    /// A name or a limit is not acceptable.
    case invalid(String)
    /// The database cannot be opened, read or written.
    case storage(String)

    public var description: String {
        switch self {
        case .notFound(let what): return "no key \(what)"
        case .nameTaken(let name): return "a key named \(name) already exists; revoke it or pick another name"
        case .invalid(let message): return message
        case .storage(let message): return message
        }
    }
}

/// Where API keys, their daily usage and the ownership of uploaded contexts are kept. One protocol, so another
/// database (PostgreSQL, for scale-out) can stand in for SQLite without the server changing.
///
/// Keys are stored as a SHA-256 digest of the whole key (keys carry 256 random bits, so a slow hash adds nothing) and
/// checked by id first, then compared in constant time.
public protocol KeyStore: Sendable {
    /// Creates a key.
    /// - Throws: ``KeyStoreError/nameTaken(_:)``, ``KeyStoreError/invalid(_:)``.
    func createKey(name: String, limits: APIKeyLimits) async throws -> CreatedKey
    /// Every key, revoked ones included, oldest first.
    func listKeys() async throws -> [APIKeyRecord]
    /// Revokes a key by id or by name (of a key not revoked).
    /// - Throws: ``KeyStoreError/notFound(_:)``.
    func revokeKey(_ idOrName: String) async throws -> APIKeyRecord
    /// The key `secret` is, if it exists and is not revoked; `nil` otherwise (never says which).
    func authenticate(secret: String) async throws -> APIKeyRecord?
    /// Adds a finished run's tokens (to the UTC day `day`, `YYYY-MM-DD`) and cost (to the key's total).
    func addUsage(keyID: String, day: String, tokens: Int, costUSD: Double) async throws
    /// The tokens used on `day` by the key.
    func tokensUsed(keyID: String, day: String) async throws -> Int
    /// Records an uploaded context.
    func addContext(_ record: ContextRecord) async throws
    /// The context `id` when `keyID` owns it; `nil` when it does not exist or belongs to another key.
    func context(id: String, keyID: String) async throws -> ContextRecord?
    /// The contexts `keyID` owns, oldest first.
    func contexts(keyID: String) async throws -> [ContextRecord]
    /// Forgets the context `id` when `keyID` owns it.
    /// - Returns: whether it existed and was that key's.
    func deleteContext(id: String, keyID: String) async throws -> Bool
    /// Closes the database.
    func close() async
}
