import Foundation
import RLM
import RLMRuntime
import RLMStore
import RLMTesting
import Testing

@testable import RLMService

/// Runs end to end: the real runtime and process sandbox, a ``FakeLLMServer`` over real HTTP as the provider, the
/// records (trajectory, audit line, usage), sessions, and a stop with a run in flight.
@Suite("Service runs", .serialized)
struct ServiceRunTests {
    /// A scripted model: the nth request (from 1) gets `reply(n, request)`.
    static func scripted(
        _ reply: @escaping @Sendable (Int, FakeLLMServer.Request) -> FakeLLMServer.Reply
    ) -> @Sendable (FakeLLMServer.Request) async -> FakeLLMServer.Reply {
        let count = Box(0)
        return { request in
            let n = count.update { count -> Int in
                count += 1
                return count
            }
            return reply(n, request)
        }
    }

    static func code(_ lines: String) -> FakeLLMServer.Reply { .text("```repl\n\(lines)\n```") }

    @Test func readinessARunAndItsRecords() async throws {
        try await withFixture { fixture in
            let (secret, caller) = try await fixture.key("runner", APIKeyLimits(tokensPerDay: 1_000_000))
            let sandbox = Box<SandboxProbe?>(nil)
            let respond = Self.scripted { n, request in
                switch n {
                case 1: return Self.code(printNamespaceCode + "\nprint('WORDS', len(context.split()))")
                default:
                    sandbox.set(SandboxProbe(request.lastUserMessage))
                    let counted = request.lastUserMessage?.contains("WORDS 3") == true
                    return .text(counted ? "FINAL(3)" : "FINAL(wrong)")
                }
            }
            try await FakeLLMServer.withServer(respond: respond) { server in
                let service = fixture.service(baseURL: server.openAIBaseURL)
                #expect(service.phase == .starting)
                let early = await serviceError { try await service.run(RunRequest(query: "too soon"), caller: caller) }
                #expect(early?.status == 503)
                #expect(early?.retryAfter != nil)

                try await service.run {
                    #expect(service.phase == .ready)
                    #expect(service.models == ["fake"])
                    let upload = try service.beginUpload(caller: caller, name: "words")
                    try upload.write(Data("alpha beta gamma".utf8))
                    let context = try await upload.finish()

                    let outcome = try await service.run(
                        RunRequest(query: "How many words?", contextIDs: [context.id]), caller: caller)
                    #expect(outcome.result.answer == "3")
                    #expect(outcome.status == "answered")
                    #expect(outcome.model == "fake")
                    #expect(service.runsInFlight == 0)

                    // The provider got the key named by --api-key-env.
                    let requests = await server.requests
                    #expect(requests.count == 2)
                    #expect(requests.first?.header("authorization") == "Bearer \(fakeProviderKey)")

                    // The trajectory is under the store's trajectories/ and holds neither key.
                    let files = try FileManager.default.contentsOfDirectory(atPath: fixture.trajectoriesDirectory)
                    let trajectory = try #require(files.first { $0.hasPrefix(outcome.trajectoryID) })
                    #expect(outcome.trajectoryID.hasPrefix("run-"))
                    let recorded = try String(
                        contentsOfFile: fixture.trajectoriesDirectory + "/" + trajectory, encoding: .utf8)
                    #expect(recorded.contains("How many words?"))
                    #expect(!recorded.contains(fakeProviderKey))
                    #expect(!recorded.contains(secret))

                    // One audit line for the run: the key's id as principal, never the key.
                    let runs = fixture.auditLines().filter { $0["kind"] == nil }
                    #expect(runs.count == 1)
                    let line = try #require(runs.first)
                    let principal = line["principal"] as? [String: Any]
                    #expect(principal?["kind"] as? String == "api_key")
                    #expect(principal?["id"] as? String == caller.owner)
                    #expect(line["outcome"] as? String == "answered")
                    #expect(line["run"] as? String == outcome.trajectoryID)
                    let audit = try String(contentsOfFile: fixture.auditLogPath, encoding: .utf8)
                    #expect(!audit.contains(secret))
                    #expect(!audit.contains(fakeProviderKey))
                    #expect(mode(fixture.auditLogPath) & 0o077 == 0)

                    // Usage is the key's, in the store.
                    let tokens = outcome.result.usage.tokens.totalTokens
                    #expect(tokens > 0)
                    let used = try await fixture.store.tokensUsed(keyID: caller.owner, day: RLMService.today())
                    #expect(used == tokens)
                }
                #expect(service.phase == .stopping)
                let late = await serviceError { try await service.run(RunRequest(query: "too late"), caller: caller) }
                #expect(late?.status == 503)
            }
            await expectSandboxGone(sandbox.get())
        }
    }

    @Test func aRunsTokenBudgetIsWhatTheKeyHasLeftToday() async throws {
        try await withFixture { fixture in
            let (secret, _) = try await fixture.key("nearly-spent", APIKeyLimits(tokensPerDay: 1000))
            let respond = Self.scripted { _, _ in Self.code("print('working')") }
            try await withReadyService(fixture, respond: respond) { service, server in
                let caller = try await service.authenticate(authorization: "Bearer \(secret)")
                try await fixture.store.addUsage(keyID: caller.owner, day: RLMService.today(), tokens: 995, costUSD: 0)
                let outcome = try await service.run(RunRequest(query: "Work for a long time."), caller: caller)
                #expect(outcome.status == "budget_exhausted")
                #expect(outcome.result.answer == nil)
                guard case .budgetExhausted(let reason) = outcome.result.status else {
                    Issue.record("the run was not stopped by its budget: \(outcome.result.status)")
                    return
                }
                #expect(reason.limit == .tokens)
                // The run's budget was the key's 1000 - 995 = 5 tokens, too few for a first call: none was made.
                #expect(reason.message.contains("has 5 left"), "\(reason.message)")
                #expect(await server.requests.isEmpty)
            }
        }
    }

    @Test
    func aSessionQuestionIsHeldToWhatTheKeyHasLeft() async throws {
        try await withFixture { fixture in
            let (secret, _) = try await fixture.key("nearly-spent", APIKeyLimits(tokensPerDay: 1000))
            let respond = Self.scripted { _, _ in Self.code("print('working')") }
            try await withReadyService(fixture, respond: respond) { service, server in
                let caller = try await service.authenticate(authorization: "Bearer \(secret)")
                let session = try await service.openSession(caller: caller)
                try await fixture.store.addUsage(keyID: caller.owner, day: RLMService.today(), tokens: 995, costUSD: 0)
                // 5 tokens left today: too few for any model call, in a session as in a plain run.
                let outcome = try? await service.run(
                    RunRequest(query: "Work for a long time.", sessionID: session.id), caller: caller)
                let spent = outcome.map { "\($0.status), \($0.result.usage.tokens.totalTokens) tokens" } ?? "-"
                #expect(
                    await server.requests.isEmpty,
                    "a session question ran with the server's budget, not the key's 5 tokens left: \(spent)")
                try await service.closeSession(caller: caller, id: session.id)
            }
        }
    }

    @Test
    func modelCallsFromExecutedCodeAreTheKeys() async throws {
        try await withFixture { fixture in
            let (_, caller) = try await fixture.key("coder")
            try await withReadyService(fixture, respond: { _ in .text("hello from the model") }) { service, server in
                let (id, cell) = try await service.execute(
                    caller: caller, sessionID: nil, code: "print(llm_query('Say hello.'))")
                #expect(
                    cell.stdout.contains("hello from the model"), "\(cell.stdout) \(String(describing: cell.error))")
                #expect(await server.requests.count == 1)
                let used = try await fixture.store.tokensUsed(keyID: caller.owner, day: RLMService.today())
                #expect(used > 0, "the sub-call's tokens were not counted as the key's usage")
                try await service.closeSession(caller: caller, id: id)
            }
        }
    }

    @Test
    func aKeyWithNoTokensLeftGetsNoModelCallThroughExecutedCode() async throws {
        try await withFixture { fixture in
            let (secret, _) = try await fixture.key("spent", APIKeyLimits(tokensPerDay: 100))
            try await withReadyService(fixture, respond: { _ in .text("hello from the model") }) { service, server in
                let caller = try await service.authenticate(authorization: "Bearer \(secret)")
                try await fixture.store.addUsage(keyID: caller.owner, day: RLMService.today(), tokens: 150, costUSD: 0)
                // Refused (429) or a cell whose sub-call is refused: either way the model is not asked.
                let executed = try? await service.execute(
                    caller: caller, sessionID: nil, code: "print(llm_query('Say hello.'))")
                #expect(
                    await server.requests.isEmpty,
                    "a key past its tokens per day made a model call: \(executed?.1.stdout ?? "-")")
                if let id = executed?.0 { try await service.closeSession(caller: caller, id: id) }
            }
        }
    }

    @Test func idleSessionsAreCappedServerWideAndNeverTakeTheRunsSandboxSlots() async throws {
        try await withFixture { fixture in
            let (_, first) = try await fixture.key("first")
            let (_, second) = try await fixture.key("second")
            try await withReadyService(fixture, configure: { $0.maxSessionsTotal = 1 }) { service, _ in
                _ = try await service.openSession(caller: first)
                do {
                    _ = try await service.openSession(caller: second)
                    Issue.record("a session past the server-wide cap was opened")
                } catch let error as ServiceError {
                    #expect(error.status == 503 && error.retryAfter != nil, "\(error)")
                }
                // The sandboxes the server may keep: every run with its children, plus every session.
                let configuration = service.configuration
                #expect(
                    configuration.maxLiveSandboxes
                        == configuration.maxConcurrentRuns * configuration.runtime.maxLiveSandboxes + 1)
                let answered = try await service.run(RunRequest(query: "still answered?"), caller: second)
                #expect(answered.result.answer == "ok")
            }
        }
    }

    @Test func aSessionKeepsItsVariablesAcrossQuestions() async throws {
        try await withFixture { fixture in
            let (_, caller) = try await fixture.key("asker")
            let (_, stranger) = try await fixture.key("stranger")
            let sandbox = Box<SandboxProbe?>(nil)
            let respond = Self.scripted { n, request in
                switch n {
                case 1: return Self.code("secret = 'kiwi-' + str(len(context))\nprint('SET', secret)")
                case 2: return .text("FINAL(set)")
                case 3: return Self.code("print('GOT', secret)\n" + printNamespaceCode)
                default:
                    sandbox.set(SandboxProbe(request.lastUserMessage))
                    let kept = request.lastUserMessage?.contains("GOT kiwi-16") == true
                    return .text(kept ? "FINAL(kiwi-16)" : "FINAL(lost)")
                }
            }
            try await withReadyService(fixture, respond: respond) { service, _ in
                let upload = try service.beginUpload(caller: caller, name: nil)
                try upload.write(Data("alpha beta gamma".utf8))
                let context = try await upload.finish()
                let session = try await service.openSession(caller: caller, contextIDs: [context.id])
                #expect(session.id.hasPrefix("ses_"))
                #expect(service.sessions(caller: caller).map(\.id) == [session.id])
                #expect(service.sessions(caller: stranger).isEmpty)

                let first = try await service.run(
                    RunRequest(query: "Remember it.", sessionID: session.id), caller: caller)
                #expect(first.result.answer == "set")
                #expect(first.sessionID == session.id)
                let second = try await service.run(
                    RunRequest(query: "What did you remember?", sessionID: session.id), caller: caller)
                #expect(second.result.answer == "kiwi-16")
                #expect(service.sessions(caller: caller).first?.turns == 2)
                #expect(fixture.auditLines().filter { $0["kind"] == nil }.count == 2)

                // Not the stranger's, and contexts are fixed when it opens.
                let stolen = await serviceError {
                    try await service.run(RunRequest(query: "and?", sessionID: session.id), caller: stranger)
                }
                #expect(stolen?.status == 404)
                #expect(stolen?.code == "session_not_found")
                let mixed = await serviceError {
                    try await service.run(
                        RunRequest(query: "and?", contextIDs: [context.id], sessionID: session.id), caller: caller)
                }
                #expect(mixed?.status == 400)

                try await service.closeSession(caller: caller, id: session.id)
                await expectSandboxGone(sandbox.get())
                let closed = await serviceError {
                    try await service.run(RunRequest(query: "and?", sessionID: session.id), caller: caller)
                }
                #expect(closed?.status == 404)
            }
        }
    }

    @Test func executeKeepsStateAndClosingOrStoppingKillsTheSandbox() async throws {
        try await withFixture { fixture in
            let (_, caller) = try await fixture.key("coder")
            let (_, stranger) = try await fixture.key("stranger")
            let survivor = Box<SandboxProbe?>(nil)
            try await withReadyService(fixture, configure: { $0.maxSessionsPerCaller = 2 }) { service, server in
                let (id, set) = try await service.execute(caller: caller, sessionID: nil, code: "x = 41")
                #expect(set.error == nil)
                let (same, shown) = try await service.execute(caller: caller, sessionID: id, code: "print(x + 1)")
                #expect(same == id)
                #expect(shown.stdout.contains("42"))
                let (_, probe) = try await service.execute(caller: caller, sessionID: id, code: printNamespaceCode)
                let sandbox = SandboxProbe(probe.stdout)
                #expect(sandbox?.leftovers.isEmpty == false)

                #expect(
                    await serviceError { try await service.execute(caller: stranger, sessionID: id, code: "x") }?.status
                        == 404)
                #expect(await serviceError { try await service.closeSession(caller: stranger, id: id) }?.status == 404)
                #expect(sandbox?.leftovers.isEmpty == false)  // the stranger's close did nothing

                // The per-caller cap.
                let (other, _) = try await service.execute(caller: caller, sessionID: nil, code: printNamespaceCode)
                let capped = await serviceError { try await service.openSession(caller: caller) }
                #expect(capped?.status == 429)
                #expect(capped?.code == "session_limit_exceeded")

                try await service.closeSession(caller: caller, id: id)
                await expectSandboxGone(sandbox)
                #expect(
                    await serviceError { try await service.execute(caller: caller, sessionID: id, code: "x") }?.status
                        == 404)
                #expect(await serviceError { try await service.closeSession(caller: caller, id: id) }?.status == 404)

                // The other session is left open: stopping the service must close it.
                let (_, last) = try await service.execute(caller: caller, sessionID: other, code: printNamespaceCode)
                survivor.set(SandboxProbe(last.stdout))
                #expect(service.openSessions == 1)
                #expect(await server.requests.isEmpty)  // cells need no model
            }
            await expectSandboxGone(survivor.get())
        }
    }

    @Test func stoppingWithARunInFlightCancelsItAfterTheGrace() async throws {
        try await withFixture { fixture in
            let (_, caller) = try await fixture.key("slow")
            let sandbox = Box<SandboxProbe?>(nil)
            let sleeping = Box(false)
            let run = Box<Task<RunOutcome, any Error>?>(nil)
            let bodyEnded = Box<ContinuousClock.Instant?>(nil)
            let respond = Self.scripted { n, request in
                switch n {
                case 1: return Self.code(printNamespaceCode)
                case 2:
                    sandbox.set(SandboxProbe(request.lastUserMessage))
                    sleeping.set(true)
                    return Self.code("import time\ntime.sleep(60)")
                default: return .text("FINAL(too late)")
                }
            }
            try await withReadyService(fixture, configure: { $0.shutdownGrace = .milliseconds(500) }, respond: respond)
            { service, _ in
                run.set(Task { try await service.run(RunRequest(query: "Take your time."), caller: caller) })
                #expect(await eventually(within: .seconds(15)) { sleeping.get() })
                try await Task.sleep(for: .milliseconds(300))  // the sleeping cell is running
                #expect(service.runsInFlight == 1)
                bodyEnded.set(.now)
            }
            let stopping = ContinuousClock.now - (bodyEnded.get() ?? .now)
            #expect(stopping >= .milliseconds(450), "the run was not given its grace")
            #expect(stopping < .seconds(5), "the stop took \(stopping)")

            let result = try await withTimeout(.seconds(5)) { await run.get()!.result }
            var thrown: (any Error)?
            if case .failure(let error) = result { thrown = error }
            #expect(thrown != nil, "the run finished instead of being cancelled")
            #expect((thrown as? ServiceError)?.code == "interrupted")
            await expectSandboxGone(sandbox.get())

            let line = fixture.auditLines().last { $0["kind"] == nil }
            #expect(line?["outcome"] as? String == "interrupted")
            #expect((line?["principal"] as? [String: Any])?["id"] as? String == caller.owner)
        }
    }

    @Test func aRunThatEndsWithinTheGraceFinishes() async throws {
        try await withFixture { fixture in
            let (_, caller) = try await fixture.key("quick")
            let started = Box(false)
            let run = Box<Task<RunOutcome, any Error>?>(nil)
            let respond = Self.scripted { n, _ in
                if n == 1 {
                    started.set(true)
                    return Self.code("import time\ntime.sleep(0.5)")
                }
                return .text("FINAL(done)")
            }
            try await withReadyService(fixture, configure: { $0.shutdownGrace = .seconds(10) }, respond: respond) {
                service, _ in
                run.set(Task { try await service.run(RunRequest(query: "Quick one."), caller: caller) })
                #expect(await eventually(within: .seconds(15)) { started.get() })
            }
            let outcome = try await withTimeout(.seconds(5)) { try await run.get()!.value }
            #expect(outcome.result.answer == "done")
        }
    }
}
