import Foundation
import Testing

/// The real offline model end to end: `rlm run --provider local` starts llama.cpp's server on the pulled GGUF and the
/// model's code runs in the real sandbox. Enabled by `RLM_E2E_LOCAL_MODEL=<model>` (scripts/test pulls the 0.5B model
/// and sets it). Accuracy is the benchmark's business; this checks that the run completes and reports properly.
@Suite("Local model end to end", .serialized)
struct LocalModelEndToEndTests {
    static let model = ProcessInfo.processInfo.environment["RLM_E2E_LOCAL_MODEL"]

    @Test(.enabled(if: model != nil, "set RLM_E2E_LOCAL_MODEL=qwen2.5-coder-0.5b (scripts/test does) to run"))
    func smallTaskCompletesWithAValidTrajectory() async throws {
        let model = try #require(Self.model)
        let lines = (1...600).map { i in
            "2026-11-21T10:\(String(format: "%02d", i % 60)):00Z \(i % 12 == 0 ? "ERROR" : "INFO") svc-\(i % 3) "
                + "request \(i) took \(i % 97) ms"
        }
        let context = try writeTemporary(lines.joined(separator: "\n"), name: "app.log")
        let trajectory = context + ".jsonl"
        let environment = ProcessInfo.processInfo.environment
        let home = environment["HOME"] ?? NSHomeDirectory()
        var passThrough = ["HOME": home]
        for name in ["RLM_MODEL_DIR", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"] {
            if let value = environment[name] { passThrough[name] = value }
        }
        let result = try await runRLM(
            [
                "run", "--provider", "local", "--model", model, "--context", context, "--max-iterations", "3",
                "--timeout", "900", "--trajectory", trajectory, "--json", "How many ERROR lines are in the log?",
            ], environment: passThrough)
        #expect(result.status == 0 || result.status == 3, "exit \(result.status): \(result.stderr)")
        let json = try #require(result.json, "no JSON on stdout: \(result.stdout) \(result.stderr)")
        let iterations = json["iterations"] as? Int ?? 0
        #expect(iterations >= 1)
        let usage = try #require(json["usage"] as? [String: Any])
        #expect((usage["input_tokens"] as? Int ?? 0) > 0, "the real server reports usage")
        if result.status == 0 {
            let answer = try #require(json["answer"] as? String)
            #expect(!answer.isEmpty)
        } else {
            #expect(json["status"] as? String == "budget_exhausted")
        }
        let events = try String(contentsOfFile: trajectory, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let kinds = events.compactMap { $0?["kind"] as? String }
        #expect(kinds.first == "run_started")
        #expect(kinds.last == "run_finished")
        #expect(kinds.contains("model_response"))
        print("local e2e: exit \(result.status), answer \(json["answer"] ?? "none"), \(iterations) iterations")
    }
}
