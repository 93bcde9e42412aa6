import Foundation
import Synchronization

/// One RLM conversation at one depth: its sandbox session, its message history, and the iteration loop.
actor RLMLoop {
    enum Outcome: Sendable {
        case answered(String)
        /// Iterations ran out and the last request brought no answer.
        case noAnswer
    }

    private let configuration: RLMConfiguration
    private let context: ContextSource?
    /// What the sandbox measured of the context the first time it built it (the prompts describe this).
    private var summary: ContextSummary?
    private let depth: Int
    private var events: EventEmitter
    private var session: (any SandboxSession)?
    private var messages: [ChatMessage] = []
    /// How many of `messages` the previous model request covered (the next request's delta starts there).
    private var sent = 0
    /// Root iterations used by the latest `answer` call.
    private(set) var iterationsUsed = 0
    /// The iteration running now, read by the router so a sub-call carries its cell's iteration.
    private let currentIteration = IterationCounter()
    /// The sandbox session keeps the handler it started with; this one forwards to the router of the question
    /// running now (a follow-up has its own tracker and sub-call numbering).
    private let handler = CurrentRouter()
    /// A probe of the engine's own killed the sandbox (memory): the model's variables are gone, and its next
    /// message says so.
    private var probeLostState = false
    /// Tokens and cost this loop and everything it started spent.
    let meter = UsageMeter()

    init(configuration: RLMConfiguration, context: ContextSource?, depth: Int, events: EventEmitter) {
        self.configuration = configuration
        self.context = context
        self.depth = depth
        self.events = events
    }

    /// Runs the loop for one question. A second call continues the same conversation and REPL (a follow-up).
    func answer(
        query: String, tracker: BudgetTracker, calls: CallCounter, onIteration: (@Sendable (Int) -> Void)? = nil
    ) async throws -> Outcome {
        events = events.with(tracker: tracker, calls: calls)
        let router = SubcallRouter(
            configuration: configuration, tracker: tracker, depth: depth, events: events,
            iteration: currentIteration, meter: meter)
        handler.use(router)
        try await ensureSession(router: router)
        var formatText: String?
        if messages.isEmpty {
            let format =
                configuration.describeContextFormat && Prompts.hasData(summary)
                ? await describeFormat(terms: QuestionTerms.terms(of: query)) : nil
            formatText = format
            messages = [
                .system(
                    Prompts.system(
                        context: summary,
                        subWindowTokens: configuration.subcallModel.contextWindow,
                        outputChars: configuration.outputCharsPerCell,
                        canRecurse: depth + 1 <= configuration.budget.maxDepth)),
                .user(Prompts.firstUser(query: query, context: summary, format: format)),
            ]
        } else {
            messages.append(.user("A new question about the same `context` (your variables are still there): \(query)"))
        }
        let maxIterations = configuration.budget.maxIterations
        var consecutiveErrors = 0
        var iteration = 0
        var previousCode: [String] = []
        var repeats = 0
        var resampling = false
        var previousFailed = false
        // What this question's cells printed, to tell an answer the output supports from a guess.
        var printed: [String] = [query] + (formatText.map { [$0] } ?? [])
        var refusedUnsupported = false
        var lastFoundNothing = false
        var linesShown = 0
        let terms = configuration.checkQuestionTerms ? QuestionTerms.terms(of: query) : []
        var codeSoFar = ""
        var termNotes = 0
        var warnedUntested = false
        var nearMissesSeen = [(term: String, seen: String)]()
        var copiedWarned = false
        var previousStepCode = ""
        var previousStepOutput = ""
        var answerFromNearMiss = false
        while iteration < maxIterations {
            iteration += 1
            iterationsUsed = iteration
            currentIteration.set(iteration)
            onIteration?(iteration)
            try await tracker.check()
            let text = try await callModel(
                iteration: iteration, tracker: tracker,
                temperature: resampling ? configuration.resampleTemperature : nil)
            let wasResample = resampling
            resampling = false
            messages.append(.assistant(text))
            let reply = ReplyParser.parse(text)
            // A stuck reply (the code just run, or neither code nor an answer) is, at a low temperature, what the
            // same prompt will bring again: ask the same again once, hotter, without keeping the stuck reply.
            if let hot = configuration.resampleTemperature, !wasResample, hot != configuration.temperature,
                iteration < maxIterations,
                (reply.finalAnswer == nil && reply.codeBlocks.isEmpty)
                    || (!reply.codeBlocks.isEmpty && reply.codeBlocks == previousCode)
            {
                messages.removeLast()
                resampling = true
                await events.emit(
                    .note, depth: depth, iteration: iteration,
                    data: ["note": .string("stuck reply dropped; asking again at temperature \(hot)")])
                continue
            }

            if reply.codeBlocks.isEmpty {
                if let final = reply.finalAnswer {
                    let resolved = try await resolve(final)
                    // A value the model wrote (not one read from a variable) that no output shows is a guess.
                    if configuration.refuseUnsupportedAnswers, !refusedUnsupported, iteration < maxIterations,
                        Prompts.hasData(summary), case .value(let value) = final, resolved == value,
                        !AnswerSupport.isSupported(value, by: printed)
                            || (lastFoundNothing && AnswerSupport.number(in: value)?.value == 0)
                    {
                        refusedUnsupported = true
                        await events.emit(
                            .note, depth: depth, iteration: iteration,
                            data: ["note": "answer not shown by any output: asked for code that prints it"])
                        messages.append(.user(Prompts.unsupported(value)))
                        continue
                    }
                    switch resolved {
                    case .some(let answer):
                        await emitFinal(answer, iteration: iteration)
                        return .answered(answer)
                    case .none:
                        if case .variable(let name) = final { messages.append(.user(Prompts.missingVariable(name))) }
                    }
                } else {
                    messages.append(.user(Prompts.noCode))
                }
                continue
            }

            // A model that resubmits the code it just ran is stuck (small models do this at low temperature): do not
            // run it again; ask for the answer, and after a second time go straight to the last request.
            if reply.codeBlocks == previousCode {
                repeats += 1
                await events.emit(.note, depth: depth, iteration: iteration, data: ["note": "repeated code, not run"])
                if repeats >= 2 { break }
                messages.append(.user(previousFailed ? Prompts.repeatedFailure : Prompts.repeated))
                continue
            }
            repeats = 0
            previousCode = reply.codeBlocks
            // Code that names a near miss seen earlier is answering about another name.
            let stepCode = reply.codeBlocks.joined(separator: "\n")
            let usedMisses = nearMissesSeen.filter { QuestionTerms.mentions(stepCode, $0.seen) }
            var outputs = [String]()
            var results = [CellResult]()
            var anyError = false
            for (index, code) in reply.codeBlocks.enumerated() {
                let result = try await runCell(code, block: index + 1, router: router, iteration: iteration)
                results.append(result)
                printed.append(result.stdout + "\n" + result.stderr)
                outputs.append(
                    Prompts.cellOutput(
                        index: index, of: reply.codeBlocks.count, result: result,
                        limit: configuration.outputCharsPerCell))
                if let final = result.finalAnswer {
                    if configuration.refuseUnsupportedAnswers, answerFromNearMiss || !usedMisses.isEmpty,
                        !refusedUnsupported,
                        iteration < maxIterations
                    {
                        // Computed from a line about another name: say so once instead of ending the run.
                        refusedUnsupported = true
                        outputs.append(Prompts.answerFromNearMiss(final))
                        await events.emit(
                            .note, depth: depth, iteration: iteration,
                            data: ["note": "answer computed from a near-miss name: asked again"])
                        break
                    }
                    await emitFinal(final, iteration: iteration)
                    return .answered(final)
                }
                if result.error?.type == "NameError", let word = ReplyParser.bareFinalArgument(in: code) {
                    await emitFinal(word, bare: true, iteration: iteration)
                    return .answered(word)
                }
                if result.error != nil { anyError = true }
            }
            lastFoundNothing = ContextProbe.foundNothing(results, code: reply.codeBlocks)
            if lastFoundNothing, configuration.showLinesWhenNothingFound, linesShown < 3, Prompts.hasData(summary),
                let near = await nearLines(searchedBy: reply.codeBlocks)
            {
                linesShown += 1
                printed.append(near)
                outputs.append(
                    Prompts.foundNothing(
                        near: near,
                        wording: ContextProbe.questionWording(
                            searched: ContextProbe.searchLiterals(in: stepCode),
                            near: near, question: query)))
            }
            if lastFoundNothing, configuration.showLinesWhenNothingFound,
                let mismatch = ContextProbe.caseMismatch(in: stepCode)
            {
                outputs.append(Prompts.caseMismatch(mismatch))
            }
            previousFailed = anyError
            codeSoFar += stepCode + "\n"
            if !usedMisses.isEmpty {
                outputs.append(Prompts.usesNearMiss(usedMisses))
                nearMissesSeen.removeAll { miss in usedMisses.contains { $0.seen == miss.seen } }
                answerFromNearMiss = true
            } else if !anyError {
                answerFromNearMiss = false
            }
            // A condition copied from the previous output that the question never names: a small model narrows a
            // right answer away one copied message at a time.
            if configuration.checkQuestionTerms, !copiedWarned, !anyError {
                let copied = QuestionTerms.copiedConditions(
                    in: stepCode, previousCode: previousStepCode, previousOutput: previousStepOutput, question: query)
                if !copied.isEmpty {
                    copiedWarned = true
                    outputs.append(Prompts.copiedConditions(copied))
                }
            }
            previousStepCode = stepCode
            previousStepOutput = results.map(\.stdout).joined(separator: "\n")
            if !terms.isEmpty, !anyError, !lastFoundNothing {
                let missing = QuestionTerms.untested(terms, in: codeSoFar)
                let misses = QuestionTerms.nearMisses(
                    of: terms, in: results.map { $0.stdout }.joined(separator: "\n"))
                for miss in misses {
                    for token in miss.seen where !nearMissesSeen.contains(where: { $0.seen == token }) {
                        nearMissesSeen.append((miss.term, token))
                    }
                }
                if termNotes < 2, !missing.isEmpty || !misses.isEmpty {
                    termNotes += 1
                    warnedUntested = warnedUntested || !missing.isEmpty
                    if !missing.isEmpty { outputs.append(Prompts.untested(missing)) }
                    if !misses.isEmpty { outputs.append(Prompts.nearMisses(misses)) }
                } else if warnedUntested, misses.isEmpty,
                    QuestionTerms.untested(terms, in: stepCode).isEmpty
                {
                    // The step after the warning tests everything: say so, or a small model keeps adding conditions.
                    warnedUntested = false
                    outputs.append(Prompts.allTested(terms))
                }
            }
            consecutiveErrors = anyError ? consecutiveErrors + 1 : 0
            if let max = configuration.budget.maxConsecutiveErrors, consecutiveErrors >= max {
                await tracker.trip(.consecutiveErrors, "the code failed \(consecutiveErrors) times in a row")
                try await tracker.check()
            }
            var unconfirmed = false
            if let final = reply.finalAnswer {
                if configuration.confirmAnswersWrittenWithCode {
                    unconfirmed = true
                } else if let answer = try await resolve(final) {
                    await emitFinal(answer, iteration: iteration)
                    return .answered(answer)
                }
            }
            if probeLostState {
                probeLostState = false
                outputs.append("(the REPL was restarted: variables are gone, `context` is reloaded)")
            }
            messages.append(
                .user(
                    Prompts.afterCode(
                        outputs: outputs, iteration: iteration, maxIterations: maxIterations,
                        unconfirmedAnswer: unconfirmed)))
        }

        // Out of iterations: one last request, as a user message (a conversation ending in two assistant messages is
        // refused by some servers and misread by others).
        try await tracker.check()
        // Joined to the step's own user message when there is one: some chat templates refuse two in a row.
        if let last = messages.last, last.role == .user, messages.count > 2, sent < messages.count {
            messages[messages.count - 1].content += "\n\n" + Prompts.lastChance
        } else {
            messages.append(.user(Prompts.lastChance))
        }
        let text = try await callModel(iteration: iteration, tracker: tracker)
        messages.append(.assistant(text))
        let parsed = ReplyParser.parse(text)
        if let final = parsed.finalAnswer, let answer = try await resolve(final) {
            await emitFinal(answer, iteration: iteration)
            return .answered(answer)
        }
        var bare = text.trimmingCharacters(in: .whitespacesAndNewlines)
        // "Final(11)" or "final(11)": the right form in the wrong case, from a small model.
        if bare.lowercased().hasPrefix("final("), bare.hasSuffix(")") {
            bare = ReplyParser.unquote(
                String(bare.dropFirst("final(".count).dropLast()).trimmingCharacters(in: .whitespaces))
        }
        if configuration.acceptBareLastAnswer, !bare.isEmpty, !bare.contains("```"), bare.count <= 200,
            !bare.contains("\n")
        {
            await emitFinal(bare, bare: true, iteration: iteration)
            return .answered(bare)
        }
        return .noAnswer
    }

    func close() async {
        await session?.shutdown()
        session = nil
    }

    /// Runs one cell of the caller's own code (not the model's) in this loop's REPL, with the context loaded: the
    /// variables the questions use and leave. Sub-calls from the code count against `tracker`.
    func execute(_ code: String, tracker: BudgetTracker, calls: CallCounter) async throws -> CellResult {
        events = events.with(tracker: tracker, calls: calls)
        let router = SubcallRouter(
            configuration: configuration, tracker: tracker, depth: depth, events: events,
            iteration: currentIteration, meter: meter)
        handler.use(router)
        try await ensureSession(router: router)
        guard let session else { throw SandboxError.terminated("no sandbox session") }
        return try await session.run(code, timeout: configuration.cellTimeout)
    }

    private func emitFinal(_ answer: String, bare: Bool = false, iteration: Int) async {
        await events.emit(
            .finalAnswer, depth: depth, iteration: iteration, data: ["answer": .string(answer), "bare": .bool(bare)])
    }

    // MARK: - Steps

    private func ensureSession(router: SubcallRouter) async throws {
        if let session, await session.isAlive { return }
        await session?.shutdown()
        handler.use(router)
        let fresh = try await configuration.sandbox.startSession(handler: handler)
        do {
            // No context: `context` is still bound (to an empty str), as the prompt says.
            let measured = try await fresh.loadContext(
                context ?? ContextSource(.text("")), name: "context", sample: configuration.contextSampleChars)
            if context != nil, summary == nil {
                summary = measured
                await events.emit(
                    .contextLoaded, depth: depth, iteration: iterationsUsed, data: Self.describe(measured))
            } else if context != nil {
                // A new sandbox after the last one was killed (a timeout, memory, a cancelled question).
                await events.emit(
                    .note, depth: depth, iteration: iterationsUsed,
                    data: ["note": "a fresh sandbox was started and the context loaded again; variables are gone"])
            }
        } catch {
            await fresh.shutdown()
            throw error
        }
        session = fresh
    }

    /// The trajectory's record of a loaded context (`context_loaded`).
    static func describe(_ summary: ContextSummary) -> [String: JSONValue] {
        func notices(_ list: [ContextSummary.Notice]) -> JSONValue {
            .array(list.prefix(200).map { ["label": .string($0.label), "reason": .string($0.reason)] })
        }
        return [
            "type": .string(summary.type), "shape": .string(summary.shape.rawValue), "bytes": .int(summary.bytes),
            "characters": .int(summary.characters), "lines": .int(summary.lines), "items": .int(summary.items),
            "empty": .bool(summary.isEmpty), "skipped": notices(summary.skipped),
            "skipped_count": .int(summary.skipped.count), "decoded_as": notices(summary.decodedAs),
        ]
    }

    private func runCell(_ code: String, block: Int, router: SubcallRouter, iteration: Int) async throws
        -> CellResult
    {
        try await ensureSession(router: router)
        guard let session else { throw SandboxError.terminated("no sandbox session") }
        await events.emit(
            .codeStarted, depth: depth, iteration: iteration, data: ["block": .int(block), "code": .string(code)])
        let result = try await session.run(code, timeout: configuration.cellTimeout)
        let error: JSONValue =
            result.error.map { ["type": .string($0.type), "message": .string($0.message)] } ?? .null
        await events.emit(
            .codeResult, depth: depth, iteration: iteration,
            data: [
                "block": .int(block), "code": .string(code), "stdout": .string(result.stdout),
                "stderr": .string(result.stderr), "error": error, "timed_out": .bool(result.timedOut),
                "state_lost": .bool(result.stateLost),
                "duration_ms": JSONValue((result.durationMilliseconds * 10).rounded() / 10),
            ])
        if result.stateLost {
            // The next cell gets a fresh REPL with the context loaded again.
            try await ensureSession(router: router)
        }
        return result
    }

    /// The context's format, from ``ContextProbe/describeCell(limit:)``; `nil` when the probe printed nothing or
    /// failed (the model still gets the raw sample).
    private func describeFormat(terms: [String]) async -> String? {
        guard let text = await probe(ContextProbe.describeCell(limit: 2400, terms: terms)) else { return nil }
        await events.emit(.note, depth: depth, iteration: 0, data: ["note": "context format described"])
        return text
    }

    /// For a step whose code found nothing: where the strings it searched for really occur.
    private func nearLines(searchedBy code: [String]) async -> String? {
        let words = ContextProbe.searchLiterals(in: code.joined(separator: "\n"))
        guard !words.isEmpty else { return nil }
        return await probe(ContextProbe.nearCell(searching: words, limit: 1500))
    }

    /// Runs the engine's own cell in this loop's REPL; its trimmed stdout, or `nil` when it printed nothing or failed.
    /// A probe that kills the sandbox (memory) costs a fresh one, as any cell does.
    private func probe(_ code: String) async -> String? {
        guard let live = session else { return nil }
        let timeout = min(configuration.cellTimeout, .seconds(30))
        let result: CellResult
        do {
            result = try await live.run(code, timeout: timeout)
        } catch {
            await events.emit(.note, depth: depth, iteration: iterationsUsed, data: ["note": "probe failed: \(error)"])
            return nil
        }
        if result.stateLost {
            await live.shutdown()
            session = nil
            probeLostState = true
        }
        if let error = result.error {
            await events.emit(
                .note, depth: depth, iteration: iterationsUsed,
                data: ["note": .string("probe failed: \(error.type): \(error.message)".prefix(300).description)])
            return nil
        }
        let text = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? nil : text
    }

    private func resolve(_ final: FinalAnswer) async throws -> String? {
        switch final {
        case .value(let value):
            // `FINAL(total_amount)` naming a REPL variable: a small model meant FINAL_VAR.
            if configuration.refuseUnsupportedAnswers, value != "context",
                value.wholeMatch(of: #/[A-Za-z_][A-Za-z0-9_]*/#) != nil,
                let session, let variable = try? await session.variable(named: value), variable.value.count <= 1000
            {
                return variable.value
            }
            return value
        case .variable(let name):
            guard let session else { return nil }
            return try await session.variable(named: name)?.value
        }
    }

    /// - Parameter temperature: this call's temperature instead of the configured one.
    private func callModel(iteration: Int, tracker: BudgetTracker, temperature: Double? = nil) async throws -> String {
        let window = configuration.historyWindowTokens ?? configuration.rootModel.contextWindow ?? 32_768
        let reserve = configuration.maxOutputTokens ?? min(2048, window / 4)
        var attempt = 0
        while true {
            let fitted = Self.fit(messages, windowTokens: window >> attempt, reserveTokens: reserve)
            let delta = messages.dropFirst(min(sent, messages.count)).map {
                ["role": .string($0.role.rawValue), "content": .string($0.content)] as JSONValue
            }
            sent = messages.count
            await events.emit(
                .modelRequest, depth: depth, iteration: iteration,
                data: [
                    "model": .string(configuration.rootModel.name), "messages": .int(fitted.count),
                    "delta": .array(delta),
                    "estimated_prompt_tokens": .int(fitted.reduce(0) { $0 + estimateTokens($1.content) + 4 }),
                ])
            // The call's tokens and cost are reserved before it is sent: one that would cross the budget ends the run
            // instead of overshooting it.
            let promptTokens = fitted.reduce(0) { $0 + estimateTokens($1.content) + 4 }
            let reservation: BudgetTracker.Reservation
            let maxOutput: Int?
            switch await SubcallRouter.reserve(
                promptTokens: promptTokens, model: configuration.rootModel, configuration: configuration,
                tracker: tracker)
            {
            case .refused(let reason):
                if depth > 0 { throw ChildCallRefused(reason: reason) }
                await tracker.trip(reason.limit, "the next model call was not sent: \(reason.message)")
                throw await tracker.exhausted ?? reason
            case .reserved(let granted, let cap):
                reservation = granted
                maxOutput = cap
            }
            do {
                let completion: Completion
                let started = ContinuousClock.now
                do {
                    completion = try await configuration.rootModel.complete(
                        CompletionRequest(
                            messages: fitted, maxOutputTokens: maxOutput,
                            temperature: temperature ?? configuration.temperature))
                } catch {
                    await tracker.release(reservation)
                    throw error
                }
                let latency = milliseconds(since: started)
                // Priced once: what the provider reported, else the table; `nil` (unknown) settles as 0.
                let cost = completion.reportedCostUSD ?? configuration.cost(completion.model, completion.usage)
                await tracker.settle(reservation, usage: completion.usage, cost: cost ?? 0, isSubcall: false)
                meter.add(
                    inputTokens: completion.usage.inputTokens, outputTokens: completion.usage.outputTokens,
                    costUSD: cost)
                await events.emit(
                    .modelResponse, depth: depth, iteration: iteration,
                    data: [
                        "model": .string(completion.model), "text": .string(completion.text),
                        "input_tokens": .int(completion.usage.inputTokens),
                        "output_tokens": .int(completion.usage.outputTokens), "cost_usd": JSONValue(cost),
                        "latency_ms": JSONValue(latency),
                    ])
                return completion.text
            } catch let error as LLMError where error.kind == .contextOverflow && attempt < 2 {
                // Our estimate was too generous for this tokenizer: trim harder and try again.
                attempt += 1
                await events.emit(
                    .note, depth: depth, iteration: iteration, data: ["note": "history trimmed: \(error.message)"])
            }
        }
    }

    /// Keeps the system message, the first question, and as many recent turns as fit; drops whole
    /// assistant+user pairs from the middle so roles keep alternating.
    static func fit(_ messages: [ChatMessage], windowTokens: Int, reserveTokens: Int) -> [ChatMessage] {
        let budget = max(256, windowTokens - reserveTokens)
        func size(_ list: [ChatMessage]) -> Int { list.reduce(0) { $0 + estimateTokens($1.content) + 4 } }
        guard size(messages) > budget, messages.count > 3 else { return messages }
        let head = Array(messages.prefix(2))
        var tail = Array(messages.dropFirst(2))
        var dropped = 0
        while tail.count > 1 && size(head + tail) > budget {
            tail.removeFirst(min(2, tail.count - 1))
            dropped += 2
        }
        var result = head
        if dropped > 0 {
            result[1].content += "\n\n(\(dropped) earlier messages were left out to fit the model's window.)"
        }
        result += tail
        // Still too big: cut the largest message's middle.
        while size(result) > budget,
            let index = result.indices.dropFirst().max(by: {
                result[$0].content.unicodeScalars.count < result[$1].content.unicodeScalars.count
            }), result[index].content.unicodeScalars.count > 400
        {
            let over = (size(result) - budget) * 3 + 200
            result[index].content = Prompts.headTail(
                result[index].content, limit: max(200, result[index].content.unicodeScalars.count - over))
        }
        return result
    }
}

/// The handler a loop's sandbox session keeps for its whole life: it forwards each sub-call to the router of the
/// question running now.
final class CurrentRouter: SubcallHandler, Sendable {
    private let router = Mutex<SubcallRouter?>(nil)

    func use(_ current: SubcallRouter) { router.withLock { $0 = current } }

    func handle(_ request: SubcallRequest) async throws -> SubcallResponse {
        guard let current = router.withLock({ $0 }) else { throw CancellationError() }
        return try await current.handle(request)
    }
}
