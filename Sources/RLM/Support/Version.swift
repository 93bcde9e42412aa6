/// The version of SwiftRLM, as `rlm --version` prints it.
public enum RLMVersion {
    /// The release this source tree is (semantic versioning); bumped by hand when a release is tagged.
    public static let string = "0.3.0"
}
