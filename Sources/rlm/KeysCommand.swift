import ArgumentParser
import Foundation
import RLM
import RLMStore

/// `rlm keys`: create, list and revoke the API keys `rlm serve` accepts.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Create, list and revoke the API keys of `rlm serve`.",
        discussion: """
            Keys live in STORE/keys.sqlite, where STORE is --store PATH (the flag `rlm serve --store` takes), else \
            $XDG_DATA_HOME/swiftrlm, else ~/.local/share/swiftrlm. A key is shown once, when it is created: the \
            store keeps only its SHA-256, so a lost key cannot be recovered (revoke it and create another). A \
            running `rlm serve` on the same store sees every change at once. The store directory is made 0700 and \
            the database 0600; a database looser than that is tightened, and said on stderr.
            Exit status: 0 ok, 1 no such key or a store that cannot be read or written, 2 usage error (a bad name \
            or limit, a name already in use).
            """,
        subcommands: [Create.self, List.self, Revoke.self]
    )

    /// Where the store is: the option every subcommand takes.
    struct Location: ParsableArguments {
        @Option(
            help: ArgumentHelp(
                """
                The server store directory, as `rlm serve --store PATH` takes it: keys are in PATH/keys.sqlite \
                (default: $XDG_DATA_HOME/swiftrlm, else ~/.local/share/swiftrlm).
                """, valueName: "PATH"))
        var store: String?

        var location: StoreLocation { StoreLocation(store: store) }

        /// Whether the key database exists (a dangling link counts: opening it then says what is wrong).
        var databaseExists: Bool {
            var info = stat()
            return lstat(location.keysDatabase, &info) == 0
        }

        /// Opens the key store (creating it when missing), reports the permissions it tightened, runs `body`, and
        /// closes the store.
        func withKeyStore<T>(_ body: (SQLiteKeyStore) async throws -> T) async throws -> T {
            try await KeysCommand.guarded {
                try await SQLiteKeyStore.withStore(path: location.keysDatabase) { store in
                    for repair in store.repairs { printError("rlm: \(repair)") }
                    return try await body(store)
                }
            }
        }
    }

    /// Runs `body`, turning a ``KeyStoreError`` into its message on stderr and the documented exit status.
    static func guarded<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as KeyStoreError {
            printError("rlm: \(error)")
            switch error {
            case .invalid, .nameTaken: throw ExitCode(2)
            case .notFound, .storage: throw ExitCode(1)
            }
        }
    }

    /// A key's limits in words: `60 requests/minute, 2 runs at once, unlimited tokens per day, no cost limit`.
    static func describe(_ limits: APIKeyLimits) -> String {
        [
            limits.requestsPerMinute.map { "\($0) requests/minute" } ?? "unlimited requests",
            limits.maxConcurrentRuns.map { "\($0) run\($0 == 1 ? "" : "s") at once" } ?? "unlimited runs at once",
            limits.tokensPerDay.map { "\($0) tokens per UTC day" } ?? "unlimited tokens per day",
            limits.maxCostUSD.map { "at most $\(cost($0)) in all" } ?? "no cost limit",
        ].joined(separator: ", ")
    }

    static func cost(_ usd: Double) -> String {
        usd == usd.rounded() && abs(usd) < 1e15 ? String(Int(usd)) : String(format: "%.4g", usd)
    }

    // MARK: create

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a key and print it alone on stdout's last line (it is shown once).",
            discussion: """
                A limit whose flag is absent takes the default: \(KeysCommand.describe(.defaults)). A limit given \
                must be at least 1 (a cost more than 0); to loosen a default, give a larger number. What was created \
                (id, name, limits) is said on stderr, so `KEY=$(rlm keys create NAME)` captures the key alone.
                """)

        @OptionGroup var location: Location

        @Argument(
            help: ArgumentHelp(
                "The key's name: 1 to 64 letters, digits, '-', '_' or '.', unique among keys not revoked.",
                valueName: "NAME"))
        var name: String

        @Option(name: .customLong("rpm"), help: ArgumentHelp("Requests per minute (default: 60).", valueName: "N"))
        var requestsPerMinute: Int?

        @Option(
            help: ArgumentHelp(
                "Tokens per UTC day, input and output of the whole run tree (default: unlimited).", valueName: "N"))
        var tokensPerDay: Int?

        @Option(help: ArgumentHelp("Runs in flight at once (default: 2).", valueName: "N"))
        var maxConcurrent: Int?

        @Option(help: ArgumentHelp("USD the key may spend in all (default: unlimited).", valueName: "USD"))
        var maxCost: Double?

        var limits: APIKeyLimits {
            let defaults = APIKeyLimits.defaults
            return APIKeyLimits(
                requestsPerMinute: requestsPerMinute ?? defaults.requestsPerMinute,
                tokensPerDay: tokensPerDay ?? defaults.tokensPerDay,
                maxConcurrentRuns: maxConcurrent ?? defaults.maxConcurrentRuns,
                maxCostUSD: maxCost ?? defaults.maxCostUSD)
        }

        func validate() throws {
            // The store checks again; checking here keeps a bad name from creating a store first.
            do {
                try APIKeyRecord.validate(name: name)
                try limits.validate()
            } catch let error as KeyStoreError {
                throw ValidationError(error.description)
            }
        }

        func run() async throws {
            let limits = limits
            let created = try await location.withKeyStore { store in
                try await store.createKey(name: name, limits: limits)
            }
            printError(
                "rlm: created \(created.record.id) named \(created.record.name): \(KeysCommand.describe(limits))")
            printError(
                "rlm: the key is shown once and stored only as a hash in \(location.location.keysDatabase); "
                    + "store it now:")
            writeOut(created.secret + "\n")
        }
    }

    // MARK: list

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List keys, oldest first: id, name, limits, created, revoked, spent. Never a key.",
            discussion: """
                With --json, one array: [{"id", "name", "rpm", "tokens_per_day", "max_concurrent", "max_cost_usd", \
                "created", "revoked", "spent_usd"}] (a limit is null when unlimited; times in ISO 8601 UTC, revoked \
                null for a live key). A store that does not exist yet is an empty list (and is not created).
                """)

        @OptionGroup var location: Location

        @Flag(help: "Print one JSON array.")
        var json = false

        func run() async throws {
            let keys =
                location.databaseExists
                ? try await location.withKeyStore { store in try await store.listKeys() } : []
            if json {
                writeJSONArray(keys.map(Self.object))
                return
            }
            guard !keys.isEmpty else {
                printError("rlm: no keys in \(location.location.keysDatabase) (create one: rlm keys create NAME)")
                return
            }
            let rows =
                [["ID", "NAME", "RPM", "TOKENS/DAY", "CONCURRENT", "MAX COST", "SPENT", "CREATED", "REVOKED"]]
                + keys.map { key in
                    [
                        key.id, key.name, Self.limit(key.limits.requestsPerMinute),
                        Self.limit(key.limits.tokensPerDay), Self.limit(key.limits.maxConcurrentRuns),
                        key.limits.maxCostUSD.map { "$" + KeysCommand.cost($0) } ?? "-",
                        String(format: "$%.4f", key.spentUSD), Self.localTime(key.created),
                        key.revoked.map(Self.localTime) ?? "-",
                    ]
                }
            let columns = rows[0].count
            let widths = (0..<columns).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let padded = (0..<columns - 1).map {
                    row[$0] + String(repeating: " ", count: widths[$0] - row[$0].count)
                }
                writeOut((padded + [row[columns - 1]]).joined(separator: "  ") + "\n")
            }
        }

        static func limit(_ value: Int?) -> String { value.map(String.init) ?? "-" }

        static func object(_ key: APIKeyRecord) -> [String: Any] {
            [
                "id": key.id, "name": key.name,
                "rpm": key.limits.requestsPerMinute ?? NSNull(),
                "tokens_per_day": key.limits.tokensPerDay ?? NSNull(),
                "max_concurrent": key.limits.maxConcurrentRuns ?? NSNull(),
                "max_cost_usd": key.limits.maxCostUSD ?? NSNull(),
                "created": isoTime(key.created), "revoked": key.revoked.map(isoTime) ?? NSNull(),
                "spent_usd": key.spentUSD,
            ]
        }

        static func localTime(_ date: Date) -> String {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.dateFormat = "yyyy-MM-dd HH:mm"
            return formatter.string(from: date)
        }

        static func isoTime(_ date: Date) -> String {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return formatter.string(from: date)
        }

        /// One JSON array and a newline on stdout (keys sorted, slashes unescaped, C1 controls escaped).
        func writeJSONArray(_ objects: [[String: Any]]) {
            guard
                let data = try? JSONSerialization.data(
                    withJSONObject: objects, options: [.sortedKeys, .withoutEscapingSlashes])
            else {
                printError("rlm: the keys could not be written as JSON")
                return
            }
            let text = JSONText.escapingControlCharacters(String(decoding: data, as: UTF8.self))
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
        }
    }

    // MARK: revoke

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a key, by id (key_…) or by name; it is refused from then on, on a running server too.",
            discussion: """
                A revoked key stays listed (with when it was revoked and what it spent); its name can be given to a \
                new key. Revoking a key already revoked, or one that does not exist, exits 1.
                """)

        @OptionGroup var location: Location

        @Argument(help: ArgumentHelp("The key's id (key_…) or name.", valueName: "ID_OR_NAME"))
        var idOrName: String

        func run() async throws {
            guard location.databaseExists else {
                printError(
                    "rlm: \(KeyStoreError.notFound("\(idOrName) that is not revoked")) (no key store at "
                        + "\(location.location.keysDatabase))")
                throw ExitCode(1)
            }
            let revoked = try await location.withKeyStore { store in try await store.revokeKey(idOrName) }
            printError("rlm: revoked \(revoked.id) named \(revoked.name)")
        }
    }
}
