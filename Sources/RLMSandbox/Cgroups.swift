import Foundation
import Glibc
import RLM

/// A sandbox's own cgroup v1 memory and pids groups: the kernel enforces the limits on every process inside, and the
/// host can find and kill every one of them.
struct SandboxCgroups: Sendable {
    let memoryDirectory: String?
    let pidsDirectory: String?

    var directories: [String] { [memoryDirectory, pidsDirectory].compactMap { $0 } }

    /// Creates the groups when the host may (root, cgroup v1 memory/pids mounted and writable); `nil` otherwise.
    static func create(name: String, memoryLimitBytes: Int, maxProcesses: Int) -> SandboxCgroups? {
        guard geteuid() == 0 else { return nil }
        let memory = makeGroup(controller: "memory", name: name) { dir in
            try write("\(memoryLimitBytes)", to: dir + "/memory.limit_in_bytes")
            // Without swap accounting this file does not exist; with it, swap must not lift the limit.
            if FileManager.default.fileExists(atPath: dir + "/memory.memsw.limit_in_bytes") {
                try? write("\(memoryLimitBytes)", to: dir + "/memory.memsw.limit_in_bytes")
            }
        }
        let pids = makeGroup(controller: "pids", name: name) { dir in
            try write("\(maxProcesses)", to: dir + "/pids.max")
        }
        if memory == nil && pids == nil { return nil }
        return SandboxCgroups(memoryDirectory: memory, pidsDirectory: pids)
    }

    /// Whether cgroup v1 memory and pids controllers can be used here (for `rlm doctor`).
    static func probe() -> (memory: Bool, pids: Bool) {
        guard let groups = create(name: "swiftrlm-probe-\(getpid())", memoryLimitBytes: 64 << 20, maxProcesses: 8)
        else { return (false, false) }
        defer { groups.remove() }
        return (groups.memoryDirectory != nil, groups.pidsDirectory != nil)
    }

    /// How many times the kernel's OOM killer fired in the memory group.
    func oomKills() -> Int {
        guard let dir = memoryDirectory,
            let text = try? String(contentsOfFile: dir + "/memory.oom_control", encoding: .utf8)
        else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("oom_kill ") {
            return Int(line.dropFirst("oom_kill ".count)) ?? 0
        }
        return 0
    }

    /// Pids still in the groups.
    func members() -> [pid_t] {
        var result = Set<pid_t>()
        for dir in directories {
            guard let text = try? String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                if let pid = pid_t(line) { result.insert(pid) }
            }
        }
        return Array(result)
    }

    /// SIGKILLs every process in the groups until they are empty (bounded to about a second).
    func killAll() {
        for attempt in 0..<200 {
            let pids = members()
            if pids.isEmpty { return }
            for pid in pids { _ = kill(pid, SIGKILL) }
            usleep(attempt < 20 ? 1000 : 5000)
        }
    }

    /// Removes the (empty) groups.
    func remove() {
        for dir in directories {
            for attempt in 0..<100 {
                if rmdir(dir) == 0 || errno == ENOENT { break }
                usleep(attempt < 10 ? 1000 : 10_000)
            }
        }
    }

    private static func makeGroup(controller: String, name: String, configure: (String) throws -> Void) -> String? {
        let root = "/sys/fs/cgroup/\(controller)"
        guard access(root + "/cgroup.procs", W_OK) == 0 || access(root, W_OK) == 0 else { return nil }
        // Nest under our own group where we can, so a limit placed on the host process also bounds its sandboxes.
        var candidates = [String]()
        if let own = ownPath(controller: controller), own != "/" { candidates.append(root + own) }
        candidates.append(root)
        for parent in candidates {
            let dir = parent + "/" + name
            guard mkdir(dir, 0o755) == 0 else { continue }
            do {
                try configure(dir)
                return dir
            } catch {
                _ = rmdir(dir)
            }
        }
        return nil
    }

    private static func ownPath(controller: String) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            if parts[1].split(separator: ",").contains(Substring(controller)) { return String(parts[2]) }
        }
        return nil
    }

    private static func write(_ value: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SandboxError.setup("cannot open \(path): \(errnoText())") }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else {
            throw SandboxError.setup("cannot write \(path): \(errnoText())")
        }
    }
}
