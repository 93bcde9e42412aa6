import Foundation
import Glibc
import RLMStore
import Testing

@testable import RLMService

/// Paths beneath `--root`: resolved lexically (no `..`, no path outside every root), then opened without following
/// any symbolic link and without leaving the root.
@Suite("Roots")
struct RootsTests {
    /// `root/` (file.txt, sub/inner.txt, link → ../outside/secret.txt, linkdir → ../outside, innerlink → file.txt),
    /// `outside/secret.txt` and `rootevil/file.txt` (a sibling whose name starts with the root's).
    struct Tree {
        let base: String
        var root: String { base + "/root" }
        var outside: String { base + "/outside" }

        init(in directory: String) throws {
            base = directory + "/tree"
            let manager = FileManager.default
            for dir in ["root/sub", "outside", "rootevil"] {
                try manager.createDirectory(atPath: base + "/" + dir, withIntermediateDirectories: true)
            }
            try Data("inside".utf8).write(to: URL(fileURLWithPath: base + "/root/file.txt"))
            try Data("nested".utf8).write(to: URL(fileURLWithPath: base + "/root/sub/inner.txt"))
            try Data("secret".utf8).write(to: URL(fileURLWithPath: base + "/outside/secret.txt"))
            try Data("evil".utf8).write(to: URL(fileURLWithPath: base + "/rootevil/file.txt"))
            try manager.createSymbolicLink(
                atPath: base + "/root/link", withDestinationPath: base + "/outside/secret.txt")
            try manager.createSymbolicLink(atPath: base + "/root/linkdir", withDestinationPath: "../outside")
            try manager.createSymbolicLink(atPath: base + "/root/innerlink", withDestinationPath: "file.txt")
        }
    }

    private func withTree(_ body: (RLMService, Tree, Fixture) async throws -> Void) async throws {
        try await withFixture { fixture in
            let tree = try Tree(in: fixture.directory)
            let service = fixture.service { $0.roots = [tree.root] }
            try await body(service, tree, fixture)
        }
    }

    private func read(_ fd: Int32) -> String {
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = Glibc.read(fd, &buffer, buffer.count)
        return String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
    }

    private func isDirectory(_ fd: Int32) -> Bool {
        var info = stat()
        return fstat(fd, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    @Test func aFileOrDirectoryInsideARootResolvesAndOpens() async throws {
        try await withTree { service, tree, _ in
            let absolute = try service.resolveBeneathRoots(tree.root + "/sub/inner.txt")
            #expect(absolute.root == tree.root && absolute.relative == "sub/inner.txt")
            let relative = try service.resolveBeneathRoots("sub//inner.txt")
            #expect(relative.root == tree.root && relative.relative == "sub/inner.txt")
            let itself = try service.resolveBeneathRoots(tree.root + "/")
            #expect(itself.root == tree.root && itself.relative == "")

            #expect(read(try service.openBeneath(root: tree.root, relative: "file.txt")) == "inside")
            #expect(read(try service.openBeneath(root: absolute.root, relative: absolute.relative)) == "nested")
            let directory = try service.openBeneath(root: tree.root, relative: "sub")
            #expect(isDirectory(directory))
            close(directory)
            let rootFD = try service.openBeneath(root: tree.root, relative: "")
            #expect(isDirectory(rootFD))
            close(rootFD)
        }
    }

    @Test(arguments: ["../outside/secret.txt", "sub/../file.txt", "sub/../../outside/secret.txt", "./file.txt", ".."])
    func dotDotAndDotAreRefused(_ path: String) async throws {
        try await withTree { service, tree, fixture in
            for candidate in [path, tree.root + "/" + path] {
                let error = await serviceError { try service.resolveBeneathRoots(candidate) }
                #expect(error?.status == 400)
                #expect(error?.param == "paths")
                #expect(error?.message.contains(fixture.directory) == false)
            }
        }
    }

    @Test func anAbsolutePathOutsideEveryRootIsRefused() async throws {
        try await withTree { service, tree, fixture in
            for path in [tree.outside + "/secret.txt", tree.base + "/rootevil/file.txt", "/etc/passwd", tree.base] {
                let error = await serviceError { try service.resolveBeneathRoots(path) }
                #expect(error?.status == 400, "\(path)")
                #expect(error?.message.contains("outside") == true)
                #expect(error?.message.contains(fixture.directory) == false)
                let added = await serviceError { try service.addPathContext(caller: .localUser, path: path, name: nil) }
                #expect(added?.status == 400)
            }
        }
    }

    @Test(arguments: ["link", "linkdir/secret.txt", "linkdir", "innerlink", "missing.txt"])
    func linksAndMissingFilesAreRefusedWhenOpened(_ relative: String) async throws {
        try await withTree { service, tree, fixture in
            // Lexically fine: the link is caught when the path is opened.
            let resolved = try service.resolveBeneathRoots(tree.root + "/" + relative)
            #expect(resolved.relative == relative)
            let error = await serviceError { try service.openBeneath(root: resolved.root, relative: resolved.relative) }
            #expect(error?.status == 400)
            #expect(error?.param == "paths")
            #expect(error?.message.contains(fixture.directory) == false)
            let added = await serviceError { try service.addPathContext(caller: .localUser, path: relative, name: nil) }
            #expect(added?.status == 400)
        }
    }

    @Test func withoutRootsEveryPathIsRefusedWithAdviceToUpload() async throws {
        try await withFixture { fixture in
            let tree = try Tree(in: fixture.directory)
            let service = fixture.service()
            for path in [tree.root + "/file.txt", "file.txt"] {
                let error = await serviceError { try service.resolveBeneathRoots(path) }
                #expect(error?.status == 400)
                #expect(error?.param == "paths")
                #expect(error?.message.contains("upload") == true)
                let added = await serviceError { try service.addPathContext(caller: .localUser, path: path, name: nil) }
                #expect(added?.message.contains("upload") == true)
            }
        }
    }

    @Test func aPathContextBelongsToItsCaller() async throws {
        try await withTree { service, tree, fixture in
            let (_, owner) = try await fixture.key("owner")
            let (_, stranger) = try await fixture.key("stranger")
            let file = try service.addPathContext(caller: owner, path: tree.root + "/file.txt", name: nil)
            let directory = try service.addPathContext(caller: owner, path: "sub", name: "the sub dir")
            #expect(file.id.hasPrefix("ctx_") && file.name == "file.txt")
            #expect(directory.name == "the sub dir")
            #expect(try await service.context(caller: owner, id: file.id).name == "file.txt")

            let stolen = await serviceError { try await service.context(caller: stranger, id: file.id) }
            let missing = await serviceError { try await service.context(caller: stranger, id: unknownContextID()) }
            #expect(stolen?.status == 404)
            #expect(shape(stolen, id: file.id) == shape(missing, id: unknownContextID()))
            #expect(
                await serviceError { try await service.deleteContext(caller: stranger, id: file.id) }?.status == 404)

            try await service.deleteContext(caller: owner, id: directory.id)
            #expect(await serviceError { try await service.context(caller: owner, id: directory.id) }?.status == 404)
            #expect(FileManager.default.fileExists(atPath: tree.root + "/sub/inner.txt"))  // only forgotten
        }
    }
}
