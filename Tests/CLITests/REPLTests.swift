import Foundation
import Glibc
import Testing

/// `rlm sandbox repl` on a terminal and in a pipe: exit() and quit() end it cleanly, Ctrl-C interrupts a running cell
/// and gives a fresh prompt with the state kept, and the terminal is put back.
@Suite("rlm sandbox repl", .serialized)
struct REPLTests {
    @Test(arguments: ["exit()", "quit()"])
    func exitEndsTheREPLWithStatusZero(command: String) async throws {
        let state = try ChatTests.stateDirectory()
        let session = try await runInTerminal(
            ["sandbox", "repl"], environment: ["XDG_STATE_HOME": state],
            steps: [
                .expect(">>> "), .send("x = 5\r"), .expect(">>> "), .send("print(x * 2)\r"), .expect("10"),
                .expect(">>> "), .send(command + "\r"), .waitForExit,
            ])
        #expect(session.status == 0, "\(session.output)")
        #expect(session.terminalRestored)
        #expect(!session.output.contains("NameError"), "\(session.output)")
        let history = try String(contentsOfFile: state + "/swiftrlm/history/repl", encoding: .utf8)
        #expect(history == "x = 5\nprint(x * 2)\n\(command)\n")
    }

    @Test func ctrlCInterruptsARunningCellAndKeepsTheState() async throws {
        let session = try await runInTerminal(
            ["sandbox", "repl"], environment: ["XDG_STATE_HOME": try ChatTests.stateDirectory()],
            steps: [
                .expect(">>> "), .send("x = 21\r"), .expect(">>> "), .send("while True: pass\r"), .pause(1.5),
                .send("\u{03}"), .expect("KeyboardInterrupt"), .expect(">>> "), .send("print(x * 2)\r"),
                .expect("42"), .expect(">>> "), .send("\u{04}"), .waitForExit,
            ])
        #expect(session.status == 0, "\(session.output)")
        #expect(session.terminalRestored)
        #expect(!session.output.contains("state is lost"), "the sandbox was replaced: \(session.output)")
    }

    @Test func ctrlCAtThePromptDropsTheBlockTyped() async throws {
        let session = try await runInTerminal(
            ["sandbox", "repl"], environment: ["XDG_STATE_HOME": try ChatTests.stateDirectory()],
            steps: [
                .expect(">>> "), .send("for i in range(3):\r"), .expect("... "), .send("    print('never')"),
                .send("\u{03}"), .expect("KeyboardInterrupt"), .expect(">>> "), .send("print('fresh')\r"),
                .expect("fresh\r\n"), .expect(">>> "), .send("\u{04}"), .waitForExit,
            ])
        #expect(session.status == 0, "\(session.output)")
        #expect(!session.output.contains("never\r\n"), "\(session.output)")
    }

    @Test(arguments: [SIGTERM, SIGHUP])
    func aSignalAtThePromptEndsTheREPLAndRestoresTheTerminal(signal: Int32) async throws {
        let session = try await runInTerminal(
            ["sandbox", "repl"], environment: ["XDG_STATE_HOME": try ChatTests.stateDirectory()],
            steps: [.expect(">>> "), .send("x = 1\r"), .expect(">>> "), .send("half"), .signal(signal), .waitForExit])
        #expect(session.status == 128 + signal, "\(session.output)")
        #expect(session.terminalRestored, "raw mode was left on")
    }

    @Test(arguments: [
        ("x = 1\nexit()\nprint('after')\n", Int32(0)),
        ("quit\nprint('after')\n", 0),
        ("import sys\nsys.exit(3)\nprint('after')\n", 3),
        ("exit(4)\n", 4),
    ])
    func inAPipeExitEndsTheREPL(input: String, status: Int32) async throws {
        let result = try await runRLM(["sandbox", "repl"], stdin: input)
        #expect(result.status == status, "\(result.stderr)")
        #expect(!result.stdout.contains("after"))
        #expect(!result.stderr.contains("Traceback"), "\(result.stderr)")
    }
}
