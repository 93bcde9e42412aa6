import RLM
import RLMTesting
import Synchronization
import Testing

@testable import RLMProviders

@Suite("ConnectionGate")
struct ConnectionGateTests {
    @Test func neverLetsMoreThanTheLimitThrough() async throws {
        let gate = ConnectionGate(limit: 3)
        let gauge = ConcurrencyGauge()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    try await gate.acquire()
                    gauge.enter()
                    try await Task.sleep(for: .milliseconds(5))
                    gauge.leave()
                    gate.release()
                }
            }
            try await group.waitForAll()
        }
        #expect(gauge.maximum == 3)
    }

    @Test func aCancelledWaiterLeavesAndTakesNoPermit() async throws {
        let gate = ConnectionGate(limit: 1)
        try await gate.acquire()
        let waiter = Task { try await gate.acquire() }
        try await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        gate.release()
        // The one permit is free again: taken at once, twice in a row.
        #expect(try await gate.acquire(until: .now + .seconds(5)))
        gate.release()
        #expect(try await gate.acquire(until: .now + .seconds(5)))
    }

    @Test func aDeadlineEndsTheWaitWithoutLeakingAPermit() async throws {
        let gate = ConnectionGate(limit: 1)
        try await gate.acquire()
        #expect(try await gate.acquire(until: .now + .milliseconds(50)) == false)
        gate.release()
        #expect(try await gate.acquire(until: .now + .seconds(5)))
    }

    @Test func theTotalTimeoutCoversWaitingForAConnection() async throws {
        try await FakeLLMServer.withServer(.scripted([.stall, .text("never")])) { server async throws in
            // Two models on one client and host share one gate: the first holds the only connection.
            let slow = openAIModel(server) { $0.connectionsPerHost = 1 }
            let quick = openAIModel(server) {
                $0.connectionsPerHost = 1
                $0.totalTimeout = .milliseconds(300)
            }
            let first = Task { try await slow.complete(CompletionRequest(messages: [.user("1")])) }
            try await waitForRequests(server, count: 1)
            let second = await llmError { try await quick.complete(CompletionRequest(messages: [.user("2")])) }
            #expect(second?.kind == .timeout)
            #expect(second?.message.contains("total timeout") == true)
            first.cancel()
            await #expect(throws: CancellationError.self) { try await first.value }
            #expect(await server.requests.count == 1, "the second never got to send its request")
        }
    }
}
