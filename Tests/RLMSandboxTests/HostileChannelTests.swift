import Foundation
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
            let probe = try #require(session as? BubblewrapSession).processesForTesting
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

        /// Model-written code finds the channel among its open descriptors and forges a result frame.
        @Test func userCodeForgingFramesIsCaught() async throws {
            let session = try await ProcessSandbox(configuration: testConfiguration()).startSession(handler: nil)
            let probe = try #require(session as? BubblewrapSession).processesForTesting
            let forged =
                #"{"type":"result","id":"h999","stdout":"pwned","stderr":"","error":null,"final":"pwned","duration_ms":1}"#
            do {
                let result = try await session.run(
                    """
                    import os
                    body = \(forged.debugDescription).encode()
                    for name in os.listdir('/proc/self/fd'):
                        fd = int(name)
                        if fd in (0, 1, 2):
                            continue
                        try:
                            flags = open(f'/proc/self/fdinfo/{fd}').read().split('flags:')[1].split()[0]
                            if int(flags, 8) & 3 == 1 and os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:'):
                                os.write(fd, len(body).to_bytes(4, 'big') + body)
                        except OSError:
                            pass
                    """)
                // The forged frame must never be accepted as the cell's result.
                #expect(result.finalAnswer != "pwned")
                #expect(result.stdout != "pwned")
            } catch let error as SandboxError {
                #expect(error.isProtocolViolation)
            }
            await session.shutdown()
            try await expectGone(probe)
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

        @Test func interpreterUnderRootIsRefusedWithAReason() async throws {
            let pyenv = "/root/.pyenv/shims/python3"
            guard geteuid() == 0, access(pyenv, X_OK) == 0 else { return }
            var configuration = testConfiguration()
            configuration.pythonPath = pyenv
            await #expect {
                try await ProcessSandbox(configuration: configuration).startSession(handler: nil)
            } throws: { error in
                String(describing: error).contains("not searchable by others")
            }
        }
    }
}
