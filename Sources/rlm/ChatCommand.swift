import ArgumentParser
import Foundation

struct ChatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chat", abstract: "Not written yet.")

    func run() async throws {
        printError("rlm: not written yet")
        throw ExitCode(2)
    }
}
