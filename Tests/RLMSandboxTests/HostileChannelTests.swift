import Foundation
import Glibc
import RLM
import Testing

@testable import RLMSandbox

/// The host treats every frame from the worker as hostile: garbage, oversized frames, forged ids and unknown types
/// kill the sandbox with a clear error, and the host never hangs.
extension SandboxTests {
    @Suite("Hostile channel")
    struct HostileChannelTests {
        /// A fake worker that answers `init` properly, then sends `frame` (raw bytes, header included) when a cell runs.
        static func hostileWorker(sendingOnExec frameExpression: String) -> Data {
            Data(
                """
                import os, json
                def read_frame():
                    n = int.from_bytes(os.read(0, 4), 'big')
                    data = b''
                    while len(data) < n:
                        data += os.read(0, n - len(data))
                    return json.loads(data)
                def send(obj):
                    body = json.dumps(obj).encode()
                    os.write(1, len(body).to_bytes(4, 'big') + body)
                init = read_frame()
                send({'type': 'ready', 'id': init['id'], 'pid': os.getpid(), 'python': '3', 'landlock': 'unsupported'})
                request = read_frame()
                os.write(1, \(frameExpression))
                import time
                time.sleep(60)
                """.utf8)
        }

        static func frame(_ json: String) -> String {
            "len(\(json.debugDescription).encode()).to_bytes(4, 'big') + \(json.debugDescription).encode()"
        }

        @Test(arguments: [
            ("garbage", "b'\\x00\\x00\\x00\\x05hello'", "malformed"),
            ("oversized", "b'\\x7f\\xff\\xff\\xff' + b'x' * 100", "exceeds"),
            (
                "forged id",
                frame(
                    #"{"type":"result","id":"h999","stdout":"","stderr":"","error":null,"final":null,"duration_ms":1}"#),
                "h999"
            ),
            ("unknown type", frame(#"{"type":"launch_missiles","id":"h1"}"#), "unknown frame type"),
            (
                "wrong field type",
                frame(#"{"type":"result","id":"h1","stdout":5,"stderr":"","error":null,"final":null,"duration_ms":1}"#),
                "wrong type"
            ),
            ("truncated", "b'\\x00\\x00\\x01\\x00{\"type\"'", "frame"),
            (
                "sub-call id reuse",
                frame(#"{"type":"subcall","id":"w1","call":"llm_query","prompt":"a","model":null}"#) + " + "
                    + frame(#"{"type":"subcall","id":"w1","call":"llm_query","prompt":"b","model":null}"#),
                "used before"
            ),
            (
                "child context over the limit",
                frame(
                    #"{"type":"subcall","id":"w1","call":"rlm_query","prompt":"a","model":null,"#
                        + #""context_stream":{"kind":"str","bytes":1099511627776}}"#),
                "over the announced limit"
            ),
            (
                "child context records overrun",
                "(os.write(4, b'\\x00\\x00\\x00\\x64' + b'x' * 100) and b'') + "
                    + frame(
                        #"{"type":"subcall","id":"w1","call":"rlm_query","prompt":"a","model":null,"#
                            + #""context_stream":{"kind":"str","bytes":5}}"#),
                "do not add up"
            ),
        ])
        func hostileFramesKillTheSandbox(name: String, frameExpression: String, expected: String) async throws {
            var configuration = testConfiguration(timeout: .seconds(20))
            configuration.workerSourceOverride = Self.hostileWorker(sendingOnExec: frameExpression)
            configuration.landlock = false
            let handler = ClosureSubcallHandler { _ in
                try await Task.sleep(for: .seconds(30))
                return .text("late")
            }
            let session = try await ProcessSandbox(configuration: configuration).startSession(handler: handler)
            let probe = try #require(session as? WorkerSession).processesForTesting
            let clock = ContinuousClock()
            let start = clock.now
            do {
                let result = try await session.run("1")
                // A truncated frame followed by the worker exiting may be reported as a dead worker instead.
                #expect(
                    name == "truncated" && result.stateLost, "\(name): expected a protocol violation, got \(result)")
            } catch let error as SandboxError {
                #expect(error.isProtocolViolation, "\(name): \(error)")
                #expect(error.description.contains(expected), "\(name): \(error)")
            }
            #expect(clock.now - start < .seconds(5), "\(name): the host must not wait on a hostile worker")
            #expect(await session.isAlive == false)
            await session.shutdown()
            try await expectGone(probe)
        }

        /// Code in the cell shares the worker's process: it can find the channel, the send lock and the live ids
        /// (the exec request's id on the worker's stack, the sub-call ids in its table) and write well-formed frames
        /// of every type. Each case says what the host may do then: no more than an honest cell could (print, answer
        /// once, call a sub-model through the handler, die), and never a second result, a crash or a hang.
        enum Forgery: String, CaseIterable, Sendable {
            /// A result for the running cell, before the real one: accepted as the cell's output (honest code could
            /// print the same and call FINAL), and the real result that follows is never a second answer.
            case result
            /// A result whose stdout is ten times the output limit: honest output is cut to the limit.
            case oversizedResult
            case ok, variable, ready
            /// The worker's last words: the sandbox is killed, as honest code could kill it.
            case fatal
            /// A sub-call with a fresh id: answered through the handler, counted like an honest one.
            case subcall
            /// A sub-call reusing the id of one in flight: a violation.
            case liveSubcallID

            var frame: String {
                let result = "{'type': 'result', 'id': rid, 'stderr': '', 'error': None, 'duration_ms': 1, "
                switch self {
                case .result: return result + "'stdout': 'forged', 'final': 'forged answer'}"
                // One grapheme cluster of 400,000 combining marks, then plain text: a cut that counted Characters
                // would see a short string.
                case .oversizedResult:
                    return result + "'stdout': 'a' + '\\u0301' * 400000 + 'x' * 200000, 'final': None}"
                case .ok: return "{'type': 'ok', 'id': rid}"
                case .variable:
                    return "{'type': 'var', 'id': rid, 'found': True, 'value': 'v', 'type_name': 'str'}"
                case .ready:
                    return "{'type': 'ready', 'id': rid, 'pid': 1, 'python': '3', 'landlock': 'unsupported'}"
                case .fatal: return "{'type': 'fatal', 'message': 'forged last words'}"
                case .subcall:
                    return "{'type': 'subcall', 'id': 'w999', 'call': 'llm_query', 'prompt': 'forged', 'model': None}"
                case .liveSubcallID:
                    return "{'type': 'subcall', 'id': live, 'call': 'llm_query', 'prompt': 'again', 'model': None}"
                }
            }
        }

        /// The cell: find the live ids, write the forged frame under the worker's own send lock (so it is whole),
        /// then record that it was written.
        static func forgingCell(_ forgery: Forgery) -> String {
            """
            import json, sys, threading, time
            g = llm_query.__globals__
            f = sys._getframe()
            while f is not None and f.f_code.co_name != '_on_exec':
                f = f.f_back
            rid = f.f_locals['rid']
            live = None
            if \(forgery == .liveSubcallID ? "True" : "False"):
                threading.Thread(target=llm_query, args=('slow',), daemon=True).start()
                while not g['_PENDING']:
                    time.sleep(0.01)
                live = next(iter(g['_PENDING']))
            payload = json.dumps(\(forgery.frame)).encode()
            with g['_SEND_LOCK']:
                g['_write_all'](len(payload).to_bytes(4, 'big') + payload)
            written = rid
            time.sleep(0.5)
            print('the real result')
            """
        }

        static func expectWithinTheOutputLimit(_ outcome: Result<CellResult, any Error>, limit: Int) throws {
            switch outcome {
            case .success(let result):
                let scalars = result.stdout.unicodeScalars.count
                #expect(
                    scalars <= limit + 100,
                    "a forged result carried \(scalars) scalars of stdout past the \(limit)-character limit")
            case .failure(let error):
                #expect((error as? SandboxError)?.isProtocolViolation == true, "\(error)")
            }
        }

        func outcomeError(_ outcome: Result<CellResult, any Error>) -> SandboxError? {
            if case .failure(let error) = outcome { return error as? SandboxError }
            return nil
        }

        @Test(arguments: Forgery.allCases)
        func forgedFramesWithTheLiveIdStayWithinWhatHonestCodeMayDo(forgery: Forgery) async throws {
            let calls = Shared([String]())
            let handler = ClosureSubcallHandler { request in
                guard case .llmQuery(let prompt, _) = request else { return .text("unexpected") }
                calls.update { $0.append(prompt) }
                if prompt == "slow" { try await Task.sleep(for: .seconds(5)) }
                return .text("answer to \(prompt)")
            }
            let configuration = testConfiguration(timeout: .seconds(10))
            let started = Date()
            let session = try await ProcessSandbox(configuration: configuration).startSession(handler: handler)
            let probe = try #require(session as? WorkerSession).processesForTesting
            _ = try await session.run("kept = 'state'")
            let clock = ContinuousClock()
            let start = clock.now
            var outcome: Result<CellResult, any Error>
            do {
                outcome = .success(try await session.run(Self.forgingCell(forgery)))
            } catch {
                outcome = .failure(error)
            }
            #expect(clock.now - start < .seconds(5), "\(forgery): the host must not wait on a forging cell")
            switch forgery {
            case .result:
                // Accepted as this cell's output — what an honest `print('forged'); FINAL('forged answer')` gives.
                let result = try outcome.get()
                #expect(result.stdout == "forged")
                #expect(result.finalAnswer == "forged answer")
                // The cell's real result, still on its way, is never taken as another cell's answer.
                do {
                    let next = try await session.run("print('next')")
                    #expect(next.stdout == "next\n" && next.finalAnswer == nil, "a second result: \(next)")
                } catch let error as SandboxError {
                    #expect(error.isProtocolViolation, "\(error)")
                }
            case .oversizedResult:
                // Honest output is cut to the output limit (head + tail); a forged result may not carry more.
                // The host cuts a result's streams to the output limit itself: a forged result carries no more.
                try Self.expectWithinTheOutputLimit(outcome, limit: configuration.outputLimit + 1000)
            case .ok, .variable, .ready, .liveSubcallID:
                let error = try #require(
                    outcomeError(outcome), "\(forgery): expected a protocol violation, got \(outcome)")
                #expect(error.isProtocolViolation, "\(error)")
                #expect(await session.isAlive == false)
                if forgery == .liveSubcallID { #expect(calls.value == ["slow"], "the reused id reached the handler") }
            case .fatal:
                let result = try outcome.get()
                #expect(result.stateLost)
                #expect(result.error?.type == "SandboxDied")
                #expect(await session.isAlive == false)
            case .subcall:
                // Served through the handler exactly once, like `llm_query('forged')`; its reply has no waiter in
                // the worker, which then stops (honest code may end its own worker too).
                #expect(calls.value == ["forged"])
                if case .success(let result) = outcome, !result.stateLost {
                    #expect(result.stdout.contains("the real result"))
                }
            }
            await session.shutdown()
            try await expectNoSandboxLeftBehind(probe, since: started)
        }

        @Test func missingInterpreterGetsAnActionableError() async throws {
            var configuration = testConfiguration()
            configuration.pythonPath = "/nonexistent/python3"
            await #expect {
                try await ProcessSandbox(configuration: configuration).startSession(handler: nil)
            } throws: { error in
                let text = String(describing: error)
                return (error as? SandboxError)?.isSetupError == true && text.contains("apt-get install -y python3")
            }
        }

        @Test func missingBubblewrapGetsAnActionableError() async throws {
            var configuration = testConfiguration()
            configuration.bubblewrapPath = "/nonexistent/bwrap"
            await #expect {
                try await ProcessSandbox(configuration: configuration).startSession(handler: nil)
            } throws: { error in
                String(describing: error).contains("apt-get install -y bubblewrap")
            }
        }

        /// An interpreter in a folder the sandbox uid cannot enter (pyenv's under /root, say) is refused with the
        /// reason. The folder is made here (mode 0700, holding a link to /usr/bin/python3), so the test runs on any
        /// machine where the host is root — the only case where the sandbox runs as another uid.
        @Test(.enabled(if: geteuid() == 0, "the sandbox runs as another uid (65534) only when the host is root"))
        func interpreterUnderRootIsRefusedWithAReason() async throws {
            let folder = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-private-\(UUID())").path
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
            defer { try? FileManager.default.removeItem(atPath: folder) }
            chmod(folder, 0o700)
            try FileManager.default.createSymbolicLink(
                atPath: folder + "/python3", withDestinationPath: "/usr/bin/python3")
            var configuration = testConfiguration()
            configuration.pythonPath = folder + "/python3"
            await #expect {
                try await ProcessSandbox(configuration: configuration).startSession(handler: nil)
            } throws: { error in
                String(describing: error).contains("\(folder) is not searchable by others")
            }
        }
    }
}
