import Foundation
import Glibc
import RLM
import Synchronization

/// A sandbox's own cgroup v1 memory and pids groups: the kernel enforces the limits on every process inside, and the
/// host can find and kill every one of them.
struct SandboxCgroups: Sendable {
    let memoryDirectory: String?
    let pidsDirectory: String?

    var directories: [String] { [memoryDirectory, pidsDirectory].compactMap { $0 } }

    /// Creates the groups when the host may (root, cgroup v1 memory/pids mounted and writable); `nil` otherwise.
    /// - Parameter parents: per controller, the group to create them in (the process's ``HostCgroups`` group);
    ///   without one, our own group or the root.
    static func create(
        name: String, memoryLimitBytes: Int, maxProcesses: Int, parents: [String: String] = [:]
    ) -> SandboxCgroups? {
        guard geteuid() == 0 else { return nil }
        let memory = makeGroup(controller: "memory", name: name, parent: parents["memory"]) { dir in
            try write("\(memoryLimitBytes)", to: dir + "/memory.limit_in_bytes")
            // Without swap accounting this file does not exist; with it, swap must not lift the limit.
            if FileManager.default.fileExists(atPath: dir + "/memory.memsw.limit_in_bytes") {
                try? write("\(memoryLimitBytes)", to: dir + "/memory.memsw.limit_in_bytes")
            }
        }
        let pids = makeGroup(controller: "pids", name: name, parent: parents["pids"]) { dir in
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
        Array(Set(directories.flatMap(Self.members(of:))))
    }

    /// SIGKILLs every process in the groups until they are empty (bounded to about a second).
    func killAll() {
        Self.killAll(in: directories)
    }

    /// Removes the (empty) groups.
    func remove() {
        for dir in directories { Self.removeGroup(dir) }
    }

    static func members(of dir: String) -> [pid_t] {
        guard let text = try? String(contentsOfFile: dir + "/cgroup.procs", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { pid_t($0) }
    }

    static func killAll(in dirs: [String]) {
        for attempt in 0..<200 {
            let pids = Set(dirs.flatMap(members(of:)))
            if pids.isEmpty { return }
            for pid in pids { _ = kill(pid, SIGKILL) }
            usleep(attempt < 20 ? 1000 : 5000)
        }
    }

    /// Removes one empty group, retrying briefly while the kernel finishes tearing down its last members.
    @discardableResult
    static func removeGroup(_ dir: String, attempts: Int = 100) -> Bool {
        for attempt in 0..<attempts {
            if rmdir(dir) == 0 || errno == ENOENT { return true }
            usleep(attempt < 10 ? 1000 : 10_000)
        }
        return false
    }

    /// The cgroup v1 hierarchy of `controller`, when it is mounted and we may create groups in it.
    static func hierarchy(_ controller: String) -> String? {
        let root = "/sys/fs/cgroup/\(controller)"
        guard access(root + "/cgroup.procs", W_OK) == 0 || access(root, W_OK) == 0 else { return nil }
        return root
    }

    /// Where this process may make groups for `controller`: under its own group first, so a limit placed on the
    /// host process also bounds its sandboxes, then the root.
    static func bases(_ controller: String) -> [String] {
        guard let root = hierarchy(controller) else { return [] }
        var candidates = [String]()
        if let own = ownPath(controller: controller), own != "/" { candidates.append(root + own) }
        candidates.append(root)
        return candidates
    }

    private static func makeGroup(
        controller: String, name: String, parent: String?, configure: (String) throws -> Void
    ) -> String? {
        let candidates = parent.map { [$0] } ?? bases(controller)
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

    static func write(_ value: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SandboxError.setup("cannot open \(path): \(errnoText())") }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else {
            throw SandboxError.setup("cannot write \(path): \(errnoText())")
        }
    }
}

/// The one cgroup per host process above every sandbox's (`swiftrlm-<pid>` in each controller), holding the
/// process-wide ceilings: all sandboxes together stay under ``ProcessSandbox/Configuration/totalMemoryLimitBytes`` and
/// ``ProcessSandbox/Configuration/totalMaxProcesses``, however many runs, threads or recursion levels start them.
///
/// Counted: the group is made by the first sandbox and removed when the last one ends (and at exit). Every start also
/// sweeps groups left by dead processes (`swiftrlm-<pid>`, `swiftrlm-<pid>-*`: a SIGKILLed `rlm`), killing anything
/// still in them first.
enum HostCgroups {
    private struct State {
        var users = 0
        /// controller → this process's group
        var parents: [String: String] = [:]
        var exitHookInstalled = false
    }

    private static let state = Mutex(State())

    static let controllers = ["memory", "pids"]

    /// Sweeps stale groups, then makes (or reuses) the process's group and counts one more user. Blocks (file system
    /// and, for stale groups, kills): call off the pool. Returns the parent per controller; empty when there is none.
    static func acquire(memoryLimitBytes: Int, maxProcesses: Int) -> [String: String] {
        state.withLock { state in
            // With no sandbox of ours alive, our own leftovers (a group that would not go away earlier) are stale too.
            sweep(includingOwn: state.users == 0)
            if state.users == 0 { state.parents = [:] }
            state.users += 1
            if state.parents.isEmpty {
                state.parents = makeParents(memoryLimitBytes: memoryLimitBytes, maxProcesses: maxProcesses)
                if !state.parents.isEmpty && !state.exitHookInstalled {
                    state.exitHookInstalled = true
                    atexit { HostCgroups.removeAtExit() }
                }
            }
            return state.parents
        }
    }

    /// One user fewer; the last one removes the group (its sandboxes' groups are gone by then).
    static func release() {
        state.withLock { state in
            state.users -= 1
            guard state.users == 0 else { return }
            for (controller, dir) in state.parents where SandboxCgroups.removeGroup(dir, attempts: 20) {
                state.parents[controller] = nil
            }
        }
    }

    /// The groups now (for tests).
    static var parentsForTesting: [String: String] { state.withLock { $0.parents } }

    /// The name of this process's group.
    static var parentName: String { "swiftrlm-\(getpid())" }

    private static func makeParents(memoryLimitBytes: Int, maxProcesses: Int) -> [String: String] {
        var parents = [String: String]()
        for controller in controllers {
            for base in SandboxCgroups.bases(controller) {
                let dir = base + "/" + parentName
                guard mkdir(dir, 0o755) == 0 || errno == EEXIST else { continue }
                do {
                    if controller == "memory" {
                        // v1 bounds children by the parent only with hierarchical accounting; it is inherited from
                        // above when set there, and can be switched on here while the group has no children.
                        if (try? String(contentsOfFile: dir + "/memory.use_hierarchy", encoding: .utf8))?
                            .hasPrefix("1") != true
                        {
                            try SandboxCgroups.write("1", to: dir + "/memory.use_hierarchy")
                        }
                        try SandboxCgroups.write("\(memoryLimitBytes)", to: dir + "/memory.limit_in_bytes")
                        if FileManager.default.fileExists(atPath: dir + "/memory.memsw.limit_in_bytes") {
                            try? SandboxCgroups.write("\(memoryLimitBytes)", to: dir + "/memory.memsw.limit_in_bytes")
                        }
                    } else {
                        try SandboxCgroups.write("\(maxProcesses)", to: dir + "/pids.max")
                    }
                    parents[controller] = dir
                    break
                } catch {
                    _ = rmdir(dir)
                }
            }
        }
        return parents
    }

    /// Removes `swiftrlm-<pid>…` groups (at our bases, and the sandbox groups inside `swiftrlm-<pid>` parents) whose
    /// process is gone. A group of a live process is never touched; ours only when `includingOwn`.
    static func sweep(includingOwn: Bool) {
        let me = getpid()
        for controller in controllers {
            for base in SandboxCgroups.bases(controller) {
                guard let entries = try? FileManager.default.contentsOfDirectory(atPath: base) else { continue }
                for entry in entries {
                    guard let (pid, isProbe) = owner(ofGroup: entry) else { continue }
                    if pid == me && (!includingOwn || isProbe) { continue }
                    if pid != me && isAlive(pid) { continue }
                    removeTree(base + "/" + entry)
                }
            }
        }
    }

    /// The pid in a group name of ours: `swiftrlm-<pid>`, `swiftrlm-<pid>-<anything>`, `swiftrlm-probe-<pid>`.
    static func owner(ofGroup name: String) -> (pid: pid_t, isProbe: Bool)? {
        guard name.hasPrefix("swiftrlm-") else { return nil }
        var rest = name.dropFirst("swiftrlm-".count)
        let isProbe = rest.hasPrefix("probe-")
        if isProbe { rest = rest.dropFirst("probe-".count) }
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count < 10,
            rest.count == digits.count || rest.dropFirst(digits.count).first == "-",
            let pid = pid_t(digits), pid > 0
        else { return nil }
        return (pid, isProbe)
    }

    static func isAlive(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    /// Kills every process in `dir` and below, then removes the groups bottom-up.
    static func removeTree(_ dir: String) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue else {
            return
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        for entry in entries {
            var childIsDirectory: ObjCBool = false
            let child = dir + "/" + entry
            // A cgroup's files are plain files; its subdirectories are child groups.
            if FileManager.default.fileExists(atPath: child, isDirectory: &childIsDirectory),
                childIsDirectory.boolValue
            {
                removeTree(child)
            }
        }
        SandboxCgroups.killAll(in: [dir])
        SandboxCgroups.removeGroup(dir, attempts: 20)
    }

    /// At exit: whatever sandboxes are left die with us anyway (their launchers have a parent-death signal); kill
    /// them now and remove their groups and ours, so nothing is left behind. Skipped if another thread holds the
    /// state (it would be mid-start; the next start in any process sweeps).
    private static func removeAtExit() {
        _ = state.withLockIfAvailable { state in
            for dir in state.parents.values { removeTree(dir) }
            state.parents = [:]
        }
    }
}
