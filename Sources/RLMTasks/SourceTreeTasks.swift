import Foundation
import RLM

/// Source tree: a generated Python project as documents, each starting with `### <path>` (the convention of
/// a directory `--context`), and a question about where something is defined or how many functions a package has.
enum SourceTreeTaskGenerator {
    struct Function {
        var name: String
        var params: [String]
        var doc: String
        var body: [String]
    }

    struct Class {
        var name: String
        var doc: String
        var methods: [Function]
    }

    struct File {
        var path: String
        var doc: String
        var imports: [String]
        var constants: [String]
        var classes: [Class]
        var functions: [Function]
        /// Non-Python files (README, pyproject) are kept as text.
        var verbatim: String?

        var definitionCount: Int { functions.count + classes.reduce(0) { $0 + $1.methods.count } }

        func render() -> String {
            if let verbatim { return "### \(path)\n\(verbatim)" }
            var out = "### \(path)\n\"\"\"\(doc)\"\"\"\n"
            if !imports.isEmpty { out += "\n" + imports.joined(separator: "\n") + "\n" }
            if !constants.isEmpty { out += "\n" + constants.joined(separator: "\n") + "\n" }
            for type in classes {
                out += "\n\nclass \(type.name):\n    \"\"\"\(type.doc)\"\"\"\n"
                for method in type.methods { out += "\n" + render(method, indent: "    ") }
            }
            for function in functions { out += "\n\n" + render(function, indent: "") }
            return out
        }

        private func render(_ function: Function, indent: String) -> String {
            var out = "\(indent)def \(function.name)(\(function.params.joined(separator: ", "))):\n"
            out += "\(indent)    \"\"\"\(function.doc)\"\"\"\n"
            for line in function.body { out += "\(indent)    \(line)\n" }
            return out
        }
    }

    static func make(rng: inout SeededRandom, sizeBytes: Int) -> GeneratedTask {
        var files = tree(rng: &rng, sizeBytes: sizeBytes)
        if rng.chance(0.5) {
            return whereDefined(&files, rng: &rng)
        }
        return functionCount(files, rng: &rng)
    }

    /// "Which file defines the function `x`?": `x` is renamed to a fresh name in one file; a near-miss (`x` with an
    /// `s`, or a leading underscore) is defined in another, and a third imports and calls `x`.
    private static func whereDefined(_ files: inout [File], rng: inout SeededRandom) -> GeneratedTask {
        var used = Set<String>()
        for file in files {
            for function in file.functions { used.insert(function.name) }
            for type in file.classes { for method in type.methods { used.insert(method.name) } }
        }
        let (name, nearMiss) = freshName(avoiding: used, rng: &rng)
        let candidates = files.indices.filter { files[$0].path.hasPrefix("src/") && !files[$0].functions.isEmpty }
        // A tree too small to have a module with functions (a few KB) asks the other question.
        if candidates.isEmpty { return functionCount(files, rng: &rng) }
        let owner = rng.pick(candidates)
        files[owner].functions[rng.int(in: 0..<files[owner].functions.count)].name = name
        let others = rng.shuffled(candidates.filter { $0 != owner })
        if let near = others.first {
            files[near].functions[rng.int(in: 0..<files[near].functions.count)].name = nearMiss
        }
        if others.count > 1 {
            let caller = others[1]
            let module = String(files[owner].path.dropLast(3)).replacingOccurrences(of: "/", with: ".")
            files[caller].imports.append("from \(module) import \(name)")
            let index = rng.int(in: 0..<files[caller].functions.count)
            files[caller].functions[index].body.insert("checked = \(name)(\(rng.pick(Vocabulary.params)))", at: 0)
        }
        return GeneratedTask(
            query: "Which file defines the function `\(name)`? Answer with the file's path.",
            context: .documents(files.map { $0.render() }), answer: files[owner].path, answerKind: .path)
    }

    /// "How many functions are defined in files under src/net/?": every `def`, methods included, in that directory
    /// and its subdirectories (tests/net/ is a near miss).
    private static func functionCount(_ files: [File], rng: inout SeededRandom) -> GeneratedTask {
        let packages = Set(
            files.compactMap { file -> String? in
                let parts = file.path.split(separator: "/")
                return parts.count >= 3 && parts[0] == "src" ? String(parts[1]) : nil
            }
        ).sorted()
        let package = rng.pick(packages)
        let prefix = "src/\(package)/"
        let count = files.filter { $0.path.hasPrefix(prefix) }.reduce(0) { $0 + $1.definitionCount }
        return GeneratedTask(
            query: "How many functions are defined in files under \(prefix)? Count every `def`, methods included.",
            context: .documents(files.map { $0.render() }), answer: String(count), answerKind: .integer)
    }

    /// Files until `sizeBytes`: a README and pyproject first, then modules spread over packages, subpackages and
    /// tests.
    private static func tree(rng: inout SeededRandom, sizeBytes: Int) -> [File] {
        let project = "\(rng.pick(Vocabulary.stars))\(rng.pick(["kit", "flow", "hub", "works", "ops"]))"
        var files = [
            File(
                path: "README.md", doc: "", imports: [], constants: [], classes: [], functions: [],
                verbatim: "# \(project)\n\nInternal service toolkit. Code lives under src/, tests under tests/.\n"
                    + "Run `python -m pytest` from the repository root.\n"),
            File(
                path: "pyproject.toml", doc: "", imports: [], constants: [], classes: [], functions: [],
                verbatim:
                    "[project]\nname = \"\(project)\"\nversion = \"0.\(rng.int(in: 1...40)).\(rng.int(in: 0...9))\"\n"
                    + "requires-python = \">=3.10\"\n"),
        ]
        var bytes = files.reduce(0) { $0 + $1.render().utf8.count }
        // Directories grow with the size: big trees get subpackages.
        let packageCount = min(Vocabulary.packages.count, max(4, sizeBytes / 40_000))
        var directories = rng.shuffled(Vocabulary.packages).prefix(packageCount).map { "src/\($0)" }
        if sizeBytes >= 500_000 {
            for package in directories where rng.chance(0.6) {
                let subs = rng.shuffled(Vocabulary.subpackages).prefix(rng.int(in: 1...3))
                directories += subs.map { "\(package)/\($0)" }
            }
        }
        let testDirectories = directories.filter { $0.split(separator: "/").count == 2 }.map {
            "tests/" + $0.dropFirst(4)
        }
        var usedNames = [String: Set<String>]()
        for directory in directories + testDirectories {
            let file = File(
                path: "\(directory)/__init__.py", doc: "The \(directory.split(separator: "/").last!) package.",
                imports: [], constants: [], classes: [], functions: [])
            bytes += file.render().utf8.count
            files.append(file)
        }
        while bytes < sizeBytes {
            let isTest = rng.chance(0.2)
            let directory = isTest ? rng.pick(testDirectories) : rng.pick(directories)
            var module = rng.pick(Vocabulary.modules)
            if isTest { module = "test_" + module }
            var name = module
            var suffix = 2
            while usedNames[directory, default: []].contains(name) {
                name = "\(module)\(suffix)"
                suffix += 1
            }
            usedNames[directory, default: []].insert(name)
            let file =
                isTest
                ? testFile(path: "\(directory)/\(name).py", rng: &rng)
                : moduleFile(path: "\(directory)/\(name).py", directories: directories, rng: &rng)
            bytes += file.render().utf8.count
            files.append(file)
        }
        return files
    }

    private static func functionName(_ rng: inout SeededRandom) -> String {
        rng.chance(0.7)
            ? "\(rng.pick(Vocabulary.verbs))_\(rng.pick(Vocabulary.objects))"
            : "\(rng.pick(Vocabulary.verbs))_\(rng.pick(Vocabulary.qualifiers))_\(rng.pick(Vocabulary.objects))"
    }

    /// A function name defined nowhere in the tree, and its near miss (with an `s`, or a leading underscore), also
    /// unused. Random tries first; big trees use most two-word names, so then every combination is tried in order,
    /// and numbered names guarantee an end.
    private static func freshName(avoiding used: Set<String>, rng: inout SeededRandom) -> (String, String) {
        let plural = rng.chance(0.5)
        func nearMiss(_ name: String) -> String { plural ? name + "s" : "_" + name }
        func free(_ name: String) -> Bool { !used.contains(name) && !used.contains(nearMiss(name)) }
        for _ in 0..<200 {
            let name = functionName(&rng)
            if free(name) { return (name, nearMiss(name)) }
        }
        let verb = rng.pick(Vocabulary.verbs)
        for qualifier in rng.shuffled(Vocabulary.qualifiers) {
            for object in rng.shuffled(Vocabulary.objects) where free("\(verb)_\(qualifier)_\(object)") {
                let name = "\(verb)_\(qualifier)_\(object)"
                return (name, nearMiss(name))
            }
        }
        var number = 2
        while true {
            let name = "\(verb)_\(Vocabulary.objects[0])_\(number)"
            if free(name) { return (name, nearMiss(name)) }
            number += 1
        }
    }

    private static func function(_ name: String, rng: inout SeededRandom, method: Bool) -> Function {
        var params = method ? ["self"] : []
        for param in rng.shuffled(Vocabulary.params).prefix(rng.int(in: 0...3)) { params.append(param) }
        if rng.chance(0.3) { params.append("strict=False") }
        let first = params.first { $0 != "self" && !$0.contains("=") } ?? "None"
        let words = name.split(separator: "_").map(String.init)
        let doc =
            "\(words[0].prefix(1).uppercased() + words[0].dropFirst()) the \(words.dropFirst().joined(separator: " "))."
        var body = [String]()
        switch rng.int(in: 0..<5) {
        case 0:
            body = [
                "result = []", "for item in \(first == "None" ? "range(3)" : first) or []:",
                "    result.append(item)", "return result",
            ]
        case 1:
            body = [
                "if \(first) is None:", "    raise ValueError(\"\(name): missing input\")",
                "return str(\(first)).strip()",
            ]
        case 2:
            body = [
                "value = \(method ? "self." : "")\(rng.pick(["_cache", "_state", "_buffer"])).get(\"\(rng.pick(Vocabulary.objects))\")",
                "if value:", "    return value", "return \(rng.int(in: 0...100))",
            ]
        case 3:
            body = [
                "attempts = 0", "while attempts < \(rng.int(in: 2...5)):", "    attempts += 1",
                "    if \(first) is not None:", "        break", "return attempts",
            ]
        default:
            body = ["logger.debug(\"\(name) called\")", "return \(first)"]
        }
        return Function(name: name, params: params, doc: doc, body: body)
    }

    private static func moduleFile(path: String, directories: [String], rng: inout SeededRandom) -> File {
        var imports = ["import logging"]
        for module in rng.shuffled(["os", "re", "json", "time", "typing"]).prefix(rng.int(in: 0...2)) {
            imports.append("import \(module)")
        }
        if rng.chance(0.5) {
            let other = rng.pick(directories).replacingOccurrences(of: "/", with: ".")
            imports.append("from \(other) import \(rng.pick(Vocabulary.modules))")
        }
        let constants =
            ["logger = logging.getLogger(__name__)"]
            + (0..<rng.int(in: 0...2)).map { _ in
                "\(rng.pick(Vocabulary.objects).uppercased())_LIMIT = \(rng.int(in: 1...512))"
            }
        var classes = [Class]()
        for _ in 0..<rng.int(in: 0...2) {
            let name = rng.pick(Vocabulary.classPrefixes) + rng.pick(Vocabulary.classNouns)
            var methods = [function("__init__", rng: &rng, method: true)]
            methods[0].body = ["self._cache = {}", "self._state = None", "self._buffer = {}"]
            methods[0].doc = "Create an empty \(name)."
            for _ in 0..<rng.int(in: 1...4) { methods.append(function(functionName(&rng), rng: &rng, method: true)) }
            classes.append(Class(name: name, doc: "Keeps \(rng.pick(Vocabulary.objects)) state.", methods: methods))
        }
        let functions = (0..<rng.int(in: 2...7)).map { _ in function(functionName(&rng), rng: &rng, method: false) }
        let topic = path.split(separator: "/").dropFirst().joined(separator: " ").replacingOccurrences(
            of: ".py", with: "")
        return File(
            path: path, doc: "Helpers for \(topic).", imports: imports, constants: constants, classes: classes,
            functions: functions)
    }

    private static func testFile(path: String, rng: inout SeededRandom) -> File {
        let functions = (0..<rng.int(in: 2...6)).map { _ -> Function in
            let target = functionName(&rng)
            return Function(
                name: "test_\(target)", params: [], doc: "\(target) behaves on simple input.",
                body: ["value = \(rng.int(in: 0...99))", "assert value >= 0"])
        }
        return File(
            path: path, doc: "Tests.", imports: ["import pytest"], constants: [], classes: [], functions: functions)
    }
}
