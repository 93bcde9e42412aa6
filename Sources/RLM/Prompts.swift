import Foundation

/// The words the engine says to the model. Our own; short enough for a 4K-token window.
enum Prompts {
    /// Describes the context from what the sandbox measured: type, total size, piece sizes. `nil`: none was given.
    static func describe(_ context: ContextSummary?) -> String {
        guard let context else {
            return "`context` is an empty str: no context came with this question"
        }
        if context.isEmpty {
            return "`context` is an empty \(context.type): the context given holds no data"
        }
        switch context.shape {
        case .text:
            return "`context` is a str of \(grouped(context.characters)) characters (\(grouped(context.lines)) lines)"
        case .documents:
            let sizes = context.itemSizes.prefix(5).map(grouped).joined(separator: ", ")
            let more = context.items > 5 ? ", …" : ""
            return "`context` is a list of \(grouped(context.items)) str documents, \(grouped(context.characters)) "
                + "characters in total (sizes: \(sizes)\(more)); each document starts with a line naming its source"
        case .json:
            switch context.type {
            case "dict":
                let keys = context.keys.map { "'\($0)'" }.joined(separator: ", ")
                return "`context` is a dict (\(grouped(context.characters)) characters as JSON) with "
                    + "\(grouped(context.items)) keys: \(keys)" + (context.items > context.keys.count ? ", …" : "")
            case "list":
                return "`context` is a list of \(grouped(context.items)) items (\(grouped(context.characters)) "
                    + "characters as JSON)"
            default:
                return "`context` is a \(context.type) (\(grouped(context.characters)) characters as JSON)"
            }
        }
    }

    /// Everything that depends on the context comes last (the examples' shape aside), so a local server's prompt cache
    /// keeps the rest from one run to the next: on one CPU thread that prefix costs half a minute to read.
    static func system(context: ContextSummary?, subWindowTokens: Int?, outputChars: Int, canRecurse: Bool) -> String {
        let window =
            subWindowTokens.map { " Its window is about \(grouped($0)) tokens (≈ \(grouped($0 * 3)) characters)." }
            ?? ""
        let recurse =
            canRecurse
            ? "- `rlm_query(prompt, context=None)`: gives a sub-question and its own context to a helper that works "
                + "like you (with its own REPL) and returns its answer.\n"
            : "- `rlm_query(prompt, context=None)`: like `llm_query` on the prompt and context together.\n"
        return """
            You answer a question about a context too large to read at once. You work in a Python REPL.

            The REPL already has:
            - \(hasData(context) ? "`context`: the data, described at the end of this message. It is already loaded: never assign to `context`, never make up sample data." : describe(context) + ".")
            - `llm_query(prompt)`: asks a language model and returns its reply (a str). It sees only the prompt you \
            pass, so put the text it must read into the prompt.\(window)
            - `llm_query_batched(prompts)`: the same for a list of prompts, run in parallel; returns a list of str.
            \(recurse)- `SHOW_VARS()`: lists your variables.

            To run code, put it in a block that starts with ```repl and ends with ```. Variables persist between \
            blocks. You see only what the code prints, cut to \(grouped(outputChars)) characters, so print counts \
            and short samples, not whole texts.

            When the output settles the question, reply with one line of plain text, outside any code block:
            FINAL(your answer)
            or, if the answer is in a variable: FINAL_VAR(variable_name)
            Give only the answer (a number, a name, a short phrase), in the form the question asks for.

            \(examples(for: context))

            \(meaning(for: context))

            \(rules(context))
            """ + (hasData(context) ? "\n\nThe data: \(describe(context))." : "")
    }

    /// Whether there is data to work on.
    static func hasData(_ context: ContextSummary?) -> Bool {
        context.map { !$0.isEmpty } ?? false
    }

    static func rules(_ context: ContextSummary?) -> String {
        guard hasData(context) else {
            return "Rules: there is no data to search. Answer from the question itself; use the REPL only to "
                + "compute. Never make up data. Wait for the REPL's output before you answer; never guess it."
        }
        return """
            Rules: `context` holds all of the data, so work on the whole of it, not only the start shown to you. Go \
            line by line (or document by document) with simple `in` tests that match the exact format you see in \
            the data; print a few matches to check them. When several lines match, pick the one that names exactly \
            what the question names (kappa-17 is not kappa-170). When the question has steps (find one thing, then \
            something about it), print the first result and check it before the next step. Wait for the REPL's \
            output before you answer; never guess it.
            """
    }

    /// Two short worked examples shaped like the context, so a small model copies a pattern that works on it.
    static func examples(for context: ContextSummary?) -> String {
        if context?.shape == .documents {
            return """
                Example 1. Question: which file defines the function `load_config`?
                ```repl
                for doc in context:
                    if "def load_config(" in doc:
                        print(doc.splitlines()[0])
                ```
                The REPL prints: ### src/app/config.py. Then you reply:
                FINAL(src/app/config.py)

                Example 2. Question: what is the total amount of the invoices of client K-7?
                ```repl
                total = 0
                for doc in context:
                    if "client: K-7\\n" in doc:
                        for line in doc.splitlines():
                            if line.startswith("amount:"):
                                total += float(line.split()[-1].replace("$", ""))
                print(total)
                ```
                The REPL prints 1234.5. Then you reply:
                FINAL(1234.5)
                """
        }
        return """
            Example 1. Question: how many WARN lines mention "timeout"?
            ```repl
            hits = [line for line in context.splitlines() if " WARN " in line and "timeout" in line]
            print(len(hits))
            print(hits[:3])
            ```
            The REPL prints 17 and three matching lines, which you check. Then you reply:
            FINAL(17)

            Example 2. Question: what is the port of server alpha-3?
            ```repl
            for line in context.splitlines():
                if "alpha-3" in line and "port" in line:
                    print(line)
            ```
            The REPL prints: alpha-3 listens on port 8443. Then you reply:
            FINAL(8443)
            """
    }

    /// When the answer turns on what text means, not on words it contains: a worked example of asking the sub-model
    /// about each candidate. Kept short: it is in every request.
    static func meaning(for context: ContextSummary?) -> String {
        guard hasData(context) else { return "" }
        let items =
            context?.shape == .documents
            ? "items = [d for d in context if \"refund\" in d.lower()]"
            : "items = [x for x in context.splitlines() if \"refund\" in x.lower()]  # or paragraphs, records…"
        return """
            When the answer depends on what text means (which item reports a problem, how many are complaints) and \
            words alone cannot tell, find the candidates with Python, then ask `llm_query_batched` one short yes/no \
            question per candidate, with its text:
            ```repl
            \(items)
            print(len(items))
            replies = llm_query_batched(["Answer yes or no. Does this text ask for a refund because the item broke?\\n\\n" + x[:1500] for x in items])
            for x, r in zip(items, replies):
                print(r.strip()[:12], "|", x[:100].replace("\\n", " "))
            ```
            """
    }

    static func firstUser(query: String, context: ContextSummary?, format: String? = nil) -> String {
        var text = "Question: \(query)\n"
        if let format, !format.isEmpty {
            text +=
                "\nWhat `context` holds, measured over the whole of it (names and values exactly as written):\n"
                + "```text\n\(format)\n```\n"
        }
        if let sample = sample(of: context) {
            let more = sample.complete ? "" : "; the full data is much longer"
            text +=
                "\nHow `context` begins (\(sample.note)\(more)):\n```text\n\(sample.text)\n\(sample.complete ? "" : "…\n")```\n"
            text += "\nStart by exploring `context` in a ```repl block."
        } else {
            text += "\nThere is no context to explore: answer the question itself."
        }
        return text
    }

    /// The start of the context as the sandbox measured it; `nil` when there is nothing to show.
    static func sample(of context: ContextSummary?) -> (text: String, note: String, complete: Bool)? {
        guard let context, hasData(context) else { return nil }
        switch context.shape {
        case .text, .json:
            guard !context.head.isEmpty else { return nil }
            let complete = context.head.unicodeScalars.count >= context.characters
            return (context.head, context.shape == .json ? "as JSON" : "a str", complete)
        case .documents:
            guard !context.itemHeads.isEmpty else { return nil }
            // Heads of a few documents: one sample invites filtering on its id.
            let text = context.itemHeads.enumerated().map { index, head in "context[\(index)]:\n" + head }
                .joined(separator: "\n…\n")
            return (text, "the heads of the first \(context.itemHeads.count) of \(context.items) documents", false)
        }
    }

    static func cellOutput(index: Int, of total: Int, result: CellResult, limit: Int) -> String {
        var body = result.stdout
        if !result.stderr.isEmpty { body += (body.isEmpty || body.hasSuffix("\n") ? "" : "\n") + result.stderr }
        if let error = result.error {
            if !body.isEmpty && !body.hasSuffix("\n") { body += "\n" }
            body += error.traceback.isEmpty ? "\(error.type): \(error.message)" : error.traceback
            // A timeout's traceback ends in KeyboardInterrupt, which says nothing about why: say it plainly.
            if result.timedOut && !error.traceback.isEmpty { body += "\n\(error.type): \(error.message)" }
            if result.stateLost { body += "\n(the REPL was restarted: variables are gone, `context` is reloaded)" }
        }
        if body.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            body = "(no output — print what you want to see)"
        }
        let label = total > 1 ? "REPL output of block \(index + 1)" : "REPL output"
        return "\(label):\n```text\n\(headTail(body, limit: limit))\n```"
    }

    static func afterCode(outputs: [String], iteration: Int, maxIterations: Int, unconfirmedAnswer: Bool) -> String {
        var text = outputs.joined(separator: "\n\n")
        if unconfirmedAnswer {
            text +=
                "\n\nYou wrote FINAL(…) in the same reply as code, before seeing its output. Check the output "
                + "above: if it confirms the answer, reply with the FINAL line again; if not, continue."
        }
        let left = maxIterations - iteration
        text +=
            "\n\nStep \(iteration) of \(maxIterations) (\(left) left). Continue with a ```repl block, "
            + "or reply with FINAL(answer) if the output settles the question."
        return text
    }

    static let repeated = """
        You already ran exactly this code, and its output is above. If that output answers the question, reply now \
        with one line: FINAL(answer). If it does not, write different code.
        """

    /// A step's code found nothing: what `context` really holds for the strings it searched for.
    static func foundNothing(near: String, wording: (searched: String, present: String?)?) -> String {
        var text =
            "Your code found nothing. What `context` holds for the strings your code searched for:\n```text\n\(near)\n"
            + "```\nMatch the exact form shown (case, spacing, punctuation, field names), then try again."
        if let wording {
            let by = wording.present.map { "by a word it does use (such as \"\($0.prefix(40))\")" } ?? "by one key word"
            text +=
                " The data does not use the question's wording (\"\(wording.searched.prefix(60))\"): if the question is "
                + "about what the text means, select candidates \(by), then ask `llm_query_batched` a yes/no question "
                + "about each candidate's text and count or pick by the replies (as in the example)."
        }
        return text
    }

    /// The question names things the code has not tested.
    static func untested(_ terms: [String]) -> String {
        let list = terms.prefix(4).map { "`\($0)`" }.joined(separator: ", ")
        return "Check: the question names \(list), which your code does not test yet. Every condition of the "
            + "question must be in the code."
    }

    /// The code names a near miss the output showed earlier.
    static func usesNearMiss(_ misses: [(term: String, seen: String)]) -> String {
        let list = misses.prefix(3).map { "`\($0.seen)`" }.joined(separator: ", ")
        let asked = misses.first.map { "`\($0.term)`" } ?? ""
        return "Careful: your code uses \(list), another name than the \(asked) the question asks about. Work on the "
            + "lines that name \(asked) exactly."
    }

    /// A `FINAL` computed by code that worked on a near miss.
    static func answerFromNearMiss(_ answer: String) -> String {
        "Your code gave FINAL(\(answer.prefix(200))), but it worked on another name than the question's (see above), "
            + "so that answer was not taken. Find the line about the exact name, then answer."
    }

    /// A literal in one case searched in text turned to the other.
    static func caseMismatch(_ mismatch: (literal: String, fixed: String)) -> String {
        "Your code looks for \"\(mismatch.literal.prefix(60))\" in text it changed the case of, so it can never match: "
            + "write \"\(mismatch.fixed.prefix(60))\" instead."
    }

    /// Conditions copied from the output that the question does not ask for.
    static func copiedConditions(_ literals: [String]) -> String {
        let list = literals.prefix(3).map { "`\($0)`" }.joined(separator: ", ")
        return "Careful: your code now also tests \(list), copied from the output above; the question does not ask "
            + "for it, so it changes the answer. Test only what the question names."
    }

    /// The code now tests everything the question names.
    static func allTested(_ terms: [String]) -> String {
        let list = terms.prefix(4).map { "`\($0)`" }.joined(separator: ", ")
        return "Your code now tests every condition the question names (\(list)). If its output answers the "
            + "question, reply with FINAL(answer); add no condition the question does not ask for."
    }

    /// The output holds near misses of what the question names.
    static func nearMisses(_ misses: [(term: String, seen: [String])]) -> String {
        let list = misses.prefix(3).map { miss in
            "`\(miss.term)` also matched \(miss.seen.map { "`\($0)`" }.joined(separator: ", "))"
        }
        .joined(separator: "; ")
        return "Careful: \(list) in the output above. Those are other names; keep only exact matches, e.g. "
            + "re.search(r\"(?<![\\w-])NAME(?![\\w-])\", line)."
    }

    /// An answer no output shows: asked for once, then accepted.
    static func unsupported(_ answer: String) -> String {
        let value = answer.prefix(200)
        let name =
            value.wholeMatch(of: #/[A-Za-z_][A-Za-z0-9_]*/#) != nil && value.contains("_")
            ? " FINAL takes the value itself, as printed, not a variable name or a description." : ""
        return "No REPL output so far shows `\(value)`.\(name) Do not guess: print the answer with code in a ```repl "
            + "block, then reply with FINAL(value)."
    }

    static let repeatedFailure = """
        You sent again the code that just failed; its error is above. Fix what the error points at, and write the \
        corrected code in a ```repl block.
        """

    static let noCode = """
        Your reply had no ```repl block and no FINAL(…) line. Write Python in a ```repl block to inspect `context`, \
        or, if you know the answer, reply with one line: FINAL(answer)
        """

    static func missingVariable(_ name: String) -> String {
        "FINAL_VAR(\(name)): there is no variable named `\(name)` in the REPL. Assign it in a ```repl block first, "
            + "or reply with FINAL(answer)."
    }

    static let lastChance = """
        You have no steps left. Based on what the REPL has shown you, reply now with your best answer as one line: \
        FINAL(answer)
        """

    /// Keeps the head and tail of `text` within `limit` Unicode scalars, saying how much was cut. Scalars, not
    /// `Character`s: a single grapheme cluster can hold megabytes of combining marks.
    static func headTail(_ text: String, limit: Int) -> String {
        let scalars = text.unicodeScalars
        guard scalars.count > limit, limit > 40 else { return text }
        let half = (limit - 40) / 2
        let cut = scalars.count - 2 * half
        var head = String.UnicodeScalarView(scalars.prefix(half))
        head.append(contentsOf: "\n… [\(cut) characters cut] …\n".unicodeScalars)
        head.append(contentsOf: scalars.suffix(half))
        return String(head)
    }

    static func grouped(_ value: Int) -> String {
        let digits = String(value)
        var out = ""
        for (i, ch) in digits.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(ch)
        }
        return String(out.reversed())
    }
}
