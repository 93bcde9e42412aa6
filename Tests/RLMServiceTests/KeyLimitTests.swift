import Foundation
import RLM
import RLMStore
import RLMTesting
import Testing

@testable import RLMService

/// Per-key limits: requests per minute and runs in flight (in memory), tokens per day and the cost budget (in the
/// store), and a run's budget narrowed to what its key has left.
@Suite("Per-key limits")
struct KeyLimitTests {
    @Test func theRequestAfterTheLimitIsRefusedWithRetryAfter() async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let (_, limited) = try await fixture.key("limited", APIKeyLimits(requestsPerMinute: 3))
            let (_, other) = try await fixture.key("other", APIKeyLimits(requestsPerMinute: 3))
            for _ in 0..<3 { try service.admitRequest(limited) }
            let error = await serviceError { try service.admitRequest(limited) }
            #expect(error?.status == 429)
            #expect(error?.type == "rate_limit_error")
            #expect(error?.code == "rate_limit_exceeded")
            let retry = try #require(error?.retryAfter)
            #expect((1...60).contains(retry))
            #expect(error?.message.contains("3 requests per minute") == true)
            // Still refused: a refused request does not clear the window.
            #expect(await serviceError { try service.admitRequest(limited) }?.code == "rate_limit_exceeded")
            // Counted per key, and the local user has no limit.
            for _ in 0..<3 { try service.admitRequest(other) }
            for _ in 0..<100 { try service.admitRequest(.localUser) }
        }
    }

    @Test func concurrentRunsPastTheLimitAreRefusedAndFreedSlotsComeBack() async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let (_, caller) = try await fixture.key("two", APIKeyLimits(maxConcurrentRuns: 2))
            let (_, other) = try await fixture.key("other", APIKeyLimits(maxConcurrentRuns: 1))
            let first = try service.limiter.acquireRun(caller)
            let second = try service.limiter.acquireRun(caller)
            let refused = await serviceError { try service.limiter.acquireRun(caller) }
            #expect(refused?.status == 429)
            #expect(refused?.code == "concurrency_limit_exceeded")
            #expect(refused?.retryAfter.map { $0 >= 1 } == true)
            // Another key has its own slots.
            let others = try service.limiter.acquireRun(other)
            #expect(service.limiter.runsInFlight == 3)

            first.free()
            first.free()  // a second release is a no-op, not a second slot
            let third = try service.limiter.acquireRun(caller)
            #expect(await serviceError { try service.limiter.acquireRun(caller) }?.code == "concurrency_limit_exceeded")
            for slot in [second, third, others] { slot.free() }
            #expect(service.limiter.runsInFlight == 0)
        }
    }

    @Test func aRunIsRefusedWhileTheKeyHoldsEveryRunSlot() async throws {
        try await withFixture { fixture in
            let (_, caller) = try await fixture.key("one", APIKeyLimits(maxConcurrentRuns: 1))
            try await withReadyService(fixture) { service, server in
                let slot = try service.limiter.acquireRun(caller)
                let error = await serviceError { try await service.run(RunRequest(query: "hello"), caller: caller) }
                #expect(error?.code == "concurrency_limit_exceeded")
                #expect(error?.status == 429)
                slot.free()
                #expect(await server.requests.isEmpty)  // refused before any model call
            }
        }
    }

    @Test func tokensPerDaySpentIsRefusedUntilUTCMidnight() async throws {
        try await withFixture { fixture in
            let (secret, _) = try await fixture.key("daily", APIKeyLimits(tokensPerDay: 100))
            try await withReadyService(fixture) { service, server in
                let caller = try await service.authenticate(authorization: "Bearer \(secret)")
                try await fixture.store.addUsage(
                    keyID: caller.owner, day: RLMService.today(), tokens: 150, costUSD: 0)
                let error = await serviceError { try await service.run(RunRequest(query: "hello"), caller: caller) }
                #expect(error?.status == 429)
                #expect(error?.type == "rate_limit_error")
                #expect(error?.code == "tokens_per_day_exceeded")
                let retry = try #require(error?.retryAfter)
                #expect((1...86_400).contains(retry))
                #expect(abs(retry - RLMService.secondsToUTCMidnight()) <= 2)
                #expect(await server.requests.isEmpty)
            }
        }
    }

    @Test func aSpentCostBudgetIsInsufficientQuotaWithoutRetryAfter() async throws {
        try await withFixture { fixture in
            let (secret, _) = try await fixture.key("paid", APIKeyLimits(maxCostUSD: 0.5))
            try await withReadyService(fixture) { service, server in
                let before = try await service.authenticate(authorization: "Bearer \(secret)")
                try await fixture.store.addUsage(keyID: before.owner, day: RLMService.today(), tokens: 10, costUSD: 0.6)
                let caller = try await service.authenticate(authorization: "Bearer \(secret)")
                #expect(caller.key?.spentUSD == 0.6)
                let error = await serviceError { try await service.run(RunRequest(query: "hello"), caller: caller) }
                #expect(error?.status == 429)
                #expect(error?.code == "insufficient_quota")
                #expect(error?.type == "insufficient_quota")
                #expect(error?.retryAfter == nil)
                #expect(await server.requests.isEmpty)
            }
        }
    }

    @Test func secondsToUTCMidnightAndTheUTCDay() {
        let noon = Date(timeIntervalSince1970: 86_400 * 19_000 + 43_200)
        #expect(RLMService.secondsToUTCMidnight(noon) == 43_200)
        let lastSecond = Date(timeIntervalSince1970: 86_400 * 20_000 - 1)
        #expect(RLMService.secondsToUTCMidnight(lastSecond) == 1)
        #expect(RLMService.secondsToUTCMidnight(Date(timeIntervalSince1970: 86_400 * 20_000)) == 86_400)
        #expect(RLMService.today(Date(timeIntervalSince1970: 0)) == "1970-01-01")
        #expect(RLMService.today(Date(timeIntervalSince1970: 86_400 * 20_000 - 1)) == "2024-10-03")
    }
}

/// `RunRequest.budget(server:tokensLeft:costLeft:)`: a request lowers the server's budgets, never raises them, and
/// the key's allowance narrows both.
@Suite("Run budgets")
struct RunBudgetTests {
    let server = Budget(maxIterations: 20, maxDepth: 2, maxTokens: 10_000, maxCostUSD: 1.0, maxWallTime: .seconds(300))

    @Test func theKeysAllowanceNarrowsTheRun() throws {
        let plain = try RunRequest(query: "q").budget(server: server, tokensLeft: 250, costLeft: 0.25)
        #expect(plain.maxTokens == 250)
        #expect(plain.maxCostUSD == 0.25)
        #expect(plain.maxIterations == 20)
        // A smaller ask wins over the allowance; a bigger one does not.
        let smaller = try RunRequest(query: "q", maxTokens: 100, maxCostUSD: 0.1)
            .budget(server: server, tokensLeft: 250, costLeft: 0.25)
        #expect(smaller.maxTokens == 100 && smaller.maxCostUSD == 0.1)
        let bigger = try RunRequest(query: "q", maxTokens: 5000, maxCostUSD: 0.9)
            .budget(server: server, tokensLeft: 250, costLeft: 0.25)
        #expect(bigger.maxTokens == 250 && bigger.maxCostUSD == 0.25)
        // A server without limits still gets the key's.
        let open = try RunRequest(query: "q").budget(server: Budget(), tokensLeft: 42, costLeft: 0.5)
        #expect(open.maxTokens == 42 && open.maxCostUSD == 0.5)
        // No allowance: the server's.
        let unlimited = try RunRequest(query: "q").budget(server: server, tokensLeft: nil, costLeft: nil)
        #expect(unlimited.maxTokens == 10_000 && unlimited.maxCostUSD == 1.0)
    }

    @Test func aRequestLowersButNeverRaisesTheServersLimits() throws {
        let lower = try RunRequest(query: "q", maxIterations: 5, maxDepth: 1, timeoutSeconds: 10)
            .budget(server: server, tokensLeft: nil, costLeft: nil)
        #expect(lower.maxIterations == 5 && lower.maxDepth == 1 && lower.maxWallTime == .seconds(10))
        let higher = try RunRequest(
            query: "q", maxIterations: 500, maxDepth: 8, maxTokens: 1_000_000, maxCostUSD: 50, timeoutSeconds: 3600
        ).budget(server: server, tokensLeft: nil, costLeft: nil)
        #expect(higher.maxIterations == 20)
        #expect(higher.maxDepth == 2)
        #expect(higher.maxTokens == 10_000)
        #expect(higher.maxCostUSD == 1.0)
        #expect(higher.maxWallTime == .seconds(300))
    }

    @Test(arguments: [
        (RunRequest(query: "q", maxIterations: 0), "rlm.max_iterations"),
        (RunRequest(query: "q", maxIterations: 1001), "rlm.max_iterations"),
        (RunRequest(query: "q", maxDepth: -1), "rlm.max_depth"),
        (RunRequest(query: "q", maxDepth: 9), "rlm.max_depth"),
        (RunRequest(query: "q", maxTokens: 0), "rlm.max_tokens"),
        (RunRequest(query: "q", maxCostUSD: 0), "rlm.max_cost"),
        (RunRequest(query: "q", maxCostUSD: -1), "rlm.max_cost"),
        (RunRequest(query: "q", maxCostUSD: .infinity), "rlm.max_cost"),
        (RunRequest(query: "q", maxCostUSD: .nan), "rlm.max_cost"),
        (RunRequest(query: "q", timeoutSeconds: 0), "rlm.timeout"),
        (RunRequest(query: "q", timeoutSeconds: 86_401), "rlm.timeout"),
    ])
    func valuesOutOfRangeAre400NamingTheField(_ request: RunRequest, _ field: String) async {
        let error = await serviceError { try request.budget(server: server, tokensLeft: nil, costLeft: nil) }
        #expect(error?.status == 400)
        #expect(error?.param == field)
        #expect(error?.code == "invalid_request")
    }
}
