import ArgumentParser
import Foundation
import RLMTrajectory

/// `rlm view TRAJECTORY [-o FILE.html]`: the trajectory as one self-contained HTML page.
struct ViewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "view",
        abstract: "Write a trajectory as one self-contained HTML page.",
        discussion: """
            The page holds the whole trajectory and fetches nothing: every run, each loop's steps, the sub-call \
            tree, the answer or why there is none, and tokens and cost over time. It is written 0600 (it holds the \
            run) to FILE, or to ./<name>.html, and its path is printed. An existing file is replaced only if it is \
            a page rlm view wrote. Exit 0 written, 2 usage error (unreadable trajectory, refused output), 1 other \
            failure.
            """
    )

    @Argument(help: "The trajectory file (JSONL, one event a line).")
    var trajectory: String

    @Option(name: .shortAndLong, help: "Where to write the page (default: ./<trajectory name>.html; - for stdout).")
    var output: String?

    func run() async throws {
        do {
            let bytes = try TrajectoryViewer.readTrajectory(atPath: trajectory)
            let name = (trajectory as NSString).lastPathComponent
            let html = TrajectoryViewer.render(jsonl: bytes, source: name)
            if output == "-" {
                writeOut(html)
                return
            }
            let path = output ?? Self.defaultOutput(for: name)
            try TrajectoryViewer.writePage(html, toPath: path)
            writeOut(path + "\n")
        } catch let error as TrajectoryViewerError {
            printError("rlm view: \(error)")
            throw ExitCode(error.isUsageError ? 2 : 1)
        }
    }

    /// `<name without .jsonl>.html` in the current directory.
    static func defaultOutput(for name: String) -> String {
        var stem =
            name.hasSuffix(".jsonl") ? String(name.dropLast(".jsonl".count)) : (name as NSString).deletingPathExtension
        if stem.isEmpty || stem.hasPrefix(".") { stem = "trajectory" + stem }
        return stem + ".html"
    }
}
