import Foundation
import Glibc
import RLM
import RLMTesting
import Testing

/// `rlm view`, opened in a real browser: headless Chromium loads the page from disk, runs its script, and the tests
/// read the DOM it built and a screenshot of it. CI installs Chromium (.ci/run); elsewhere the suite is skipped with
/// the reason.
@Suite(
    "rlm view in headless Chromium", .serialized,
    .enabled(
        if: Chromium.path != nil,
        "needs Debian's chromium (apt-get install -y chromium; .ci/run installs it) to open the page headless"))
struct ViewerBrowserTests {
    /// Writes `lines` as `name` in a fresh directory and runs `rlm view` on it; returns the page's path.
    func view(_ lines: [String], name: String, trailingNewline: Bool = true) async throws -> String {
        let directory = try Self.scratchDirectory()
        let trajectory = directory + "/" + name
        let text = lines.joined(separator: "\n") + (trailingNewline ? "\n" : "")
        try text.write(toFile: trajectory, atomically: true, encoding: .utf8)
        let page = directory + "/" + name.replacingOccurrences(of: ".jsonl", with: ".html")
        let result = try await runRLM(["view", trajectory, "-o", page])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == page + "\n")
        return page
    }

    static func removeDirectory(of page: String) {
        try? FileManager.default.removeItem(atPath: (page as NSString).deletingLastPathComponent)
    }

    static func scratchDirectory() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rlm-view-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory.path
    }

    @Test func aRealisticTrajectoryShowsItsStepsSubcallTreeAndAnswer() async throws {
        let page = try await view(Fixtures.realistic, name: "r-realistic.jsonl")
        defer { Self.removeDirectory(of: page) }
        var info = stat()
        #expect(stat(page, &info) == 0 && info.st_mode & 0o777 == 0o600, "the page holds the run: born 0600")

        let loaded = try await Chromium.dumpDOM(page)
        let dom = loaded.dom
        #expect(dom.contains(#"data-rendered="yes""#), "the page's own script ran under its CSP")
        #expect(loaded.policyViolations.isEmpty, "\(loaded.policyViolations)")
        #expect(dom.contains("<title>r-realistic.jsonl — rlm view</title>"))
        // The run, its status and answer, the query.
        #expect(dom.contains("Run r-realistic"))
        #expect(dom.contains(">answered<"))
        #expect(dom.contains("There are 42 ERROR lines, mostly disk-full errors."))
        #expect(dom.contains("How many ERROR lines are in the log, and what are they about?"))
        // Both iterations of the root loop, the reply, the code coloured as Python, its output.
        #expect(dom.contains("Iteration 1") && dom.contains("Iteration 2"))
        #expect(dom.contains("Let me count them first."))
        #expect(dom.contains(#"<span class="kw">for</span>"#), "Python keywords are highlighted")
        #expect(dom.contains(#"<span class="com"># count the ERROR lines</span>"#), "comments are highlighted")
        #expect(dom.contains(#"<span class="str">'ERROR'</span>"#), "strings are highlighted")
        #expect(dom.contains(#"<span class="bi">print</span>"#))
        #expect(dom.contains("errors = [l for l in context.splitlines()"))
        #expect(dom.contains("42\n"))
        // The llm_query sub-call and the rlm_query child at depth 1, with the child's own step.
        #expect(dom.contains("Sub-call c1 · llm_query returned"))
        #expect(dom.contains("Summarize these errors in five words"))
        #expect(dom.contains("Child loop c2 (depth 2)") == false)
        #expect(dom.contains("Child loop c2 (depth 1)"))
        #expect(dom.contains("c2 · rlm_query · gpt-mini · depth 0"), "the sub-call tree lists the child")
        #expect(dom.contains("print(len(context))"), "the child's cell is shown")
        #expect(dom.contains("disk full, all on sda"), "the child's answer is shown")
        // The timeline.
        #expect(dom.contains(#"<svg viewBox="0 0 1000 200" class="timeline""#))
        #expect(dom.contains("<polyline"))
        for (name, attributes) in Self.elements(in: dom) {
            #expect(Self.viewerElements.contains(name), "<\(name)>")
            #expect(attributes.allSatisfy(Self.viewerAttributes.contains), "<\(name) \(attributes)>")
        }

        let shot = try await Chromium.screenshot(page)
        try Chromium.expectRenderedPNG(shot)
    }

    @Test func hostileTextIsShownAsTextAndRunsNothing() async throws {
        let page = try await view(Fixtures.hostile, name: "hostile.jsonl", trailingNewline: false)
        defer { Self.removeDirectory(of: page) }
        let html = try String(contentsOfFile: page, encoding: .utf8)
        // The file itself: exactly the viewer's two script elements, and the payload cannot close its block.
        #expect(html.components(separatedBy: "<script").count - 1 == 2)
        #expect(html.components(separatedBy: "</script").count - 1 == 2)
        #expect(!html.contains("<img") && !html.contains("<iframe") && !html.contains("<svg onload"))

        let loaded = try await Chromium.dumpDOM(page)
        let dom = loaded.dom
        #expect(dom.contains(#"data-rendered="yes""#), "the page rendered despite the hostile events")
        #expect(loaded.policyViolations.isEmpty, "nothing tried to run or load: \(loaded.policyViolations)")
        // Nothing the payloads would do happened.
        #expect(!dom.contains("<title>pwned"))
        #expect(dom.contains("<title>hostile.jsonl — rlm view</title>"))
        #expect(!dom.contains(#"data-pwned="yes""#))
        #expect(!dom.contains("id=\"pwned\""))
        // No element was injected: two script elements, no image, frame, link or inline handler.
        #expect(dom.components(separatedBy: "<script").count - 1 == 2, "only the viewer's own scripts")
        for element in ["<img", "<iframe", "<a ", "<svg onload", "<b>", "<object", "<embed", "<form", "<base"] {
            #expect(!dom.contains(element), "an element \(element) was injected")
        }
        // Every element and attribute on the page is one the viewer makes (text keeps its `<` escaped, so each raw
        // `<` before the script blocks opens a real element).
        let tags = Self.elements(in: dom)
        #expect(tags.count > 50)
        for (name, attributes) in tags {
            #expect(Self.viewerElements.contains(name), "an element <\(name)> was injected")
            for attribute in attributes {
                #expect(
                    Self.viewerAttributes.contains(attribute), "an attribute \(attribute) on <\(name)> was injected")
            }
        }
        // Every payload is on the page as text.
        for text in Fixtures.hostileTexts {
            #expect(dom.contains(Self.asText(text)), "not shown as text: \(text)")
        }
        #expect(dom.contains("the last line, cut short"), "the truncated last line is reported")
        #expect(dom.contains("An event of a kind this viewer does not know"), "an unknown kind is shown generically")
        #expect(dom.contains("Other fields"), "unknown fields are shown generically")
        #expect(dom.contains("No run_finished event"), "a run without an end is said to be unfinished")

        let shot = try await Chromium.screenshot(page)
        try Chromium.expectRenderedPNG(shot)
    }

    /// The policy is not decoration: markup slipped into the page past the viewer (here by editing the file) is
    /// blocked by the browser and reported as a Content-Security-Policy violation.
    @Test func thePolicyBlocksAScriptAndAnImageInjectedIntoThePage() async throws {
        let page = try await view(Fixtures.realistic, name: "r-csp.jsonl")
        defer { Self.removeDirectory(of: page) }
        let html = try String(contentsOfFile: page, encoding: .utf8)
        let injected = html.replacingOccurrences(
            of: #"<main id="app">"#,
            with: #"<script>document.title='pwned'</script><img src="http://127.0.0.1:9/x.png" "#
                + #"onerror="document.documentElement.setAttribute('data-pwned','yes')"><main id="app">"#)
        try injected.write(toFile: page, atomically: true, encoding: .utf8)
        let loaded = try await Chromium.dumpDOM(page)
        #expect(!loaded.dom.contains("<title>pwned"))
        #expect(!loaded.dom.contains(#"data-pwned="yes""#))
        #expect(loaded.dom.contains(#"data-rendered="yes""#), "the viewer's own script still runs")
        #expect(
            loaded.policyViolations.contains { $0.contains("Executing inline script") }, "\(loaded.policyViolations)")
        #expect(loaded.policyViolations.contains { $0.contains("img-src 'none'") }, "\(loaded.policyViolations)")
    }

    /// A 10 MB trajectory opens rendered lazily (steps built on click) with no policy violation. It also prints
    /// issue 10's figure (docs/BENCHMARKS.md), measured by the page itself from navigation start (`data-render-ms`):
    /// a figure, not an assertion — speed targets live in the benchmarks, and a shared 2-core CI box is noisy.
    @Test func aTenMegabyteTrajectoryRendersLazilyAndReportsItsOpenTime() async throws {
        let lines = Fixtures.large(bytes: 10_000_000)
        let size = lines.reduce(0) { $0 + $1.utf8.count + 1 }
        let started = ContinuousClock.now
        let page = try await view(lines, name: "large.jsonl")
        defer { Self.removeDirectory(of: page) }
        let writing = ContinuousClock.now - started
        let pageSize = (try FileManager.default.attributesOfItem(atPath: page)[.size] as? Int) ?? 0
        let opening = ContinuousClock.now
        let loaded = try await Chromium.dumpDOM(page)
        let browserWall = ContinuousClock.now - opening
        let rendered = loaded.dom.firstMatch(of: /data-render-ms="(\d+)"/).flatMap { Int($0.1) }
        let parsed = loaded.dom.firstMatch(of: /data-script-start-ms="(\d+)"/).flatMap { Int($0.1) }
        print(
            "rlm view: \(size) bytes of trajectory (\(lines.count) events) → \(pageSize) bytes of page in "
                + "\(writing); headless Chromium: rendered \(rendered.map(String.init) ?? "?") ms after navigation "
                + "start (HTML parsed at \(parsed.map(String.init) ?? "?") ms), \(browserWall) for the whole browser process"
        )
        #expect(loaded.dom.contains("steps open on click"), "a large file renders its steps lazily")
        #expect(loaded.policyViolations.isEmpty)
        #expect(rendered != nil, "the page did not finish rendering")
    }

    @Test func withoutOutputThePageGoesToTheCurrentDirectoryAndOnlyOurPagesAreReplaced() async throws {
        let directory = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let trajectory = directory + "/run-7.jsonl"
        try (Fixtures.realistic.joined(separator: "\n") + "\n").write(
            toFile: trajectory, atomically: true, encoding: .utf8)
        let work = directory + "/work"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        func viewIn(_ arguments: String) async throws -> CLIResult {
            try await runProgram("/bin/sh", ["-c", "cd '\(work)' && exec '\(try rlmBinary())' view \(arguments)"])
        }
        let first = try await viewIn("'\(trajectory)'")
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == "run-7.html\n")
        #expect(FileManager.default.fileExists(atPath: work + "/run-7.html"))
        // Our own page is replaced, again 0600 even after a chmod.
        chmod(work + "/run-7.html", 0o644)
        let again = try await viewIn("'\(trajectory)'")
        #expect(again.status == 0, "\(again.stderr)")
        var info = stat()
        #expect(stat(work + "/run-7.html", &info) == 0 && info.st_mode & 0o777 == 0o600)
        // Anything else is refused, and left as it was.
        try "precious".write(toFile: work + "/notes.html", atomically: true, encoding: .utf8)
        symlink(work + "/notes.html", work + "/link.html")
        try FileManager.default.createDirectory(atPath: work + "/dir.html", withIntermediateDirectories: true)
        for target in ["notes.html", "link.html", "dir.html"] {
            let refused = try await viewIn("'\(trajectory)' -o \(target)")
            #expect(refused.status == 2, "\(target): \(refused.stderr)")
            #expect(refused.stderr.contains("refusing to overwrite"), "\(refused.stderr)")
            #expect(refused.stdout.isEmpty)
        }
        #expect(try String(contentsOfFile: work + "/notes.html", encoding: .utf8) == "precious")
        // `-o -`: the page on stdout (piped, so as it is), nothing written.
        let piped = try await viewIn("'\(trajectory)' -o -")
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(piped.stdout.hasPrefix("<!DOCTYPE html>") && piped.stdout.contains("There are 42 ERROR lines"))
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: work).sorted() == [
                "dir.html", "link.html", "notes.html", "run-7.html",
            ])
        let missing = try await viewIn("'\(directory)/absent.jsonl'")
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("cannot read"), "\(missing.stderr)")
        let fifo = try await viewIn("/dev/stdin < /dev/null")
        #expect(fifo.status == 2, "\(fifo.stderr)")
    }

    static let viewerElements: Set<String> = [
        "html", "head", "meta", "title", "style", "body", "main", "p", "h1", "h2", "h3", "div", "span", "pre", "button",
        "details", "summary", "dl", "dt", "dd", "ul", "li", "nav", "section", "svg", "line", "polyline", "text",
        "circle",
    ]
    static let viewerAttributes: Set<String> = [
        "lang", "charset", "http-equiv", "content", "name", "class", "id", "type", "open", "viewBox", "role", "x1",
        "x2", "y1", "y2", "points", "cx", "cy", "r", "x", "y", "text-anchor", "data-rendered", "data-render-ms",
        "data-script-start-ms",
    ]

    /// The elements of a serialized DOM before its script blocks, with their attribute names.
    static func elements(in dom: String) -> [(String, [String])] {
        let body = dom.components(separatedBy: #"<script type="application/json""#)[0]
        return body.matches(of: /<([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^\s=>]+(?:="[^"]*")?)*)\s*\/?>/).map { match in
            let attributes = String(match.output.2).matches(of: /\s+([^\s=>]+)(?:="[^"]*")?/).map {
                String($0.output.1)
            }
            return (String(match.output.1), attributes)
        }
    }

    /// How a payload looks in serialized DOM text: `&`, `<` and `>` escaped, quotes as they are.
    static func asText(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}

/// Headless Chromium, as Debian ships it.
enum Chromium {
    static let path: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    struct Loaded {
        /// The DOM after the page's scripts ran, serialized.
        var dom: String
        /// Console lines reporting a Content-Security-Policy violation.
        var policyViolations: [String]
    }

    static func run(_ arguments: [String]) async throws -> CLIResult {
        let profile = try ViewerBrowserTests.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let result = try await runProgram(
            try #require(path),
            [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                "--user-data-dir=\(profile)", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
            ] + arguments, checkLeftovers: false)
        return result
    }

    static func dumpDOM(_ page: String) async throws -> Loaded {
        let result = try await run(["--dump-dom", URL(fileURLWithPath: page).absoluteString])
        #expect(result.status == 0, "chromium: \(result.stderr.suffix(2000))")
        let violations = result.stderr.split(separator: "\n").map(String.init).filter {
            $0.contains("Content Security Policy") || $0.contains("Content-Security-Policy")
        }
        return Loaded(dom: result.stdout, policyViolations: violations)
    }

    static func screenshot(_ page: String) async throws -> String {
        let png = page + ".png"
        let result = try await run([
            "--screenshot=\(png)", "--window-size=1280,2000", URL(fileURLWithPath: page).absoluteString,
        ])
        #expect(result.status == 0, "chromium: \(result.stderr.suffix(2000))")
        return png
    }

    /// A PNG of 1280×2000 that is not blank: over a few KB, and many distinct colours among pixels sampled from its
    /// top 600 rows (decoded by Python's zlib: PNG filters undone row by row).
    static func expectRenderedPNG(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(data.count > 8_000, "screenshot of \(data.count) bytes", sourceLocation: sourceLocation)
        #expect(
            Array(data.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], sourceLocation: sourceLocation)
        let decoder = """
            import struct, sys, zlib
            data = open(sys.argv[1], 'rb').read()
            pos, idat = 8, b''
            while pos < len(data):
                n, kind = struct.unpack('>I4s', data[pos:pos + 8])
                body = data[pos + 8:pos + 8 + n]
                pos += 12 + n
                if kind == b'IHDR':
                    width, height, depth, colour = struct.unpack('>IIBB', body[:10])
                elif kind == b'IDAT':
                    idat += body
            raw = zlib.decompress(idat)
            bpp = {2: 3, 6: 4}[colour]
            stride = width * bpp
            prev, colours = bytearray(stride), set()
            for y in range(min(height, 600)):
                f = raw[y * (stride + 1)]
                line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
                for i in range(stride):
                    a = line[i - bpp] if i >= bpp else 0
                    b = prev[i]
                    c = prev[i - bpp] if i >= bpp else 0
                    if f == 1: line[i] = (line[i] + a) & 255
                    elif f == 2: line[i] = (line[i] + b) & 255
                    elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
                    elif f == 4:
                        p = a + b - c
                        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                        line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
                for x in range(0, width, 3):
                    colours.add(bytes(line[x * bpp:x * bpp + 3]))
                prev = line
            print(width, height, len(colours))
            """
        let script = try writeTemporary(decoder, name: "png_colours.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [script, path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let fields = output.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(fields.count == 3, "png decoder: \(output)", sourceLocation: sourceLocation)
        guard fields.count == 3 else { return }
        #expect(fields[0] == 1280 && fields[1] == 2000, "screenshot size \(fields)", sourceLocation: sourceLocation)
        #expect(fields[2] > 20, "a blank page: \(fields[2]) colours in the top rows", sourceLocation: sourceLocation)
    }
}

/// Trajectories in the docs/TRAJECTORY.md shape, written by hand.
enum Fixtures {
    static func line(
        _ seq: Int, _ kind: String, scope: String = "root", depth: Int = 0, iteration: Int, time: Double,
        run: String = "r-realistic", data: [String: Any], usage: [String: Any]? = nil
    ) -> String {
        var object: [String: Any] = [
            "schema": 1, "run": run, "seq": seq, "time": 1_760_000_000 + time, "kind": kind, "depth": depth,
            "scope": scope, "iteration": iteration, "data": data,
        ]
        if let usage { object["usage"] = usage }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    static func usage(_ input: Int, _ output: Int, _ cost: Double, calls: Int, subcalls: Int) -> [String: Any] {
        ["input_tokens": input, "output_tokens": output, "cost_usd": cost, "model_calls": calls, "subcalls": subcalls]
    }

    static let rootCode = """
        # count the ERROR lines
        errors = [l for l in context.splitlines() if 'ERROR' in l]
        print(len(errors))
        """
    static let secondCode = """
        summary = llm_query(f"Summarize these errors in five words: {errors[:20]}")
        check = rlm_query("Do the errors all come from one disk?", errors)
        print(summary, check)
        """
    static let childCode = "print(len(context))"

    static let realistic: [String] = [
        line(
            0, "run_started", iteration: 0, time: 0,
            data: [
                "query": "How many ERROR lines are in the log, and what are they about?", "model": "gpt-test",
                "sub_model": "gpt-mini",
                "budget": [
                    "max_iterations": 10, "max_depth": 1, "max_tokens": NSNull(), "max_cost_usd": 1.0,
                    "max_wall_seconds": 600, "max_subcalls": 50,
                ],
                "configuration": ["temperature": 0, "sandbox": "process"],
            ], usage: usage(0, 0, 0, calls: 0, subcalls: 0)),
        line(
            1, "context_loaded", iteration: 0, time: 0.2,
            data: [
                "type": "str", "shape": "str", "bytes": 120_000, "characters": 120_000, "lines": 3000,
                "items": NSNull(), "skipped": [] as [Any], "decoded_as": [] as [Any],
            ]),
        line(
            2, "model_request", iteration: 1, time: 0.3,
            data: [
                "model": "gpt-test", "messages": 2, "estimated_prompt_tokens": 900,
                "delta": [
                    ["role": "system", "content": "You answer with a Python REPL."],
                    ["role": "user", "content": "How many ERROR lines are in the log, and what are they about?"],
                ],
            ]),
        line(
            3, "model_response", iteration: 1, time: 1.5,
            data: [
                "model": "gpt-test", "text": "Let me count them first.\n```repl\n\(rootCode)\n```",
                "input_tokens": 900, "output_tokens": 60, "cost_usd": 0.0012, "latency_ms": 1200,
            ], usage: usage(900, 60, 0.0012, calls: 1, subcalls: 0)),
        line(4, "code_started", iteration: 1, time: 1.6, data: ["block": 1, "code": rootCode]),
        line(
            5, "code_result", iteration: 1, time: 1.7,
            data: [
                "block": 1, "code": rootCode, "stdout": "42\n", "stderr": "", "error": NSNull(), "timed_out": false,
                "state_lost": false, "duration_ms": 14,
            ]),
        line(
            6, "model_request", iteration: 2, time: 1.8,
            data: [
                "model": "gpt-test", "messages": 4, "estimated_prompt_tokens": 1100,
                "delta": [["role": "user", "content": "Output: 42"]],
            ]),
        line(
            7, "model_response", iteration: 2, time: 2.6,
            data: [
                "model": "gpt-test", "text": "Now what they are about.\n```repl\n\(secondCode)\n```",
                "input_tokens": 1100, "output_tokens": 70, "cost_usd": 0.0015, "latency_ms": 800,
            ], usage: usage(2000, 130, 0.0027, calls: 2, subcalls: 0)),
        line(8, "code_started", iteration: 2, time: 2.7, data: ["block": 1, "code": secondCode]),
        line(
            9, "subcall_started", iteration: 2, time: 2.8,
            data: ["call_id": "c1", "call": "llm_query", "model": "gpt-mini", "prompts": 1]),
        line(
            10, "subcall", iteration: 2, time: 3.3,
            data: [
                "call_id": "c1", "call": "llm_query", "model": "gpt-mini",
                "prompt": "Summarize these errors in five words: ['ERROR disk full sda', …]",
                "reply": "Disk full errors on sda.", "prompts": 1, "input_tokens": 40, "output_tokens": 8,
                "cost_usd": 0.0001, "latency_ms": 500, "error": NSNull(),
            ], usage: usage(2040, 138, 0.0028, calls: 3, subcalls: 1)),
        line(
            11, "subcall_started", iteration: 2, time: 3.4,
            data: ["call_id": "c2", "call": "rlm_query", "model": "gpt-mini", "prompts": 1]),
        line(
            12, "model_request", scope: "c2", depth: 1, iteration: 1, time: 3.5,
            data: [
                "model": "gpt-mini", "messages": 2, "estimated_prompt_tokens": 300,
                "delta": [["role": "user", "content": "Do the errors all come from one disk?"]],
            ]),
        line(
            13, "model_response", scope: "c2", depth: 1, iteration: 1, time: 4.0,
            data: [
                "model": "gpt-mini", "text": "```repl\n\(childCode)\n```", "input_tokens": 300, "output_tokens": 20,
                "cost_usd": 0.0002, "latency_ms": 500,
            ], usage: usage(2340, 158, 0.003, calls: 4, subcalls: 1)),
        line(
            14, "code_result", scope: "c2", depth: 1, iteration: 1, time: 4.1,
            data: [
                "block": 1, "code": childCode, "stdout": "42\n", "stderr": "", "error": NSNull(), "timed_out": false,
                "state_lost": false, "duration_ms": 3,
            ]),
        line(
            15, "final_answer", scope: "c2", depth: 1, iteration: 1, time: 4.2,
            data: ["answer": "yes: disk full, all on sda", "bare": false]),
        line(
            16, "subcall", iteration: 2, time: 4.3,
            data: [
                "call_id": "c2", "call": "rlm_query", "model": "gpt-mini",
                "prompt": "Do the errors all come from one disk?", "reply": "yes: disk full, all on sda", "prompts": 1,
                "input_tokens": 300, "output_tokens": 20, "cost_usd": 0.0002, "latency_ms": 900, "error": NSNull(),
            ], usage: usage(2340, 158, 0.003, calls: 4, subcalls: 2)),
        line(
            17, "code_result", iteration: 2, time: 4.4,
            data: [
                "block": 1, "code": secondCode, "stdout": "Disk full errors on sda. yes: disk full, all on sda\n",
                "stderr": "", "error": NSNull(), "timed_out": false, "state_lost": false, "duration_ms": 1700,
            ]),
        line(
            18, "final_answer", iteration: 2, time: 4.5,
            data: ["answer": "There are 42 ERROR lines, mostly disk-full errors.", "bare": false]),
        line(
            19, "run_finished", iteration: 2, time: 4.6,
            data: [
                "status": "answered", "answer": "There are 42 ERROR lines, mostly disk-full errors.",
                "reason": NSNull(), "signal": NSNull(), "iterations": 2, "duration_ms": 4600,
            ], usage: usage(2340, 158, 0.003, calls: 4, subcalls: 2)),
    ]

    /// Strings a hostile model or cell could put anywhere in a trajectory; each must reach the page as text.
    static let scriptTag = "<script>document.documentElement.setAttribute('data-pwned','yes')</script>"
    static let closeScript = "</script><script>document.title='pwned'</script>"
    static let imgOnError = "<img src=x onerror=\"document.title='pwned'\">"
    static let jsLink = "<a href=\"javascript:document.title='pwned'\">click</a> javascript:document.title='pwned'"
    static let comment = "<!-- <script>document.title='pwned'</script> -->"
    static let svg = "<svg onload=\"document.body.id='pwned'\"></svg>"
    static let hostileTexts = [scriptTag, closeScript, imgOnError, jsLink, comment, svg]

    static let hostile: [String] = [
        line(
            0, "run_started", iteration: 0, time: 0, run: "h1",
            data: ["query": scriptTag, "model": imgOnError, "sub_model": closeScript, "budget": ["x": svg]]),
        line(
            1, "model_response", iteration: 1, time: 1, run: "h1",
            data: [
                "model": "m", "text": "\(imgOnError)\n```repl\nprint('\(closeScript)')\n```\n\(jsLink)",
                "input_tokens": 1, "output_tokens": 1, "cost_usd": NSNull(), "latency_ms": 1,
            ], usage: ["input_tokens": 2, "output_tokens": 1, "cost_usd": "<b>bold</b>"]),
        line(
            2, "code_result", iteration: 1, time: 2, run: "h1",
            data: [
                "block": "<b>1</b>", "code": "x = '\(closeScript)'  # \(comment)\n\(svg)", "stdout": closeScript,
                "stderr": comment, "error": ["type": imgOnError, "message": svg], "timed_out": false,
                "state_lost": false, "duration_ms": "soon", "\(imgOnError)": jsLink,
            ]),
        line(
            3, "subcall_started", iteration: 1, time: 3, run: "h1",
            data: ["call_id": scriptTag, "call": "rlm_query", "model": svg, "prompts": 1]),
        line(
            4, "model_response", scope: scriptTag, depth: 1, iteration: 1, time: 4, run: "h1",
            data: ["model": "m", "text": "FINAL(\(closeScript))", "input_tokens": 1, "output_tokens": 1]),
        line(5, imgOnError, iteration: 1, time: 5, run: "h1", data: [svg: scriptTag, "note": jsLink]),
        line(6, "note", iteration: 1, time: 6, run: closeScript, data: ["note": "a line\u{2028}separator"]),
        line(7, "error", iteration: 1, time: 7, run: "h1", data: ["message": "x"]).replacingOccurrences(
            of: #""data":{"message":"x"}"#, with: #""data":"<script>document.title='pwned'</script>""#),
        #"{"schema":1,"run":"h1","seq":8,"kind":"note","data":{"note":"<img src=x onerror=alert(1)>"#,
    ]

    /// A realistic trajectory of about `bytes`: one run of many iterations, each with a reply, a cell with long
    /// output and three llm_query sub-calls; every tenth iteration starts an rlm_query child.
    static func large(bytes: Int) -> [String] {
        var lines = [String]()
        var total = 0, seq = 0, iteration = 0, calls = 0
        var time = 0.0, input = 0, output = 0
        func add(_ kind: String, scope: String = "root", depth: Int = 0, data: [String: Any], withUsage: Bool = false) {
            time += 0.05
            let text = line(
                seq, kind, scope: scope, depth: depth, iteration: iteration, time: time, run: "r-large", data: data,
                usage: withUsage
                    ? usage(input, output, Double(input + output) / 1e6, calls: seq, subcalls: calls)
                    : nil)
            seq += 1
            total += text.utf8.count + 1
            lines.append(text)
        }
        let prose = String(repeating: "The log shows disk errors on sda; counting them by hour. ", count: 40)
        let code = String(
            repeating: "for l in context.splitlines():\n    if 'ERROR' in l:\n        n += 1\n", count: 10)
        let out = String(repeating: "2025-10-09 08:53:20 ERROR disk full on /dev/sda1 (errno 28)\n", count: 120)
        while total < bytes {
            iteration += 1
            add(
                "model_request",
                data: ["model": "gpt-test", "messages": iteration * 2, "delta": [["role": "user", "content": out]]])
            input += 2000
            output += 400
            add(
                "model_response",
                data: [
                    "model": "gpt-test", "text": prose + "\n```repl\n" + code + "```", "input_tokens": 2000,
                    "output_tokens": 400, "cost_usd": 0.002, "latency_ms": 900,
                ], withUsage: true)
            add("code_started", data: ["block": 1, "code": code])
            for _ in 0..<3 {
                calls += 1
                add(
                    "subcall_started",
                    data: ["call_id": "c\(calls)", "call": "llm_query", "model": "gpt-mini", "prompts": 1])
                input += 300
                output += 30
                add(
                    "subcall",
                    data: [
                        "call_id": "c\(calls)", "call": "llm_query", "model": "gpt-mini", "prompt": out,
                        "reply": "Disk full.", "prompts": 1, "input_tokens": 300, "output_tokens": 30,
                        "cost_usd": 0.0001, "latency_ms": 300, "error": NSNull(),
                    ], withUsage: true)
            }
            if iteration % 10 == 0 {
                calls += 1
                let id = "c\(calls)"
                add("subcall_started", data: ["call_id": id, "call": "rlm_query", "model": "gpt-mini", "prompts": 1])
                add(
                    "model_response", scope: id, depth: 1,
                    data: [
                        "model": "gpt-mini", "text": "```repl\nprint(len(context))\n```", "input_tokens": 100,
                        "output_tokens": 10, "cost_usd": 0.0001, "latency_ms": 100,
                    ], withUsage: true)
                add(
                    "code_result", scope: id, depth: 1,
                    data: [
                        "block": 1, "code": "print(len(context))", "stdout": "7\n", "stderr": "", "error": NSNull(),
                        "timed_out": false, "state_lost": false, "duration_ms": 2,
                    ])
                add("final_answer", scope: id, depth: 1, data: ["answer": "7", "bare": false])
                add(
                    "subcall",
                    data: [
                        "call_id": id, "call": "rlm_query", "model": "gpt-mini", "prompt": "how many?", "reply": "7",
                        "prompts": 1, "input_tokens": 100, "output_tokens": 10, "cost_usd": 0.0001, "latency_ms": 400,
                        "error": NSNull(),
                    ], withUsage: true)
            }
            add(
                "code_result",
                data: [
                    "block": 1, "code": code, "stdout": out, "stderr": "", "error": NSNull(), "timed_out": false,
                    "state_lost": false, "duration_ms": 40,
                ])
        }
        add("final_answer", data: ["answer": "Many disk errors.", "bare": false])
        add(
            "run_finished",
            data: [
                "status": "answered", "answer": "Many disk errors.", "reason": NSNull(), "signal": NSNull(),
                "iterations": iteration, "duration_ms": Int(time * 1000),
            ], withUsage: true)
        return lines
    }
}
