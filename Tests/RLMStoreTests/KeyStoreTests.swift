import Foundation
import Glibc
import Testing

@testable import RLMStore

/// The SQLite key store: keys stored hashed and checked in constant time, names and limits validated, usage and spend
/// accumulated, contexts visible only to their key, one file shared by several store instances (as by `rlm keys` and
/// `rlm serve`), and a file no other user can read.
@Suite("Key store")
struct KeyStoreTests {
    /// A fresh directory for one test, removed afterwards; `body` gets the database path inside a store directory
    /// that does not exist yet.
    private func withDatabase<T>(_ body: (_ database: String, _ root: String) async throws -> T) async throws -> T {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        return try await body(root + "/store/keys.sqlite", root)
    }

    private func mode(_ path: String) -> UInt32 {
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        return UInt32(info.st_mode & 0o7777)
    }

    // MARK: Keys

    @Test func createListAuthenticateRevokeRoundTrip() async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                let limits = APIKeyLimits(
                    requestsPerMinute: 10, tokensPerDay: 50_000, maxConcurrentRuns: 3, maxCostUSD: 2.5)
                let web = try await store.createKey(name: "web", limits: limits)
                let batch = try await store.createKey(name: "batch", limits: .defaults)

                #expect(web.record.id.hasPrefix("key_") && web.record.id.count == 20)
                #expect(web.secret.hasPrefix("rlm_" + web.record.id.dropFirst(4) + "_"))
                #expect(web.secret.count == 85)
                #expect(web.secret != batch.secret && web.record.id != batch.record.id)
                #expect(SQLiteKeyStore.keyID(ofSecret: web.secret) == web.record.id)

                let listed = try await store.listKeys()
                #expect(listed.map(\.name) == ["web", "batch"])
                #expect(listed[0] == web.record)
                #expect(listed[0].limits == limits)
                #expect(listed[1].limits == .defaults)
                #expect(listed.allSatisfy { $0.revoked == nil && $0.spentUSD == 0 })

                #expect(try await store.authenticate(secret: web.secret) == web.record)
                #expect(try await store.authenticate(secret: batch.secret) == batch.record)

                let revoked = try await store.revokeKey("web")
                #expect(revoked.id == web.record.id && revoked.revoked != nil)
                #expect(try await store.authenticate(secret: web.secret) == nil)
                #expect(try await store.authenticate(secret: batch.secret) == batch.record)
                let after = try await store.listKeys()
                #expect(after.count == 2)
                #expect(after[0].revoked == revoked.revoked)
                #expect(after[1].revoked == nil)
            }
        }
    }

    @Test func revokeByIDOrNameOnlyOnce() async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                let first = try await store.createKey(name: "first", limits: .defaults)
                _ = try await store.createKey(name: "second", limits: .defaults)
                #expect(try await store.revokeKey(first.record.id).name == "first")
                await #expect(throws: KeyStoreError.notFound("\(first.record.id) that is not revoked")) {
                    try await store.revokeKey(first.record.id)
                }
                await #expect(throws: KeyStoreError.notFound("first that is not revoked")) {
                    try await store.revokeKey("first")
                }
                await #expect(throws: KeyStoreError.notFound("nobody that is not revoked")) {
                    try await store.revokeKey("nobody")
                }
                #expect(try await store.revokeKey("second").name == "second")
                #expect(try await store.listKeys().allSatisfy { $0.revoked != nil })
            }
        }
    }

    /// A name may look like an id; the id wins, so `revoke key_…` never revokes some other key named so.
    @Test func anIDIsPreferredToANameThatLooksLikeIt() async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                let real = try await store.createKey(name: "real", limits: .defaults)
                let impostor = try await store.createKey(name: real.record.id, limits: .defaults)
                #expect(try await store.revokeKey(real.record.id).id == real.record.id)
                #expect(try await store.authenticate(secret: impostor.secret) != nil)
                // Now only the name matches.
                #expect(try await store.revokeKey(real.record.id).id == impostor.record.id)
            }
        }
    }

    @Test func aRevokedKeyOrAChangedCharacterIsRefused() async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                let key = try await store.createKey(name: "k", limits: .defaults).secret
                #expect(try await store.authenticate(secret: key) != nil)
                // One hex digit of the secret changed, at the start, the middle and the end.
                for offset in [21, 50, 84] {
                    var bytes = Array(key.utf8)
                    bytes[offset] = bytes[offset] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
                    let forged = String(decoding: bytes, as: UTF8.self)
                    #expect(try await store.authenticate(secret: forged) == nil, "offset \(offset)")
                }
                // The secret of this key under another id.
                let otherID = "rlm_0123456789abcdef" + key.dropFirst(20)
                #expect(try await store.authenticate(secret: String(otherID)) == nil)
                _ = try await store.revokeKey("k")
                #expect(try await store.authenticate(secret: key) == nil)
            }
        }
    }

    static let malformed: [String] = [
        "", "rlm_", "Bearer rlm_0123", "sk-0123456789abcdef",
        "rlm_0123456789abcdef_" + String(repeating: "a", count: 63),
        "rlm_0123456789abcdef_" + String(repeating: "a", count: 65),
        "rlm_0123456789ABCDEF_" + String(repeating: "a", count: 64),
        "rlm_0123456789abcdef_" + String(repeating: "A", count: 64),
        "rlm_0123456789abcdef-" + String(repeating: "a", count: 64),
        "RLM_0123456789abcdef_" + String(repeating: "a", count: 64),
        "rlm_0123456789abcdeg_" + String(repeating: "a", count: 64),
        " rlm_0123456789abcdef_" + String(repeating: "a", count: 63),
        "rlm_0123456789abcdef_" + String(repeating: "a", count: 63) + "\n",
        "rlm_0123456789abcdef_" + String(repeating: "a", count: 62) + "é",
    ]

    @Test(arguments: malformed)
    func aMalformedKeyIsRefusedByItsShape(secret: String) async throws {
        #expect(SQLiteKeyStore.keyID(ofSecret: secret) == nil)
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                let found = try await store.authenticate(secret: secret)
                #expect(found == nil)
            }
        }
    }

    @Test func digestsAreComparedWhole() {
        let digest = SQLiteKeyStore.digest("rlm_x")
        #expect(SQLiteKeyStore.constantTimeEqual(digest, digest))
        for index in [0, 15, 31] {
            var other = digest
            other[index] ^= 0x01
            #expect(!SQLiteKeyStore.constantTimeEqual(digest, other))
        }
        #expect(!SQLiteKeyStore.constantTimeEqual(digest, Array(digest.prefix(31))))
    }

    // MARK: Names and limits

    static let badNames = ["", String(repeating: "n", count: 65), "a b", "ünïcode", "a/b", "../x", "a\nb", "a;b", "$x"]

    @Test(arguments: badNames)
    func aBadNameIsRefused(name: String) async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                let error = await #expect(throws: KeyStoreError.self) {
                    try await store.createKey(name: name, limits: .defaults)
                }
                #expect(error?.description.contains("1 to 64 characters") == true, "\(String(describing: error))")
                let keys = try await store.listKeys()
                #expect(keys.isEmpty)
            }
        }
    }

    @Test func goodNamesAreUniqueAmongKeysNotRevoked() async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                for name in ["a", String(repeating: "n", count: 64), "web-1_prod.v2", "Z9"] {
                    _ = try await store.createKey(name: name, limits: .defaults)
                }
                await #expect(throws: KeyStoreError.nameTaken("a")) {
                    try await store.createKey(name: "a", limits: .defaults)
                }
                _ = try await store.revokeKey("a")
                let again = try await store.createKey(name: "a", limits: .defaults)
                #expect(try await store.listKeys().filter { $0.name == "a" }.count == 2)
                #expect(try await store.revokeKey("a").id == again.record.id)
            }
        }
    }

    static let badLimits: [(APIKeyLimits, String)] = [
        (APIKeyLimits(requestsPerMinute: 0), "--rpm must be at least 1"),
        (APIKeyLimits(requestsPerMinute: -5), "--rpm must be at least 1"),
        (APIKeyLimits(tokensPerDay: 0), "--tokens-per-day must be at least 1"),
        (APIKeyLimits(maxConcurrentRuns: 0), "--max-concurrent must be at least 1"),
        (APIKeyLimits(maxCostUSD: 0), "--max-cost must be a positive number of USD"),
        (APIKeyLimits(maxCostUSD: -1), "--max-cost must be a positive number of USD"),
        (APIKeyLimits(maxCostUSD: .infinity), "--max-cost must be a positive number of USD"),
        (APIKeyLimits(maxCostUSD: .nan), "--max-cost must be a positive number of USD"),
    ]

    @Test(arguments: badLimits.indices)
    func limitsMustBePositive(index: Int) async throws {
        let (limits, message) = Self.badLimits[index]
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                await #expect(throws: KeyStoreError.invalid(message)) {
                    try await store.createKey(name: "k", limits: limits)
                }
                #expect(try await store.listKeys().isEmpty)
                let unlimited = try await store.createKey(name: "open", limits: APIKeyLimits())
                #expect(unlimited.record.limits == APIKeyLimits())
                #expect(try await store.listKeys().first?.limits == APIKeyLimits())
            }
        }
    }

    // MARK: Usage

    @Test func usageIsPerDayAndSpendAccumulates() async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                let a = try await store.createKey(name: "a", limits: .defaults).record.id
                let b = try await store.createKey(name: "b", limits: .defaults).record.id
                #expect(try await store.tokensUsed(keyID: a, day: "2025-03-01") == 0)
                try await store.addUsage(keyID: a, day: "2025-03-01", tokens: 1200, costUSD: 0.25)
                try await store.addUsage(keyID: a, day: "2025-03-01", tokens: 800, costUSD: 0.5)
                try await store.addUsage(keyID: a, day: "2025-03-02", tokens: 7, costUSD: 0)
                try await store.addUsage(keyID: b, day: "2025-03-01", tokens: 1, costUSD: 1)
                #expect(try await store.tokensUsed(keyID: a, day: "2025-03-01") == 2000)
                #expect(try await store.tokensUsed(keyID: a, day: "2025-03-02") == 7)
                #expect(try await store.tokensUsed(keyID: b, day: "2025-03-01") == 1)
                #expect(try await store.tokensUsed(keyID: b, day: "2025-03-02") == 0)
                let spent = try await store.listKeys().map(\.spentUSD)
                #expect(abs(spent[0] - 0.75) < 1e-12 && spent[1] == 1)

                await #expect(throws: KeyStoreError.notFound("key_0000000000000000")) {
                    try await store.addUsage(keyID: "key_0000000000000000", day: "2025-03-01", tokens: 1, costUSD: 0)
                }
                await #expect(throws: KeyStoreError.self) {
                    try await store.addUsage(keyID: a, day: "March 1st", tokens: 1, costUSD: 0)
                }
                await #expect(throws: KeyStoreError.self) {
                    try await store.addUsage(keyID: a, day: "2025-03-01", tokens: -1, costUSD: 0)
                }
                await #expect(throws: KeyStoreError.self) {
                    try await store.addUsage(keyID: a, day: "2025-03-01", tokens: 1, costUSD: .nan)
                }
                // A refused addition changed nothing.
                #expect(try await store.tokensUsed(keyID: a, day: "2025-03-01") == 2000)
            }
        }
    }

    // MARK: Contexts

    @Test func aContextIsVisibleOnlyToItsKey() async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                let a = try await store.createKey(name: "a", limits: .defaults).record.id
                let b = try await store.createKey(name: "b", limits: .defaults).record.id
                let first = ContextRecord(
                    id: "ctx_000000000000000000000001", keyID: a, name: "logs", bytes: 1234,
                    created: Date(timeIntervalSince1970: 1_700_000_000))
                let second = ContextRecord(
                    id: "ctx_000000000000000000000002", keyID: a, name: nil, bytes: 0,
                    created: Date(timeIntervalSince1970: 1_700_000_100))
                try await store.addContext(first)
                try await store.addContext(second)

                #expect(try await store.context(id: first.id, keyID: a) == first)
                #expect(try await store.contexts(keyID: a) == [first, second])
                // Key B sees exactly what it sees for an id that does not exist.
                #expect(try await store.context(id: first.id, keyID: b) == nil)
                #expect(try await store.context(id: "ctx_ffffffffffffffffffffffff", keyID: b) == nil)
                #expect(try await store.contexts(keyID: b).isEmpty)
                #expect(try await store.deleteContext(id: first.id, keyID: b) == false)
                #expect(try await store.context(id: first.id, keyID: a) == first)

                await #expect(throws: KeyStoreError.self) { try await store.addContext(first) }
                #expect(try await store.deleteContext(id: first.id, keyID: a))
                #expect(try await store.deleteContext(id: first.id, keyID: a) == false)
                #expect(try await store.context(id: first.id, keyID: a) == nil)
                #expect(try await store.contexts(keyID: a) == [second])
            }
        }
    }

    // MARK: The file

    @Test func theKeyNeverReachesTheFile() async throws {
        try await withDatabase { database, _ in
            var secrets = [String]()
            try await SQLiteKeyStore.withStore(path: database) { store in
                for name in ["one", "two", "three"] {
                    secrets.append(try await store.createKey(name: name, limits: .defaults).secret)
                }
                _ = try await store.revokeKey("two")
                // Read while open too: the rows may still be in the WAL.
                try expectAbsent(secrets, in: (database as NSString).deletingLastPathComponent)
            }
            try expectAbsent(secrets, in: (database as NSString).deletingLastPathComponent)
        }
    }

    private func expectAbsent(_ secrets: [String], in directory: String) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(names.contains("keys.sqlite"))
        var all = Data()
        for name in names { all += try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)) }
        #expect(all.count > 0)
        for secret in secrets {
            let secretPart = String(secret.dropFirst(21))
            #expect(all.range(of: Data(secret.utf8)) == nil)
            #expect(all.range(of: Data(secretPart.utf8)) == nil)
            #expect(all.range(of: Data(secretPart.prefix(16).utf8)) == nil)
        }
    }

    @Test func theFileIs0600InA0700Directory() async throws {
        try await withDatabase { database, root in
            let store = try await SQLiteKeyStore.open(path: database)
            _ = try await store.createKey(name: "k", limits: .defaults)
            #expect(store.repairs.isEmpty)
            #expect(mode((database as NSString).deletingLastPathComponent) == 0o700)
            #expect(mode(database) == 0o600)
            #expect(mode(database + "-wal") == 0o600)
            await store.close()

            // A file made looser behind our back is tightened, and said.
            chmod(database, 0o644)
            let reopened = try await SQLiteKeyStore.open(path: database)
            #expect(reopened.repairs.count == 1 && reopened.repairs[0].contains("644"))
            #expect(mode(database) == 0o600)
            #expect(try await reopened.listKeys().count == 1)
            await reopened.close()
            _ = root
        }
    }

    @Test(arguments: ["", "-wal"])
    func aSymbolicLinkIsRefused(suffix: String) async throws {
        try await withDatabase { database, root in
            let directory = (database as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let target = root + "/elsewhere"
            try Data("untouched".utf8).write(to: URL(fileURLWithPath: target))
            if !suffix.isEmpty {
                // A real store, then its WAL swapped for a link.
                try await SQLiteKeyStore.withStore(path: database) { _ in }
            }
            #expect(symlink(target, database + suffix) == 0)
            let error = await #expect(throws: KeyStoreError.self) {
                try await SQLiteKeyStore.open(path: database)
            }
            #expect(error?.description.contains("symbolic link") == true, "\(String(describing: error))")
            #expect(try String(contentsOfFile: target, encoding: .utf8) == "untouched")
        }
    }

    @Test func aFileOfANewerSchemaIsRefused() async throws {
        try await withDatabase { database, _ in
            try await SQLiteKeyStore.withStore(path: database) { store in
                _ = try await store.createKey(name: "k", limits: .defaults)
            }
            // The header's user_version (offset 60, big-endian) is the schema version; the last close checkpointed
            // the WAL into the file.
            var bytes = try Data(contentsOf: URL(fileURLWithPath: database))
            #expect(Array(bytes[60..<64]) == [0, 0, 0, 1])
            bytes[63] = 99
            try bytes.write(to: URL(fileURLWithPath: database))
            let error = await #expect(throws: KeyStoreError.self) {
                try await SQLiteKeyStore.open(path: database)
            }
            #expect(error?.description.contains("newer rlm") == true, "\(String(describing: error))")
        }
    }

    @Test func aClosedStoreSaysSo() async throws {
        try await withDatabase { database, _ in
            let store = try await SQLiteKeyStore.open(path: database)
            await store.close()
            await store.close()
            let error = await #expect(throws: KeyStoreError.self) { try await store.listKeys() }
            #expect(error?.description.contains("closed") == true)
        }
    }

    /// Two instances on one file, as `rlm keys` beside a running `rlm serve`: each sees the other's writes at once,
    /// and concurrent writes from both all land.
    @Test func twoStoresOnOneFileSeeEachOthersWrites() async throws {
        try await withDatabase { database, _ in
            let server = try await SQLiteKeyStore.open(path: database)
            let cli = try await SQLiteKeyStore.open(path: database)
            do {
                let created = try await cli.createKey(name: "shared", limits: .defaults)
                #expect(try await server.authenticate(secret: created.secret) == created.record)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<20 {
                        let store = index.isMultiple(of: 2) ? server : cli
                        group.addTask {
                            try await store.addUsage(
                                keyID: created.record.id, day: "2025-01-01", tokens: 10, costUSD: 0.5)
                        }
                    }
                    try await group.waitForAll()
                }
                #expect(try await cli.tokensUsed(keyID: created.record.id, day: "2025-01-01") == 200)
                #expect(try await server.listKeys().first?.spentUSD == 10)
                _ = try await cli.revokeKey("shared")
                #expect(try await server.authenticate(secret: created.secret) == nil)
            } catch {
                await server.close()
                await cli.close()
                throw error
            }
            await server.close()
            await cli.close()
        }
    }

    // MARK: Location

    @Test func theStoreLocationFollowsTheFlagThenXDG() {
        let explicit = StoreLocation(store: "/srv/rlm", environment: ["XDG_DATA_HOME": "/data"])
        #expect(explicit.directory == "/srv/rlm" && explicit.isExplicit)
        #expect(explicit.keysDatabase == "/srv/rlm/keys.sqlite")
        #expect(explicit.contextsDirectory == "/srv/rlm/contexts")
        let xdg = StoreLocation(store: nil, environment: ["XDG_DATA_HOME": "/data", "HOME": "/home/u"])
        #expect(xdg.directory == "/data/swiftrlm" && !xdg.isExplicit)
        let home = StoreLocation(store: nil, environment: ["HOME": "/home/u"])
        #expect(home.keysDatabase == "/home/u/.local/share/swiftrlm/keys.sqlite")
        let relativeXDG = StoreLocation(store: nil, environment: ["XDG_DATA_HOME": "data", "HOME": "/home/u"])
        #expect(relativeXDG.directory == "/home/u/.local/share/swiftrlm")
        let relative = StoreLocation(store: "rel/store")
        #expect(relative.directory == FileManager.default.currentDirectoryPath + "/rel/store")
    }
}
