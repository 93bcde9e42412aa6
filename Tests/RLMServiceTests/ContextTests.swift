import Foundation
import Glibc
import RLMStore
import RLMTesting
import Testing

@testable import RLMService

/// Uploaded contexts: streamed to a 0600 file in a 0700 directory, refused past the limit (and removed), and
/// invisible to every other caller — whose ids answer exactly like ids that do not exist.
@Suite("Contexts")
struct ContextTests {
    private func path(_ fixture: Fixture, _ owner: String, _ id: String? = nil) -> String {
        let directory = StoreLocation(directory: fixture.directory).contextsDirectory + "/" + owner
        return id.map { directory + "/" + $0 } ?? directory
    }

    @Test func anUploadIsStreamedToAPrivateFileAndRecorded() async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let (_, caller) = try await fixture.key("owner")
            let upload = try service.beginUpload(caller: caller, name: "notes.txt", expectedBytes: 16)
            #expect(upload.id.hasPrefix("ctx_") && upload.id.count == 28)
            let file = path(fixture, caller.owner, upload.id)
            #expect(FileManager.default.fileExists(atPath: file))  // written as it arrives, not held
            for chunk in ["alpha ", "beta ", "gamma"] { try upload.write(Data(chunk.utf8)) }
            #expect(upload.bytes == 16)
            let record = try await upload.finish()
            #expect(record.id == upload.id)
            #expect(record.bytes == 16)
            #expect(record.name == "notes.txt")
            #expect(record.keyID == caller.owner)

            #expect(try String(contentsOfFile: file, encoding: .utf8) == "alpha beta gamma")
            #expect(mode(file) == 0o600)
            #expect(mode(path(fixture, caller.owner)) == 0o700)
            #expect(mode(StoreLocation(directory: fixture.directory).contextsDirectory) == 0o700)

            let fetched = try await service.context(caller: caller, id: record.id)
            #expect(fetched.id == record.id && fetched.bytes == 16 && fetched.name == "notes.txt")
            #expect(try await service.contexts(caller: caller).map(\.id) == [record.id])

            // Ended once: more bytes or a second finish are refused.
            #expect(await serviceError { try upload.write(Data("more".utf8)) }?.status == 400)
            #expect(await serviceError { try await upload.finish() }?.status == 400)

            try await service.deleteContext(caller: caller, id: record.id)
            #expect(!FileManager.default.fileExists(atPath: file))
            #expect(await serviceError { try await service.context(caller: caller, id: record.id) }?.status == 404)
            #expect(try await service.contexts(caller: caller).isEmpty)
        }
    }

    @Test func anUploadOverTheLimitIs413AndItsFileIsGone() async throws {
        try await withFixture { fixture in
            let service = fixture.service { $0.maxContextBytes = 1000 }
            let (_, caller) = try await fixture.key("owner")

            // Declared too large: refused before a file exists.
            let declared = await serviceError {
                try service.beginUpload(caller: caller, name: nil, expectedBytes: 1001)
            }
            #expect(declared?.status == 413)
            #expect(declared?.code == "context_too_large")
            #expect(declared?.message.contains("--max-context") == true)

            // Streamed too large: refused at the chunk that crosses the limit, the file removed.
            let upload = try service.beginUpload(caller: caller, name: "big")
            let file = path(fixture, caller.owner, upload.id)
            try upload.write(Data(repeating: 65, count: 600))
            let error = await serviceError { try upload.write(Data(repeating: 65, count: 600)) }
            #expect(error?.status == 413)
            #expect(error?.code == "context_too_large")
            #expect(!FileManager.default.fileExists(atPath: file))
            #expect(await serviceError { try await upload.finish() }?.status == 400)
            #expect(await serviceError { try await service.context(caller: caller, id: upload.id) }?.status == 404)
            #expect(try await service.contexts(caller: caller).isEmpty)

            // Exactly the limit is accepted.
            let full = try service.beginUpload(caller: caller, name: nil)
            try full.write(Data(repeating: 66, count: 1000))
            #expect(try await full.finish().bytes == 1000)
            #expect(try FileManager.default.contentsOfDirectory(atPath: path(fixture, caller.owner)) == [full.id])
        }
    }

    @Test func anAbandonedUploadLeavesNoFile() async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let (_, caller) = try await fixture.key("owner")
            var file = ""
            do {
                let upload = try service.beginUpload(caller: caller, name: nil)
                file = path(fixture, caller.owner, upload.id)
                try upload.write(Data("half".utf8))
                #expect(FileManager.default.fileExists(atPath: file))
            }
            #expect(!FileManager.default.fileExists(atPath: file))

            let aborted = try service.beginUpload(caller: caller, name: nil)
            try aborted.write(Data("x".utf8))
            aborted.abort()
            aborted.abort()
            #expect(!FileManager.default.fileExists(atPath: path(fixture, caller.owner, aborted.id)))
            #expect(try await service.contexts(caller: caller).isEmpty)
        }
    }

    @Test func aStoreDirectoryOthersCouldReadIsTightened() async throws {
        try await withFixture { fixture in
            let contexts = StoreLocation(directory: fixture.directory).contextsDirectory
            try FileManager.default.createDirectory(
                atPath: contexts, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let service = fixture.service()
            let (_, caller) = try await fixture.key("owner")
            let upload = try service.beginUpload(caller: caller, name: nil)
            try upload.write(Data("x".utf8))
            _ = try await upload.finish()
            #expect(mode(contexts) == 0o700)
        }
    }

    @Test(arguments: ["", String(repeating: "n", count: 201), "two\nlines", "nul\0byte"])
    func badNamesAre400(_ name: String) async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let (_, caller) = try await fixture.key("owner")
            let error = await serviceError { try service.beginUpload(caller: caller, name: name) }
            #expect(error?.status == 400)
            #expect(error?.param == "name")
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: fixture.directory).contains("contexts") == false)
        }
    }

    @Test func anotherCallersContextIsExactlyLikeAMissingOne() async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let (_, owner) = try await fixture.key("owner")
            let (_, stranger) = try await fixture.key("stranger")
            let upload = try service.beginUpload(caller: owner, name: "private")
            try upload.write(Data("owner's secret".utf8))
            let record = try await upload.finish()
            let missing = unknownContextID()

            let strangerGet = await serviceError { try await service.context(caller: stranger, id: record.id) }
            let missingGet = await serviceError { try await service.context(caller: owner, id: missing) }
            #expect(strangerGet?.status == 404)
            #expect(strangerGet?.code == "context_not_found")
            #expect(shape(strangerGet, id: record.id) == shape(missingGet, id: missing))

            let strangerDelete = await serviceError { try await service.deleteContext(caller: stranger, id: record.id) }
            let missingDelete = await serviceError { try await service.deleteContext(caller: owner, id: missing) }
            #expect(strangerDelete?.status == 404)
            #expect(strangerDelete?.code == "context_not_found")
            #expect(shape(strangerDelete, id: record.id) == shape(missingDelete, id: missing))

            // A malformed id answers the same way (it is never a path).
            let traversal = "../../keys.sqlite"
            let malformed = await serviceError { try await service.context(caller: owner, id: traversal) }
            #expect(shape(malformed, id: traversal) == shape(missingGet, id: missing))

            #expect(try await service.contexts(caller: stranger).isEmpty)
            // The owner still has it, bytes and all.
            #expect(try await service.context(caller: owner, id: record.id).bytes == 14)
            #expect(FileManager.default.fileExists(atPath: path(fixture, owner.owner, record.id)))
        }
    }

    @Test func theLocalUsersContextsStayInTheProcessAndAreNoKeysToSee() async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let (_, keyed) = try await fixture.key("keyed")
            let upload = try service.beginUpload(caller: .localUser, name: "mine")
            try upload.write(Data("local bytes".utf8))
            let record = try await upload.finish()
            #expect(try await service.context(caller: .localUser, id: record.id).bytes == 11)
            #expect(try await service.contexts(caller: .localUser).map(\.id) == [record.id])
            #expect(try await fixture.store.contexts(keyID: Caller.localUser.owner).isEmpty)  // not in the key store

            let seen = await serviceError { try await service.context(caller: keyed, id: record.id) }
            #expect(seen?.code == "context_not_found")
            #expect(await serviceError { try await service.deleteContext(caller: keyed, id: record.id) }?.status == 404)
            try await service.deleteContext(caller: .localUser, id: record.id)
            #expect(!FileManager.default.fileExists(atPath: path(fixture, Caller.localUser.owner, record.id)))
            #expect(await serviceError { try await service.context(caller: .localUser, id: record.id) }?.status == 404)
        }
    }

    @Test func anotherCallersContextInARunOrSessionIsExactlyLikeAMissingOne() async throws {
        try await withFixture { fixture in
            let (_, owner) = try await fixture.key("owner")
            let (_, stranger) = try await fixture.key("stranger")
            try await withReadyService(fixture) { service, server in
                let upload = try service.beginUpload(caller: owner, name: "private")
                try upload.write(Data("owner's secret".utf8))
                let record = try await upload.finish()
                let missing = unknownContextID()

                let stolen = await serviceError {
                    try await service.run(RunRequest(query: "read it", contextIDs: [record.id]), caller: stranger)
                }
                let absent = await serviceError {
                    try await service.run(RunRequest(query: "read it", contextIDs: [missing]), caller: stranger)
                }
                #expect(stolen?.status == 404)
                #expect(shape(stolen, id: record.id) == shape(absent, id: missing))

                let session = await serviceError {
                    try await service.openSession(caller: stranger, contextIDs: [record.id])
                }
                let sessionAbsent = await serviceError {
                    try await service.openSession(caller: stranger, contextIDs: [missing])
                }
                #expect(session?.status == 404)
                #expect(shape(session, id: record.id) == shape(sessionAbsent, id: missing))
                #expect(service.sessions(caller: stranger).isEmpty)
                #expect(await server.requests.isEmpty)  // no model was asked anything
            }
        }
    }
}
