import Foundation
import RLMStore
import Testing

@testable import RLMService

/// Authentication: every way of not having a valid key gets the one same 401, and a valid key is its caller.
@Suite("Authentication")
struct AuthenticationTests {
    /// The ways of sending no valid key.
    enum Bad: String, CaseIterable, Sendable {
        case noHeader, emptyHeader, basicScheme, tokenScheme, noScheme, schemeOnly, schemeAndSpaces, malformed,
            tooLong, unknownWellFormed, wrongSecretOfRealID, revoked
    }

    private func header(_ bad: Bad, fixture: Fixture) async throws -> String? {
        let (secret, _) = try await fixture.key("live")
        switch bad {
        case .noHeader: return nil
        case .emptyHeader: return ""
        case .basicScheme: return "Basic " + Data("user:\(secret)".utf8).base64EncodedString()
        case .tokenScheme: return "Token \(secret)"
        case .noScheme: return secret
        case .schemeOnly: return "Bearer"
        case .schemeAndSpaces: return "Bearer    "
        case .malformed: return "Bearer not-a-key"
        case .tooLong: return "Bearer " + secret + String(repeating: "a", count: 300)
        case .unknownWellFormed:
            let other = try await fixture.store.createKey(name: "gone", limits: APIKeyLimits())
            _ = try await fixture.store.revokeKey("gone")
            // Same shape as a real key, but no key has this id.
            return "Bearer rlm_" + String(repeating: "0", count: 16) + other.secret.dropFirst(4 + 16)
        case .wrongSecretOfRealID:
            let last = secret.last == "a" ? "b" : "a"
            return "Bearer " + secret.dropLast() + last
        case .revoked:
            let doomed = try await fixture.store.createKey(name: "doomed", limits: APIKeyLimits())
            _ = try await fixture.store.revokeKey(doomed.record.id)
            return "Bearer " + doomed.secret
        }
    }

    @Test(arguments: Bad.allCases)
    func everyInvalidKeyGetsTheSame401(_ bad: Bad) async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let authorization = try await header(bad, fixture: fixture)
            let error = await serviceError { try await service.authenticate(authorization: authorization) }
            #expect(error == ServiceError.unauthorized)
            #expect(error?.status == 401)
            #expect(error?.code == "invalid_api_key")
            #expect(error?.retryAfter == nil)
        }
    }

    @Test func aValidKeyIsItsCaller() async throws {
        try await withFixture { fixture in
            let service = fixture.service()
            let (secret, expected) = try await fixture.key("web", APIKeyLimits(requestsPerMinute: 7))
            for scheme in ["Bearer", "bearer", "BEARER"] {
                let caller = try await service.authenticate(authorization: "\(scheme) \(secret)")
                #expect(caller == expected)
                #expect(caller.owner == expected.key?.id)
                #expect(caller.limits.requestsPerMinute == 7)
            }
            // Another key is another caller.
            let (other, _) = try await fixture.key("batch")
            let second = try await service.authenticate(authorization: "Bearer \(other)")
            #expect(second.owner != expected.owner)
        }
    }

    @Test func theLocalUserHasNoKeyAndNoLimits() {
        let caller = Caller.localUser
        #expect(caller.key == nil)
        #expect(caller.limits == APIKeyLimits())
        #expect(caller.owner == "local")
    }
}
