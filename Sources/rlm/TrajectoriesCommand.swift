import ArgumentParser
import Foundation

struct TrajectoriesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "trajectories", abstract: "Not written yet.")

    func run() async throws {
        printError("rlm: not written yet")
        throw ExitCode(2)
    }
}
