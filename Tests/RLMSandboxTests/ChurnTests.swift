import Foundation
import Glibc
import RLM
import Testing

@testable import RLMSandbox

extension SandboxTests {
    @Suite("Churn")
    struct ChurnTests {
        /// How a churned session ends.
        enum Fate: CaseIterable {
            /// Shut down while a cell sleeps (half of them).
            case killedMidCell
            /// A cell past a 0.2 s timeout, interrupted (a quarter).
            case timedOut
            /// A cell that finishes (the rest).
            case finished

            init(index: Int) {
                switch index % 4 {
                case 0, 1: self = .killedMidCell
                case 2: self = .timedOut
                default: self = .finished
                }
            }
        }

        /// `RLM_CHURN_SESSIONS` sessions (default 1,000), 8 at a time: half shut down mid-cell, a quarter timed out.
        /// Afterwards nothing of theirs is left: no process (launcher reaped, no process in their cgroups, no child
        /// bubblewrap of ours), no descriptor, no temporary file, no cgroup.
        @Test(.timeLimit(.minutes(8))) func sessionsLeaveNothingBehind() async throws {
            let total = ProcessInfo.processInfo.environment["RLM_CHURN_SESSIONS"].flatMap(Int.init) ?? 1000
            let width = 8
            let scratch = try Edge.makeScratchDirectory()
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            var configuration = testConfiguration(timeout: .seconds(10))
            configuration.workerCacheDirectory = Edge.cacheURL(scratch)
            let sandbox = ProcessSandbox(configuration: configuration)
            // Warm up once, so lazily made descriptors (dispatch, the spawner thread) are not counted as leaks.
            try await sandbox.withSession { session in _ = try await session.run("pass") }
            let fdsBefore = Self.openDescriptors()
            let tmpBefore = Self.sandboxTemporaryEntries()
            let clock = ContinuousClock()
            let start = clock.now

            let probes = EdgeBox([(pid: pid_t, cgroups: [String])]())
            let failures = EdgeBox([String]())
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<total {
                    if index >= width { try await group.next() }
                    group.addTask {
                        do {
                            let probe = try await Self.churn(sandbox, fate: Fate(index: index))
                            probes.update { $0.append(probe) }
                        } catch {
                            failures.update { $0.append("session \(index): \(error)") }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let elapsed = clock.now - start
            print("churn: \(total) sessions, \(width) at a time, in \(elapsed)")
            #expect(failures.value.isEmpty, "\(failures.value.prefix(5))")
            #expect(probes.value.count == total)

            // Processes: every launcher reaped, nothing in any of their cgroups, no bubblewrap child of ours.
            let launchers = Set(probes.value.map(\.pid))
            let groupNames = Set(probes.value.flatMap { $0.cgroups.map { ($0 as NSString).lastPathComponent } })
            var left = [String]()
            for _ in 0..<100 {
                left = []
                let ours = Self.ourChildren().filter { launchers.contains($0.pid) && $0.isSandbox }
                left += ours.map { "launcher \($0.pid) alive" }
                left += Self.processesInGroups(groupNames).map { "pid \($0) in a churned session's cgroup" }
                left += probes.value.flatMap(\.cgroups).filter { FileManager.default.fileExists(atPath: $0) }
                    .map { "cgroup \($0)" }
                if left.isEmpty { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(left.isEmpty, "\(left.count) things outlived their sessions: \(left.prefix(10))")
            // With no other sandbox of this process alive, nothing of ours at all: no child sandbox, no cgroup.
            if SessionSlots.shared.live == 0 {
                #expect(Self.ourChildren().filter(\.isSandbox).isEmpty)
                for base in Edge.cgroupBases() {
                    let mine = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [])
                        .filter { $0 == "swiftrlm-\(getpid())" || $0.hasPrefix("swiftrlm-\(getpid())-") }
                    #expect(mine.isEmpty, "cgroups left in \(base): \(mine)")
                }
            }
            // Descriptors: three pipes per session would be thousands; allow a little for other tests' activity.
            let fdsAfter = Self.openDescriptors()
            #expect(fdsAfter <= fdsBefore + 16, "descriptors: \(fdsBefore) before, \(fdsAfter) after")
            // Temporary files: none in the worker cache, none of ours or bubblewrap's in /tmp.
            let cacheLeftovers = ((try? FileManager.default.contentsOfDirectory(atPath: scratch + "/cache")) ?? [])
                .filter { $0.hasSuffix(".tmp") }
            #expect(cacheLeftovers.isEmpty)
            #expect(Self.sandboxTemporaryEntries().subtracting(tmpBefore).isEmpty)
        }

        /// One session through its fate; returns what to look for afterwards.
        static func churn(_ sandbox: ProcessSandbox, fate: Fate) async throws -> (pid: pid_t, cgroups: [String]) {
            let session = try await sandbox.startSession(handler: nil)
            let probe = try #require(session as? WorkerSession).processesForTesting
            switch fate {
            case .killedMidCell:
                async let cell = try? session.run("import time\ntime.sleep(30)")
                try await Task.sleep(for: .milliseconds(Int.random(in: 20...120)))
                await session.shutdown()
                let result = await cell
                #expect(
                    result == nil || result?.stateLost == true || result?.error != nil, "\(String(describing: result))")
            case .timedOut:
                let result = try await session.run("import time\ntime.sleep(5)", timeout: .milliseconds(200))
                #expect(result.timedOut, "\(result)")
                await session.shutdown()
            case .finished:
                let result = try await session.run("print(1)")
                #expect(result.stdout == "1\n", "\(result)")
                await session.shutdown()
            }
            return probe
        }

        /// Direct children of this process, and whether each is a sandbox (bubblewrap started by our launcher).
        static func ourChildren() -> [(pid: pid_t, isSandbox: Bool)] {
            let me = getpid()
            return pids().compactMap { pid in
                guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                    let close = stat.lastIndex(of: ")")
                else { return nil }
                let fields = stat[stat.index(after: close)...].split(separator: " ")
                guard fields.count > 1, Int32(fields[1]) == me else { return nil }
                let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
                return (pid, cmdline.range(of: Data("\0--hostname\0rlm-sandbox\0".utf8)) != nil)
            }
        }

        /// Processes in any of the named cgroups.
        static func processesInGroups(_ names: Set<String>) -> [pid_t] {
            pids().filter { pid in
                guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else {
                    return false
                }
                return text.split(separator: "\n").contains { line in
                    line.split(separator: "/").last.map { names.contains(String($0)) } ?? false
                }
            }
        }

        static func pids() -> [pid_t] {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
        }

        static func openDescriptors() -> Int {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).count
        }

        /// Entries in /tmp a sandbox host or bubblewrap could leave (the test's own scratch directory aside).
        static func sandboxTemporaryEntries() -> Set<String> {
            Set(
                ((try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []).filter {
                    $0.hasPrefix("swiftrlm-\(getpid())") || $0.contains("bubblewrap") || $0.hasPrefix("bwrap")
                        || $0.hasSuffix(".tmp")
                })
        }
    }
}
