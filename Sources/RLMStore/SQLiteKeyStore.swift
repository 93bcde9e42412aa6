import Crypto
import Foundation
import Glibc
import SQLiteNIO

/// The ``KeyStore`` in one SQLite file (`keys.sqlite` of the store directory, see ``StoreLocation``), shared by every
/// process of the store: `rlm keys` while `rlm serve` runs.
///
/// - The file is born 0600 (by `open(2)` with `O_CREAT | O_NOFOLLOW`, in a 0700 directory when it makes one) before
///   SQLite opens it; a path that is a symbolic link is refused, and a file of this user looser than 0600 is
///   tightened (said in ``repairs``). SQLite gives its `-wal` and `-shm` files the same mode.
/// - WAL journal and a busy timeout, so readers never wait for a writer and writers of several processes queue.
/// - Every value reaches SQL as a bound parameter; every write that reads first runs in `BEGIN IMMEDIATE`.
/// - A key is `rlm_<16 hex id>_<64 hex secret>` (8 and 32 random bytes); the store keeps the SHA-256 of the whole
///   key, never the key, and ``authenticate(secret:)`` finds the row by id, then compares digests in constant time.
/// - Schema version in `PRAGMA user_version`, so a later version can migrate the file.
///
/// Operations of one instance run one at a time (a transaction spans several statements on the one connection);
/// call ``close()`` when done, or use ``withStore(path:_:)``.
public final class SQLiteKeyStore: KeyStore {
    /// The schema this version writes; a file with a higher `user_version` is refused.
    public static let schemaVersion = 1
    /// How long a statement waits for another process's write to finish before it fails as busy.
    public static let busyTimeoutMilliseconds = 5000

    /// The database file (absolute).
    public let path: String
    /// Permissions tightened when the store was opened, one sentence each (e.g. for `rlm:` lines on stderr).
    public let repairs: [String]

    private let connection: SQLiteConnection
    private let gate = Gate()

    private init(path: String, connection: SQLiteConnection, repairs: [String]) {
        self.path = path
        self.connection = connection
        self.repairs = repairs
    }

    deinit {
        // A store dropped without `close()`: the close holds the connection until it has run.
        if !connection.isClosed { _ = connection.close() }
    }

    /// Opens (creating when missing) the key store at `path`.
    /// - Parameter path: the database file, e.g. ``StoreLocation/keysDatabase``; a relative path is taken from the
    ///   current directory.
    /// - Returns: the open store; ``close()`` it when done.
    /// - Throws: ``KeyStoreError/storage(_:)`` when the path is a symbolic link, not a regular file of this user, or
    ///   cannot be created, opened or migrated.
    public static func open(path: String) async throws -> SQLiteKeyStore {
        let path = absolute(path)
        let repairs = try prepareFiles(path)
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(storage: .file(path: path))
        } catch {
            throw storageError(error, path: path, verb: "opened")
        }
        let store = SQLiteKeyStore(path: path, connection: connection, repairs: repairs)
        do {
            try await store.setUp()
        } catch {
            await store.close()
            throw storageError(error, path: path, verb: "opened")
        }
        return store
    }

    /// Opens the store at `path`, runs `body` with it, and closes it however `body` ends.
    /// - Parameters:
    ///   - path: the database file.
    ///   - body: what to do with the store.
    /// - Returns: what `body` returns.
    public static func withStore<T>(path: String, _ body: (SQLiteKeyStore) async throws -> T) async throws -> T {
        let store = try await open(path: path)
        do {
            let result = try await body(store)
            await store.close()
            return result
        } catch {
            await store.close()
            throw error
        }
    }

    // MARK: Keys

    public func createKey(name: String, limits: APIKeyLimits) async throws -> CreatedKey {
        try APIKeyRecord.validate(name: name)
        try limits.validate()
        return try await serialized("written") {
            // 64 random bits of id: a collision is next to impossible, and simply retried.
            for attempt in 1...3 {
                let idHex = Self.hex(Self.randomBytes(8))
                let secret = "rlm_\(idHex)_\(Self.hex(Self.randomBytes(32)))"
                // The record holds the date as it will be read back (unix seconds), so it equals a listed one.
                let created = Date().timeIntervalSince1970
                let record = APIKeyRecord(
                    id: "key_\(idHex)", name: name, limits: limits, created: Date(timeIntervalSince1970: created),
                    revoked: nil, spentUSD: 0)
                do {
                    try await query(
                        """
                        INSERT INTO keys (id, name, digest, rpm, tokens_per_day, max_concurrent, max_cost_usd, created, \
                        revoked, spent_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, 0)
                        """,
                        [
                            .text(record.id), .text(name), .text(Self.hex(Self.digest(secret))),
                            Self.integer(limits.requestsPerMinute), Self.integer(limits.tokensPerDay),
                            Self.integer(limits.maxConcurrentRuns), limits.maxCostUSD.map { .float($0) } ?? .null,
                            .float(created),
                        ])
                    return CreatedKey(record: record, secret: secret)
                } catch let error as SQLiteError where error.reason == .constraintUniqueFailed {
                    throw KeyStoreError.nameTaken(name)
                } catch let error as SQLiteError where error.reason == .constraintPrimaryKeyFailed && attempt < 3 {
                    continue
                }
            }
            throw KeyStoreError.storage("the key store \(path) cannot be written: no free key id was drawn")
        }
    }

    public func listKeys() async throws -> [APIKeyRecord] {
        try await serialized("read") {
            try await query("SELECT \(Self.keyColumns) FROM keys ORDER BY created, rowid").map(Self.record)
        }
    }

    public func revokeKey(_ idOrName: String) async throws -> APIKeyRecord {
        try await serialized("written") {
            try await transaction {
                // An id first: a name may look like one (`key_…` is a valid name), but an id is what was meant.
                let rows = try await query(
                    """
                    SELECT \(Self.keyColumns) FROM keys WHERE (id = ? OR name = ?) AND revoked IS NULL
                    ORDER BY id = ? DESC LIMIT 1
                    """, [.text(idOrName), .text(idOrName), .text(idOrName)])
                guard let row = rows.first else { throw KeyStoreError.notFound("\(idOrName) that is not revoked") }
                var record = try Self.record(row)
                let now = Date().timeIntervalSince1970
                try await query("UPDATE keys SET revoked = ? WHERE id = ?", [.float(now), .text(record.id)])
                record.revoked = Date(timeIntervalSince1970: now)
                return record
            }
        }
    }

    public func authenticate(secret: String) async throws -> APIKeyRecord? {
        // Anything not shaped like a key never reaches the database.
        guard let id = Self.keyID(ofSecret: secret) else { return nil }
        let presented = Self.digest(secret)
        return try await serialized("read") {
            let rows = try await query(
                "SELECT \(Self.keyColumns), digest FROM keys WHERE id = ?", [.text(id)])
            guard let row = rows.first, let stored = row.column("digest")?.string.flatMap(Self.bytes(hex:)) else {
                return nil
            }
            guard Self.constantTimeEqual(stored, presented) else { return nil }
            let record = try Self.record(row)
            return record.revoked == nil ? record : nil
        }
    }

    // MARK: Usage

    public func addUsage(keyID: String, day: String, tokens: Int, costUSD: Double) async throws {
        guard tokens >= 0 else { throw KeyStoreError.invalid("a run's tokens cannot be negative (\(tokens))") }
        guard costUSD >= 0 && costUSD.isFinite else {
            throw KeyStoreError.invalid("a run's cost must be a finite number of USD, 0 or more (\(costUSD))")
        }
        try Self.validate(day: day)
        try await serialized("written") {
            try await transaction {
                let updated = try await query(
                    "UPDATE keys SET spent_usd = spent_usd + ? WHERE id = ? RETURNING id",
                    [.float(costUSD), .text(keyID)])
                guard !updated.isEmpty else { throw KeyStoreError.notFound(keyID) }
                try await query(
                    """
                    INSERT INTO usage (key_id, day, tokens) VALUES (?, ?, ?)
                    ON CONFLICT (key_id, day) DO UPDATE SET tokens = tokens + excluded.tokens
                    """, [.text(keyID), .text(day), .integer(tokens)])
            }
        }
    }

    public func tokensUsed(keyID: String, day: String) async throws -> Int {
        try await serialized("read") {
            let rows = try await query(
                "SELECT tokens FROM usage WHERE key_id = ? AND day = ?", [.text(keyID), .text(day)])
            return rows.first?.column("tokens")?.integer ?? 0
        }
    }

    // MARK: Contexts

    public func addContext(_ record: ContextRecord) async throws {
        guard record.bytes >= 0 else { throw KeyStoreError.invalid("a context's size cannot be negative") }
        try await serialized("written") {
            do {
                try await query(
                    "INSERT INTO contexts (id, key_id, name, bytes, created) VALUES (?, ?, ?, ?, ?)",
                    [
                        .text(record.id), .text(record.keyID), record.name.map { .text($0) } ?? .null,
                        .integer(record.bytes), .float(record.created.timeIntervalSince1970),
                    ])
            } catch let error as SQLiteError where error.reason == .constraintPrimaryKeyFailed {
                throw KeyStoreError.invalid("a context \(record.id) is already recorded")
            } catch let error as SQLiteError where error.reason == .constraintForeignKeyFailed {
                throw KeyStoreError.notFound(record.keyID)
            }
        }
    }

    public func context(id: String, keyID: String) async throws -> ContextRecord? {
        try await serialized("read") {
            try await query(
                "SELECT id, key_id, name, bytes, created FROM contexts WHERE id = ? AND key_id = ?",
                [.text(id), .text(keyID)]
            ).first.map(Self.context)
        }
    }

    public func contexts(keyID: String) async throws -> [ContextRecord] {
        try await serialized("read") {
            try await query(
                "SELECT id, key_id, name, bytes, created FROM contexts WHERE key_id = ? ORDER BY created, rowid",
                [.text(keyID)]
            ).map(Self.context)
        }
    }

    public func deleteContext(id: String, keyID: String) async throws -> Bool {
        try await serialized("written") {
            try await !query(
                "DELETE FROM contexts WHERE id = ? AND key_id = ? RETURNING id", [.text(id), .text(keyID)]
            ).isEmpty
        }
    }

    public func close() async {
        guard await gate.enter() else { return }
        try? await connection.close()
        await gate.leave(closing: true)
    }

    // MARK: Key format

    /// The record id (`key_…`) a key names, when `secret` has exactly the key shape
    /// (`rlm_`, 16 lowercase hex digits, `_`, 64 lowercase hex digits); `nil` otherwise.
    /// - Parameter secret: what a client presented.
    public static func keyID(ofSecret secret: String) -> String? {
        let bytes = Array(secret.utf8)
        guard bytes.count == 85, bytes.starts(with: Array("rlm_".utf8)), bytes[20] == UInt8(ascii: "_"),
            bytes[4..<20].allSatisfy(isLowerHex), bytes[21...].allSatisfy(isLowerHex)
        else { return nil }
        return "key_" + String(decoding: bytes[4..<20], as: UTF8.self)
    }

    /// Whether two digests are equal, in time that depends only on their length: every byte is compared, with no
    /// early exit, so how long a refusal takes says nothing about how much of the digest was right.
    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }

    static func digest(_ secret: String) -> [UInt8] { Array(SHA256.hash(data: Data(secret.utf8))) }

    private static func isLowerHex(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }

    private static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    private static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ digit: UInt8) -> UInt8? {
            switch digit {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        var bytes = [UInt8]()
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    /// `YYYY-MM-DD`, as the usage table is keyed.
    private static func validate(day: String) throws {
        let bytes = Array(day.utf8)
        let shaped =
            bytes.count == 10 && bytes[4] == UInt8(ascii: "-") && bytes[7] == UInt8(ascii: "-")
            && [0, 1, 2, 3, 5, 6, 8, 9].allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[$0]) }
        guard shaped else {
            throw KeyStoreError.invalid("a usage day is written YYYY-MM-DD, not \(day.debugDescription)")
        }
    }

    // MARK: Rows

    private static let keyColumns =
        "id, name, rpm, tokens_per_day, max_concurrent, max_cost_usd, created, revoked, spent_usd"

    private static func integer(_ value: Int?) -> SQLiteData { value.map { .integer($0) } ?? .null }

    private static func record(_ row: SQLiteRow) throws -> APIKeyRecord {
        guard let id = row.column("id")?.string, let name = row.column("name")?.string,
            let created = row.column("created")?.double
        else { throw KeyStoreError.storage("a key row is missing its id, name or creation time") }
        let limits = APIKeyLimits(
            requestsPerMinute: row.column("rpm")?.integer, tokensPerDay: row.column("tokens_per_day")?.integer,
            maxConcurrentRuns: row.column("max_concurrent")?.integer, maxCostUSD: row.column("max_cost_usd")?.double)
        return APIKeyRecord(
            id: id, name: name, limits: limits, created: Date(timeIntervalSince1970: created),
            revoked: row.column("revoked")?.double.map { Date(timeIntervalSince1970: $0) },
            spentUSD: row.column("spent_usd")?.double ?? 0)
    }

    private static func context(_ row: SQLiteRow) -> ContextRecord {
        ContextRecord(
            id: row.column("id")?.string ?? "", keyID: row.column("key_id")?.string ?? "",
            name: row.column("name")?.string, bytes: row.column("bytes")?.integer ?? 0,
            created: Date(timeIntervalSince1970: row.column("created")?.double ?? 0))
    }

    // MARK: Statements

    @discardableResult
    private func query(_ sql: String, _ binds: [SQLiteData] = []) async throws -> [SQLiteRow] {
        try await connection.query(sql, binds)
    }

    /// Runs `body` alone on the connection (waiting for the instance's other operations), turning any failure that
    /// is not a ``KeyStoreError`` into ``KeyStoreError/storage(_:)`` saying the store cannot be `verb`.
    private func serialized<T>(_ verb: String, _ body: () async throws -> T) async throws -> T {
        guard await gate.enter() else {
            throw KeyStoreError.storage("the key store \(path) cannot be \(verb): it is closed")
        }
        do {
            let result = try await body()
            await gate.leave()
            return result
        } catch {
            await gate.leave()
            throw Self.storageError(error, path: path, verb: verb)
        }
    }

    /// `body` in a write transaction, taken at once (`IMMEDIATE`) so a read-then-write never fails to upgrade its
    /// lock when another process writes; rolled back when `body` throws.
    private func transaction<T>(_ body: () async throws -> T) async throws -> T {
        try await query("BEGIN IMMEDIATE")
        do {
            let result = try await body()
            try await query("COMMIT")
            return result
        } catch {
            _ = try? await query("ROLLBACK")
            throw error
        }
    }

    /// Pragmas and schema. The busy timeout comes first: another process may be setting up the same file.
    private func setUp() async throws {
        try await query("PRAGMA busy_timeout = \(Self.busyTimeoutMilliseconds)")
        try await query("PRAGMA journal_mode = WAL")
        try await query("PRAGMA foreign_keys = ON")
        // The usual case, a file of this version, needs no write lock (so no wait for a server busy writing).
        if try await schemaVersionOfFile() == Self.schemaVersion { return }
        try await transaction {
            let version = try await schemaVersionOfFile()
            guard version <= Self.schemaVersion else {
                throw KeyStoreError.storage(
                    "the key store \(path) cannot be opened: it was written by a newer rlm (schema \(version); this "
                        + "one reads up to \(Self.schemaVersion))")
            }
            if version < 1 {
                for statement in Self.schemaV1 { try await query(statement) }
            }
            try await query("PRAGMA user_version = \(Self.schemaVersion)")
        }
    }

    private func schemaVersionOfFile() async throws -> Int {
        try await query("PRAGMA user_version").first?.column("user_version")?.integer ?? 0
    }

    private static let schemaV1 = [
        """
        CREATE TABLE keys (
            id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL,
            rpm INTEGER, tokens_per_day INTEGER, max_concurrent INTEGER, max_cost_usd REAL,
            created REAL NOT NULL, revoked REAL, spent_usd REAL NOT NULL DEFAULT 0
        ) STRICT
        """,
        // Names are unique among keys not revoked: a revoked key's name can be given again.
        "CREATE UNIQUE INDEX keys_live_name ON keys (name) WHERE revoked IS NULL",
        """
        CREATE TABLE usage (
            key_id TEXT NOT NULL REFERENCES keys (id), day TEXT NOT NULL, tokens INTEGER NOT NULL,
            PRIMARY KEY (key_id, day)
        ) STRICT
        """,
        """
        CREATE TABLE contexts (
            id TEXT PRIMARY KEY NOT NULL, key_id TEXT NOT NULL REFERENCES keys (id), name TEXT,
            bytes INTEGER NOT NULL, created REAL NOT NULL
        ) STRICT
        """,
        "CREATE INDEX contexts_by_key ON contexts (key_id, created)",
    ]

    // MARK: Files

    private static func absolute(_ path: String) -> String {
        let expanded = (path as NSString).expandingTildeInPath
        if expanded.hasPrefix("/") { return expanded }
        return (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(expanded)
    }

    /// Makes the directory (0700) when missing, creates the file 0600 without following a link, checks that it and
    /// any `-wal`/`-shm` beside it are regular files of this user, and tightens looser modes.
    private static func prepareFiles(_ path: String) throws -> [String] {
        func failure(_ reason: String) -> KeyStoreError {
            .storage("the key store \(path) cannot be opened: \(reason)")
        }
        let directory = (path as NSString).deletingLastPathComponent
        var info = stat()
        if lstat(directory, &info) != 0 {
            guard errno == ENOENT else { throw failure("its directory: \(String(cString: strerror(errno)))") }
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw failure("its directory cannot be created: \(error.localizedDescription)")
            }
        }
        var repairs = [String]()
        for (suffix, create) in [("", true), ("-wal", false), ("-shm", false)] {
            let file = path + suffix
            let flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | (create ? O_CREAT : 0)
            let fd = Glibc.open(file, flags, 0o600)
            guard fd >= 0 else {
                switch errno {
                case ENOENT where !create: continue
                case ELOOP:
                    throw failure("\(file) is a symbolic link; keys are never stored through one")
                default:
                    throw failure("\(file): \(String(cString: strerror(errno)))")
                }
            }
            defer { Glibc.close(fd) }
            guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_uid == geteuid() else {
                throw failure("\(file) is not a regular file owned by this user; remove it or pick another --store")
            }
            let mode = info.st_mode & 0o7777
            if mode != 0o600 {
                guard fchmod(fd, 0o600) == 0 else {
                    throw failure("\(file) is mode \(String(mode, radix: 8)) and cannot be tightened to 0600")
                }
                // A file just made is 0600 already, or less under a strict umask: only a looser mode is news.
                if mode & 0o177 != 0 {
                    repairs.append("tightened \(file) from \(String(mode, radix: 8)) to 600")
                }
            }
        }
        return repairs
    }

    private static func storageError(_ error: any Error, path: String, verb: String) -> KeyStoreError {
        if let error = error as? KeyStoreError { return error }
        let reason = (error as? SQLiteError)?.message ?? String(describing: error)
        return .storage("the key store \(path) cannot be \(verb): \(reason)")
    }
}

/// One operation at a time on the store's connection, first come first served; after ``leave(closing:)`` with
/// `closing`, ``enter()`` refuses.
private actor Gate {
    private var busy = false
    private var closed = false
    private var waiting = [CheckedContinuation<Bool, Never>]()

    /// Waits for the connection. - Returns: false when the store is closed (the caller then holds nothing).
    func enter() async -> Bool {
        if closed { return false }
        if !busy {
            busy = true
            return true
        }
        return await withCheckedContinuation { waiting.append($0) }
    }

    /// Hands the connection to the next waiter, or frees it.
    func leave(closing: Bool = false) {
        if closing {
            closed = true
            busy = false
            for waiter in waiting { waiter.resume(returning: false) }
            waiting.removeAll()
            return
        }
        if waiting.isEmpty {
            busy = false
        } else {
            waiting.removeFirst().resume(returning: true)
        }
    }
}
