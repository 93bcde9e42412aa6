import Foundation
import Glibc

// What a sandbox leaves behind when something goes wrong, as seen from the host: processes in its cgroups, its cgroup
// directories, bubblewrap processes whose host died. Test helpers for anyone who starts sandboxes (SwiftRLM's own
// sandbox, engine and CLI tests use them to check that none of theirs is left behind); they only read /proc and
// /sys/fs/cgroup.

/// Pids whose cgroup path ends in one of `names` (a sandbox's `swiftrlm-<host pid>-<n>` groups), or, with
/// `prefix`, starts with it.
public func processesInCgroups(named names: [String] = [], prefix: String? = nil) -> [pid_t] {
    guard !names.isEmpty || prefix != nil else { return [] }
    return allPids().filter { pid in
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return false }
        if let prefix, text.contains("/" + prefix) { return true }
        return names.contains { text.contains("/" + $0 + "\n") || text.hasSuffix("/" + $0) }
    }
}

/// cgroup directories named `<prefix>…` anywhere in the first eight levels of the v1 memory and pids hierarchies.
public func cgroupDirectories(prefix: String) -> [String] {
    var found = [String]()
    for root in ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"] {
        guard let walker = FileManager.default.enumerator(atPath: root) else { continue }
        while let path = walker.nextObject() as? String {
            if (path as NSString).lastPathComponent.hasPrefix(prefix) { found.append(root + "/" + path) }
            if path.split(separator: "/").count > 8 { walker.skipDescendants() }
        }
    }
    return found
}

/// bubblewrap processes of our sandboxes (their argv holds `--hostname rlm-sandbox`), started after `date`, whose
/// parent is no longer a host that runs sandboxes (rlm, rlm-bench, a test runner, bwrap itself): reparented to init
/// or a subreaper, which is what a sandbox whose host died or forgot it looks like.
public func orphanedSandboxProcesses(startedAfter date: Date) -> [pid_t] {
    let bootTime = bootDate()
    return allPids().filter { pid in
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
            cmdline.range(of: Data("\0--hostname\0rlm-sandbox\0".utf8)) != nil,
            let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After ")": state(0) ppid(1) … starttime(19), in clock ticks since boot.
        guard fields.count > 19, let ppid = Int32(fields[1]), let ticks = Double(fields[19]) else { return false }
        let started = bootTime.addingTimeInterval(ticks / Double(sysconf(Int32(_SC_CLK_TCK))))
        guard started >= date.addingTimeInterval(-1) else { return false }
        let parent =
            (try? String(contentsOfFile: "/proc/\(ppid)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        return ppid == 1 || !(["rlm", "rlm-bench", "bwrap"].contains(parent) || parent.hasPrefix("swiftrlm"))
    }
}

/// Every pid in /proc.
public func allPids() -> [pid_t] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
}

/// Whether `pid` is gone or a zombie.
public func isZombie(_ pid: pid_t) -> Bool {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return true }
    return status.contains("State:\tZ")
}

private func bootDate() -> Date {
    let text = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8)) ?? ""
    for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
        if let seconds = Double(line.dropFirst(6)) { return Date(timeIntervalSince1970: seconds) }
    }
    return .distantPast
}
