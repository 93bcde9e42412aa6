import Foundation
import Glibc
import RLM
import RLMSandbox

/// The sandbox limits that follow the context: `--memory`, `--workdir-size`, `--max-context`. Each is a flag; left
/// unset, it grows with the context's planned size (known before anything is read), so a context that cannot fit is
/// refused before a byte of it is read or copied, with a message naming the flag that raises the limit.
///
/// The rules (README, "Contexts of any size"):
/// - `--max-context`: the most bytes of sources a run loads. Default: a quarter of the machine's RAM, at most 16 GiB.
/// - `--memory`: each sandbox's memory (RLIMIT_AS and, as root, its memory cgroup). Default: twice the context plus
///   512 MiB for text (six times for a JSON context, whose Python objects are larger than its text), at least 1 GiB.
/// - `--workdir-size`: each sandbox's private tmpfs work dir. The context does not live there; the default leaves room
///   for code that writes derived files: the context's size, at least 256 MiB.
/// - All sandboxes of the process together may use at least what one of them needs (their shared cgroup ceiling grows
///   to fit), never more than the machine's RAM.
public struct ContextLimits: Sendable, Hashable {
    /// `--memory`, in bytes; `nil` follows the context.
    public var memoryBytes: Int?
    /// `--workdir-size`, in bytes; `nil` follows the context.
    public var workDirBytes: Int?
    /// `--max-context`, in bytes; `nil` is ``defaultMaxContextBytes``.
    public var maxContextBytes: Int?

    /// - Parameters: as the properties.
    public init(memoryBytes: Int? = nil, workDirBytes: Int? = nil, maxContextBytes: Int? = nil) {
        self.memoryBytes = memoryBytes
        self.workDirBytes = workDirBytes
        self.maxContextBytes = maxContextBytes
    }

    /// The machine's physical memory (8 GiB when it cannot be read).
    public static var physicalMemory: Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES))
        let size = sysconf(Int32(_SC_PAGESIZE))
        return pages > 0 && size > 0 ? pages * size : 8 << 30
    }

    /// A quarter of the machine's RAM, at most 16 GiB.
    public static var defaultMaxContextBytes: Int { min(16 << 30, physicalMemory / 4) }

    /// The context limit in force.
    public var maxContext: Int { maxContextBytes ?? Self.defaultMaxContextBytes }

    /// The memory a sandbox gets for a context of `bytes` when `--memory` is not given.
    public static func defaultMemory(forContextBytes bytes: Int, shape: ContextSource.Shape?) -> Int {
        let factor = shape == .json ? 6 : 2
        return max(1 << 30, bytes.multipliedReportingOverflow(by: factor).partialValue + (512 << 20))
    }

    /// The least memory that can hold a context of `bytes` at all (one copy of a text; the parsed objects of JSON).
    static func minimumMemory(forContextBytes bytes: Int, shape: ContextSource.Shape?) -> Int {
        (shape == .json ? 3 * bytes : bytes) + (64 << 20)
    }

    /// The sandbox configuration for a context of `bytes`, from `base` (the interpreter and the other limits).
    /// - Throws: ``ContextLoadError`` (too large) naming the flag to change, when the context cannot fit.
    public func sandbox(
        forContextBytes bytes: Int, shape: ContextSource.Shape?, base: ProcessSandbox.Configuration
    ) throws -> ProcessSandbox.Configuration {
        let describe = ByteSize.describe
        let ram = Self.physicalMemory
        if bytes > maxContext {
            throw ContextLoadError(
                "the context is \(describe(bytes)), more than --max-context (\(describe(maxContext))); pass a larger "
                    + "--max-context (e.g. --max-context \(ByteSize.suggest(bytes))) or fewer files",
                isTooLarge: true)
        }
        var configuration = base
        let memory = memoryBytes ?? Self.defaultMemory(forContextBytes: bytes, shape: shape)
        let least = Self.minimumMemory(forContextBytes: bytes, shape: shape)
        if let given = memoryBytes, given < least {
            throw ContextLoadError(
                "the sandbox memory (--memory \(describe(given))) cannot hold a \(describe(bytes)) context; pass "
                    + "--memory \(ByteSize.suggest(Self.defaultMemory(forContextBytes: bytes, shape: shape))) or more",
                isTooLarge: true)
        }
        let workDir = workDirBytes ?? max(256 << 20, bytes)
        if memory + workDir > ram {
            let flag = memoryBytes == nil ? "a smaller context (--max-context)" : "a smaller --memory"
            throw ContextLoadError(
                "a sandbox for this \(describe(bytes)) context needs \(describe(memory)) of memory and a "
                    + "\(describe(workDir)) work dir, more than this machine's \(describe(ram)) of RAM; pass \(flag)"
                    + (workDirBytes == nil ? "" : " or a smaller --workdir-size"),
                isTooLarge: true)
        }
        configuration.memoryLimitBytes = memory
        configuration.workDirBytes = workDir
        configuration.totalMemoryLimitBytes = min(
            ram, max(configuration.totalMemoryLimitBytes, memory + workDir + (64 << 20)))
        return configuration
    }
}

/// Byte sizes as users type and read them.
public enum ByteSize {
    /// Parses `512M`, `2G`, `1.5GiB`, `300MB`, `4096K`, `1T`; a plain number is MiB (as `rlm sandbox exec --memory`).
    /// Units are binary (K = KiB).
    /// - Returns: bytes, or `nil` when the text is not a positive size.
    public static func parse(_ text: String) -> Int? {
        var number = text.trimmingCharacters(in: .whitespaces).lowercased()
        var unit = 1 << 20
        for (suffix, value) in units where number.hasSuffix(suffix) {
            number.removeLast(suffix.count)
            unit = value
            break
        }
        guard let value = Double(number.trimmingCharacters(in: .whitespaces)), value.isFinite, value > 0,
            value * Double(unit) < Double(Int.max / 2)
        else { return nil }
        let bytes = Int((value * Double(unit)).rounded())
        return bytes > 0 ? bytes : nil
    }

    /// Longest suffix first, so `mb` is not read as `b`.
    private static let units: [(String, Int)] = [
        ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40),
        ("kb", 1 << 10), ("mb", 1 << 20), ("gb", 1 << 30), ("tb", 1 << 40),
        ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40), ("b", 1),
    ]

    /// `1536` → `1.5 KiB`; the same formatter the context planner uses.
    public static func describe(_ bytes: Int) -> String {
        ContextPlanner.describeBytes(bytes)
    }

    /// A round flag value at least `bytes`: `2G`, `700M`.
    static func suggest(_ bytes: Int) -> String {
        if bytes >= 1 << 30 { return "\((bytes + (1 << 30) - 1) >> 30)G" }
        return "\((bytes + (1 << 20) - 1) >> 20)M"
    }
}
