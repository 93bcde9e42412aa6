import RLMTrajectory
import Testing

@Test func theSchemaVersionIsOne() {
    #expect(RLMTrajectory.schemaVersion == 1)
}
