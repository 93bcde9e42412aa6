import Foundation
import RLM
import Synchronization
import Testing

@testable import RLMSandbox

extension SandboxTests {
    /// Code in the cell shares the worker's process, so it can write `subcall` frames with fresh ids without waiting
    /// for replies. Honest code cannot have more sub-calls waiting than threads; forged frames must not start more
    /// host tasks than that either (each may hold a large prompt or context on the host).
    @Suite("Host edges: sub-call flood")
    struct SubcallFloodTests {
        @Test func forgedSubcallsInFlightAreBoundedByTheProcessLimit() async throws {
            let inFlight = Mutex((now: 0, peak: 0, total: 0))
            let handler = ClosureSubcallHandler { _ in
                inFlight.withLock { value in
                    value.now += 1
                    value.total += 1
                    value.peak = max(value.peak, value.now)
                }
                defer { inFlight.withLock { $0.now -= 1 } }
                try await Task.sleep(for: .milliseconds(300))
                return .text("ok")
            }
            var configuration = testConfiguration()
            configuration.maxProcesses = 16
            let code = """
                import _thread, json, sys, time
                g = llm_query.__globals__
                for i in range(300):
                    # Register the id as the worker's own llm_query does, so the replies are accepted.
                    slot = [_thread.allocate_lock(), None]
                    slot[0].acquire()
                    g['_PENDING'][f'flood{i}'] = slot
                    payload = json.dumps({'type': 'subcall', 'id': f'flood{i}', 'call': 'llm_query',
                                          'prompt': 'x', 'model': None}).encode()
                    with g['_SEND_LOCK']:
                        g['_write_all'](len(payload).to_bytes(4, 'big') + payload)
                print('flooded')
                time.sleep(1)
                """
            try await withTestSession(configuration, handler: handler) { session in
                let result = try await session.run(code, timeout: .seconds(60))
                #expect(result.stdout.contains("flooded"), "the forged frames were written: \(result)")
            }
            let seen = inFlight.withLock { $0 }
            #expect(seen.total > 16, "the flood really reached the host: \(seen.total) calls")
            #expect(seen.peak <= 16, "\(seen.peak) forged sub-calls ran at once past the limit of 16")
        }
    }
}
