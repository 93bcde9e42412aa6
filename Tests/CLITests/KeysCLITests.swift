import Foundation
import Glibc
import Testing

/// `rlm keys create|list|revoke` (contract 4) against a temporary `--store`, as a script calls them.
@Suite("rlm keys")
struct KeysCLITests {
    /// A scratch directory for one test, removed afterwards; `body` gets a store path inside it that does not exist.
    private func withStore<T>(_ body: (_ store: String, _ root: String) async throws -> T) async throws -> T {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-keyscli-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        return try await body(root + "/store", root)
    }

    private func mode(_ path: String) -> UInt32 {
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        return UInt32(info.st_mode & 0o7777)
    }

    private func list(_ store: String) async throws -> [[String: Any]] {
        let result = try await runProgram(try rlmBinary(), ["keys", "list", "--json", "--store", store])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == 1, "one JSON array: \(result.stdout)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
    }

    private func keys(_ arguments: [String], environment: [String: String] = [:]) async throws -> CLIResult {
        try await runProgram(try rlmBinary(), ["keys"] + arguments, environment: environment)
    }

    @Test func createPrintsTheKeyAloneOnTheLastLineAndListNeverShowsIt() async throws {
        try await withStore { store, _ in
            let created = try await keys(["create", "web", "--rpm", "5", "--max-cost", "2.5", "--store", store])
            #expect(created.status == 0, "\(created.stderr)")
            let lastLine = try #require(created.stdout.split(separator: "\n").last.map(String.init))
            #expect(created.stdout == lastLine + "\n", "the key alone on stdout: \(created.stdout)")
            #expect(
                lastLine.wholeMatch(of: /rlm_[0-9a-f]{16}_[0-9a-f]{64}/) != nil, "not a key: \(lastLine)")
            #expect(created.stderr.contains("shown once"), "\(created.stderr)")
            let id = "key_" + lastLine.dropFirst(4).prefix(16)
            #expect(created.stderr.contains(id) && created.stderr.contains("web"))
            #expect(!created.stderr.contains(lastLine), "the key goes to stdout only")

            let listed = try await list(store)
            #expect(listed.count == 1)
            let key = try #require(listed.first)
            #expect(key["id"] as? String == id)
            #expect(key["name"] as? String == "web")
            #expect(key["rpm"] as? Int == 5)
            #expect(key["max_concurrent"] as? Int == 2, "the default applies")
            #expect(key["tokens_per_day"] is NSNull && key["revoked"] is NSNull)
            #expect(key["max_cost_usd"] as? Double == 2.5)
            #expect((key["created"] as? String)?.hasSuffix("Z") == true)
            #expect(
                Set(key.keys) == [
                    "id", "name", "rpm", "tokens_per_day", "max_concurrent", "max_cost_usd", "created", "revoked",
                    "spent_usd",
                ])

            let table = try await keys(["list", "--store", store])
            #expect(table.status == 0)
            #expect(table.stdout.hasPrefix("ID") && table.stdout.contains(id) && table.stdout.contains("web"))
            let secret = String(lastLine.dropFirst(21))
            for output in [table.stdout, table.stderr] { #expect(!output.contains(secret)) }
            let json = try await keys(["list", "--json", "--store", store])
            #expect(!json.stdout.contains(secret))
        }
    }

    @Test func revokeByNameAndByID() async throws {
        try await withStore { store, _ in
            #expect(try await keys(["create", "alpha", "--store", store]).status == 0)
            let beta = try await keys(["create", "beta", "--store", store])
            let betaID = "key_" + beta.stdout.dropFirst(4).prefix(16)

            let byName = try await keys(["revoke", "alpha", "--store", store])
            #expect(byName.status == 0, "\(byName.stderr)")
            #expect(byName.stderr.contains("revoked") && byName.stderr.contains("alpha"))
            let byID = try await keys(["revoke", betaID, "--store", store])
            #expect(byID.status == 0, "\(byID.stderr)")
            #expect(byID.stderr.contains(betaID) && byID.stderr.contains("beta"))

            let listed = try await list(store)
            #expect(listed.count == 2 && listed.allSatisfy { $0["revoked"] is String })

            let again = try await keys(["revoke", "alpha", "--store", store])
            #expect(again.status == 1)
            #expect(again.stderr.contains("no key alpha"), "\(again.stderr)")
        }
    }

    @Test func aDuplicateNameOrABadLimitIsAUsageError() async throws {
        try await withStore { store, _ in
            #expect(try await keys(["create", "dup", "--store", store]).status == 0)
            let duplicate = try await keys(["create", "dup", "--store", store])
            #expect(duplicate.status == 2)
            #expect(duplicate.stdout.isEmpty)
            #expect(duplicate.stderr.contains("already exists"), "\(duplicate.stderr)")
            #expect(try await list(store).count == 1)

            for (arguments, message) in [
                (["--rpm", "0"], "--rpm must be at least 1"),
                (["--max-concurrent", "0"], "--max-concurrent must be at least 1"),
                (["--tokens-per-day=-3"], "--tokens-per-day must be at least 1"),
                (["--max-cost", "0"], "--max-cost must be a positive number"),
            ] {
                let result = try await keys(["create", "other"] + arguments + ["--store", store])
                #expect(result.status == 2, "\(arguments)")
                #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
                #expect(result.stdout.isEmpty)
            }
            let badName = try await keys(["create", "no spaces", "--store", store])
            #expect(badName.status == 2)
            #expect(badName.stderr.contains("1 to 64 characters"), "\(badName.stderr)")
            #expect(try await list(store).count == 1)
        }
    }

    @Test func theStoreIsPrivateAndDefaultsToTheXDGDataDirectory() async throws {
        try await withStore { store, root in
            #expect(try await keys(["create", "k", "--store", store]).status == 0)
            #expect(mode(store) == 0o700)
            #expect(mode(store + "/keys.sqlite") == 0o600)

            // A database made readable by others is tightened on the next use, and said.
            chmod(store + "/keys.sqlite", 0o644)
            let listed = try await keys(["list", "--store", store])
            #expect(listed.stderr.contains("tightened"), "\(listed.stderr)")
            #expect(mode(store + "/keys.sqlite") == 0o600)

            // Without --store: $XDG_DATA_HOME/swiftrlm, else ~/.local/share/swiftrlm.
            let xdg = root + "/data"
            #expect(try await keys(["create", "x"], environment: ["XDG_DATA_HOME": xdg]).status == 0)
            #expect(mode(xdg + "/swiftrlm/keys.sqlite") == 0o600)
            let home = root + "/home"
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            #expect(try await keys(["create", "h"], environment: ["HOME": home]).status == 0)
            #expect(mode(home + "/.local/share/swiftrlm") == 0o700)
            #expect(mode(home + "/.local/share/swiftrlm/keys.sqlite") == 0o600)
        }
    }

    @Test func aSymbolicLinkForTheDatabaseIsRefused() async throws {
        try await withStore { store, root in
            try FileManager.default.createDirectory(atPath: store, withIntermediateDirectories: true)
            let target = root + "/elsewhere"
            try Data("untouched".utf8).write(to: URL(fileURLWithPath: target))
            #expect(symlink(target, store + "/keys.sqlite") == 0)
            let result = try await keys(["create", "k", "--store", store])
            #expect(result.status == 1)
            #expect(result.stdout.isEmpty)
            #expect(result.stderr.contains("symbolic link"), "\(result.stderr)")
            #expect(try String(contentsOfFile: target, encoding: .utf8) == "untouched")
        }
    }

    @Test func listingAStoreThatDoesNotExistCreatesNothing() async throws {
        try await withStore { store, _ in
            #expect(try await list(store).isEmpty)
            let table = try await keys(["list", "--store", store])
            #expect(table.status == 0 && table.stdout.isEmpty && table.stderr.contains("no keys"))
            let revoke = try await keys(["revoke", "ghost", "--store", store])
            #expect(revoke.status == 1 && revoke.stderr.contains("no key ghost"))
            #expect(!FileManager.default.fileExists(atPath: store))
        }
    }
}
