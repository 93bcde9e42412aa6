import ArgumentParser
import Foundation

struct ViewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "view", abstract: "Not written yet.")

    func run() async throws {
        printError("rlm: not written yet")
        throw ExitCode(2)
    }
}
