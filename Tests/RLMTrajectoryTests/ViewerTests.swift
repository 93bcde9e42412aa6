import Foundation
import Glibc
import Testing

@testable import RLMTrajectory

/// The viewer page without a browser: the embedded JSON cannot end or bend its script block, the page fetches
/// nothing, its policy allows exactly its own script and style, and its file is born 0600 and replaces only our pages.
@Suite("Trajectory viewer")
struct TrajectoryViewerTests {
    static let dangerous = [
        "</script><script>alert(1)</script>", "</SCRIPT >", "<!--", "<!-- <script>", "-->", "]]>", "a & b &amp;",
        "<img src=x onerror=alert(1)>", "line\u{2028}separator", "paragraph\u{2029}separator", "\\u003c", "\\",
        "\u{1F600} \u{0}\u{7F}",
    ]

    @Test(arguments: dangerous)
    func scriptSafeJSONKeepsTheValueAndHidesEveryMarkupCharacter(_ text: String) throws {
        let json = String(
            decoding: try JSONSerialization.data(withJSONObject: ["k": text, text: [text]], options: [.sortedKeys]),
            as: UTF8.self)
        let safe = TrajectoryViewer.scriptSafeJSON(json)
        for forbidden in ["<", ">", "&", "\u{2028}", "\u{2029}", "\u{7F}"] {
            #expect(!safe.contains(forbidden), "\(forbidden) left in \(safe)")
        }
        let back = try #require(try JSONSerialization.jsonObject(with: Data(safe.utf8)) as? [String: Any])
        #expect(back["k"] as? String == text)
        #expect((back[text] as? [String])?.first == text)
    }

    /// DEL and the C1 controls are escaped as well (not parameterized: a test's name would carry them into logs).
    @Test func terminalControlsInTheEmbeddedJSONAreEscapedToo() throws {
        let text = "8-bit CSI \u{9B}31m, \u{80}\u{9F}\u{7F}, kept: \u{A0}\u{FF}\u{100}"
        let json = String(decoding: try JSONSerialization.data(withJSONObject: ["k": text]), as: UTF8.self)
        let safe = TrajectoryViewer.scriptSafeJSON(json)
        #expect(!safe.unicodeScalars.contains { $0.value == 0x7F || (0x80...0x9F).contains($0.value) })
        #expect(safe.contains(#"\u009b31m, \u0080\u009f\u007f"#))
        let back = try #require(try JSONSerialization.jsonObject(with: Data(safe.utf8)) as? [String: String])
        #expect(back["k"] == text)
    }

    /// The JSON block in a rendered page: from its opening tag to the first `</script`, which must be its own end.
    static func embeddedJSON(_ page: String) throws -> String {
        let open = #"<script type="application/json" id="rlm-trajectory">"#
        let start = try #require(page.range(of: open))
        let end = try #require(page.range(of: "</script", range: start.upperBound..<page.endIndex))
        return String(page[start.upperBound..<end.lowerBound])
    }

    @Test func aHostileTrajectoryStaysInsideItsBlockAndComesBackIntact() throws {
        let lines = Self.dangerous.enumerated().map { index, text in
            let object: [String: Any] = [
                "schema": 1, "run": text, "seq": index, "kind": text, "scope": text,
                "data": ["note": text, text: text],
            ]
            return String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
        }
        let page = TrajectoryViewer.render(lines: lines, source: "</script><!--x.jsonl")
        let json = try Self.embeddedJSON(page)
        for forbidden in ["</script", "</SCRIPT", "<!--", "<script", "\u{2028}", "\u{2029}", "<", ">"] {
            #expect(!json.contains(forbidden), "\(forbidden) in the embedded JSON")
        }
        // Exactly the viewer's two script elements, the JSON one closed right after the payload.
        #expect(page.components(separatedBy: "<script").count == 3)
        #expect(page.lowercased().components(separatedBy: "</script").count == 3)
        let payload = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(payload["source"] as? String == "</script><!--x.jsonl")
        let events = try #require(payload["events"] as? [[String: Any]])
        #expect(events.count == Self.dangerous.count)
        for (event, text) in zip(events, Self.dangerous) {
            #expect(event["run"] as? String == text)
            #expect((event["data"] as? [String: Any])?["note"] as? String == text)
        }
    }

    @Test func aTruncatedLastLineAndStrayLinesAreKeptAsUnreadable() throws {
        let good = #"{"schema":1,"run":"r","seq":0,"kind":"note","data":{"note":"hi"}}"#
        let jsonl = Data((good + "\nnot json\n\n[1,2]\n" + #"{"schema":1,"run":"r","kind":"no"#).utf8)
        let page = TrajectoryViewer.render(jsonl: jsonl, source: "t.jsonl")
        let payload = try #require(
            try JSONSerialization.jsonObject(with: Data(try Self.embeddedJSON(page).utf8)) as? [String: Any])
        #expect((payload["events"] as? [Any])?.count == 1)
        let unreadable = try #require(payload["unreadable"] as? [[String: Any]])
        #expect(unreadable.map { $0["line"] as? Int } == [2, 4, 5])
        #expect(unreadable.map { $0["last"] as? Bool } == [false, false, true])
        #expect(unreadable.last?["text"] as? String == #"{"schema":1,"run":"r","kind":"no"#)
        // A complete file's last line is not called cut short.
        let whole = TrajectoryViewer.render(jsonl: Data("oops\n".utf8), source: "t")
        #expect(whole.contains(#"\"last\":false"#) || whole.contains(#""last":false"#))
    }

    @Test func thePageFetchesNothingAndItsPolicyAllowsOnlyItsOwnScriptAndStyle() throws {
        let page = TrajectoryViewer.render(lines: [], source: "empty")
        // Nothing in the shell names a resource; the one URL is the SVG namespace, which is never fetched.
        let shell = page.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "")
        for fetch in [
            "src=", "href=", "url(", "@import", "http:", "https:", "'//", "\"//", "srcset", "<link", "<iframe",
        ] {
            #expect(!shell.contains(fetch), "\(fetch) in the page")
        }
        let policy = TrajectoryViewer.contentSecurityPolicy
        #expect(page.contains(#"<meta http-equiv="Content-Security-Policy" content="\#(policy)">"#))
        // The policy comes before the style and the scripts it governs.
        let policyAt = try #require(page.range(of: "Content-Security-Policy")).lowerBound
        #expect(policyAt < (try #require(page.range(of: "<style>")).lowerBound))
        #expect(policyAt < (try #require(page.range(of: "<script")).lowerBound))
        #expect(policy.contains("default-src 'none'"))
        #expect(policy.contains("script-src '\(TrajectoryViewer.cspHash(ViewerAssets.script))'"))
        #expect(policy.contains("style-src '\(TrajectoryViewer.cspHash(ViewerAssets.style))'"))
        for directive in ["base-uri 'none'", "form-action 'none'", "object-src 'none'", "connect-src 'none'"] {
            #expect(policy.contains(directive))
        }
        #expect(policy.contains("require-trusted-types-for 'script'"))
        #expect(!policy.contains("unsafe"))
        // The hashed texts are exactly what the page carries.
        #expect(page.contains("<style>\(ViewerAssets.style)</style>"))
        #expect(page.contains("<script>\(ViewerAssets.script)</script>"))
        // The script builds the page from text only.
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function(", "href"] {
            #expect(!ViewerAssets.script.contains(sink), "\(sink) in the viewer's script")
        }
    }

    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
    ])
    func sha256MatchesTheStandardVectors(_ message: String, _ digest: String) {
        let hex = SHA256.hash(Array(message.utf8)).map { String(format: "%02x", $0) }.joined()
        #expect(hex == digest)
    }

    @Test func thePageIsBorn0600AndReplacesOnlyAPageOfOurs() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-viewer-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let page = TrajectoryViewer.render(lines: [], source: "x")
        let path = directory + "/x.html"
        let saved = umask(0)
        defer { umask(saved) }
        try TrajectoryViewer.writePage(page, toPath: path)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == page)
        chmod(path, 0o666)
        try TrajectoryViewer.writePage(page + "<!-- again -->", toPath: path)
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try String(contentsOfFile: path, encoding: .utf8).hasSuffix("<!-- again -->"))

        let other = directory + "/other.html"
        try "<html>mine</html>".write(toFile: other, atomically: true, encoding: .utf8)
        let link = directory + "/link.html"
        symlink(other, link)
        let dangling = directory + "/dangling.html"
        symlink(directory + "/nowhere", dangling)
        for target in [other, link, dangling, directory] {
            #expect(throws: TrajectoryViewerError.self) { try TrajectoryViewer.writePage(page, toPath: target) }
        }
        #expect(try String(contentsOfFile: other, encoding: .utf8) == "<html>mine</html>")
        #expect(!FileManager.default.fileExists(atPath: directory + "/nowhere"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".tmp") }
        #expect(leftovers.isEmpty)
    }
}
