import Foundation
import RLM

/// The records SwiftRLM keeps of its runs (docs/TRAJECTORY.md): where trajectories live and how they are listed,
/// shown, deleted and pruned; the audit log; the HTML viewer.
public enum RLMTrajectory {
    /// The trajectory schema version this module reads and writes.
    public static let schemaVersion = 1
}
