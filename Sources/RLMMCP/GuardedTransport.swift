import Foundation
import Logging
import MCP
import Synchronization

/// Wraps the transport an MCP ``Server`` talks through, to keep three books the SDK does not:
/// - string arguments of `tools/call` escaped before the server decodes them (``ArgumentEscaping``);
/// - the requests received and not yet answered, so a server can finish them before it stops, and a session with a
///   call in flight is not expired;
/// - the bytes sent, since the stateful HTTP transport keeps every message it sends for replay, for the life of the
///   session.
///
/// It can also stop taking input (``closeInput()``) while answers still go out: the first step of a graceful stop.
actor GuardedTransport: Transport {
    nonisolated let logger: Logger
    private let inner: any Transport
    nonisolated let ledger = Ledger()
    private var pump: Task<Void, Never>?
    private var continuation: AsyncThrowingStream<Data, any Error>.Continuation?

    init(_ inner: any Transport, logger: Logger) {
        self.inner = inner
        self.logger = logger
    }

    func connect() async throws {
        try await inner.connect()
    }

    func disconnect() async {
        closeInput()
        await inner.disconnect()
    }

    func send(_ data: Data) async throws {
        ledger.sent(data)
        try await inner.send(ArgumentEscaping.unprotect(data) ?? data)
    }

    func receive() -> AsyncThrowingStream<Data, any Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, any Error>.makeStream()
        if ledger.inputEnded {
            continuation.finish()
            return stream
        }
        let inner = self.inner
        let ledger = self.ledger
        let logger = self.logger
        let pump = Task {
            do {
                for try await message in await inner.receive() {
                    if Task.isCancelled { break }
                    continuation.yield(ledger.received(message, logger: logger))
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
            ledger.endInput()
        }
        continuation.onTermination = { _ in pump.cancel() }
        self.pump = pump
        self.continuation = continuation
        return stream
    }

    /// Stops passing input on: the server's message loop ends, answers to requests already taken still go out.
    func closeInput() {
        continuation?.finish()
        continuation = nil
        pump?.cancel()
        pump = nil
        ledger.endInput()
    }

    /// The books, readable without awaiting the actor.
    final class Ledger: Sendable {
        private struct State {
            var pending = Set<String>()
            var bytesSent = 0
            var lastActivity = ContinuousClock.now
            var inputEnded = false
        }
        private let state = Mutex(State())

        /// Requests received and not yet answered (nor cancelled by the client).
        var pending: Int { state.withLock { $0.pending.count } }
        /// Bytes of every message sent.
        var bytesSent: Int { state.withLock { $0.bytesSent } }
        /// When a message last went either way.
        var lastActivity: ContinuousClock.Instant { state.withLock { $0.lastActivity } }
        /// Whether the input has ended (the peer closed it, or ``GuardedTransport/closeInput()``).
        var inputEnded: Bool { state.withLock { $0.inputEnded } }

        func endInput() { state.withLock { $0.inputEnded = true } }

        /// Notes a message received and returns it as the server should see it.
        func received(_ data: Data, logger: Logger) -> Data {
            guard let json = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else {
                return data  // the server answers with a parse error
            }
            let messages = (json as? [Any]) ?? [json]
            var rewritten = [Any]()
            var changed = false
            state.withLock { state in
                state.lastActivity = .now
                for case let message as [String: Any] in messages {
                    if let id = Self.key(message["id"]), message["method"] is String {
                        state.pending.insert(id)
                    }
                    if message["method"] as? String == CancelledNotification.name,
                        let params = message["params"] as? [String: Any], let id = Self.key(params["requestId"])
                    {
                        state.pending.remove(id)
                    }
                }
            }
            for message in messages {
                if let object = message as? [String: Any], let escaped = ArgumentEscaping.escape(request: object) {
                    rewritten.append(escaped)
                    changed = true
                } else {
                    rewritten.append(message)
                }
            }
            guard changed else { return data }
            do {
                return try JSONSerialization.data(
                    withJSONObject: json is [Any] ? rewritten : rewritten[0], options: [.withoutEscapingSlashes])
            } catch {
                logger.warning("a tools/call message could not be re-encoded; passed on as received")
                return data
            }
        }

        /// Notes a message sent: its answer ends a pending request.
        func sent(_ data: Data) {
            let json = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            let messages = (json as? [Any]) ?? json.map { [$0] } ?? []
            state.withLock { state in
                state.bytesSent += data.count
                state.lastActivity = .now
                for case let message as [String: Any] in messages
                where message["method"] == nil && (message["result"] != nil || message["error"] != nil) {
                    if let id = Self.key(message["id"]) { state.pending.remove(id) }
                }
            }
        }

        /// A JSON-RPC id as one string: strings and numbers never collide.
        private static func key(_ id: Any?) -> String? {
            switch id {
            case let text as String: return "s" + text
            case let number as NSNumber: return "n" + number.stringValue
            default: return nil
            }
        }
    }
}
