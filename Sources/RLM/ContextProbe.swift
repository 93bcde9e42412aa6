import Foundation

/// Code the engine itself runs in the REPL to help a model see the data as it really is: a description of the
/// context's format, measured over a streamed sample of the whole of it, and the real lines near what a search that
/// found nothing looked for. Both run in the sandbox like any cell (the context never leaves it), in a namespace of
/// their own, so the model's namespace is neither read nor changed. What they print is context data: the prompts treat
/// it as such.
enum ContextProbe {
    /// A cell that prints the context's format: JSON lines with their field paths, CSV with its header and columns,
    /// key=value logs with their keys and few-valued fields, "Name: value" fields of documents, a folder's file types
    /// and each small folder file's own format — values exactly as written, so the model matches their case and form.
    /// With `terms` (what the question names), also how each appears in the data: the whole-word forms it takes
    /// (`503` as `status=503`), or that it is only there in another case, or nowhere.
    static func describeCell(limit: Int, terms: [String] = []) -> String {
        isolated(describeSource + "\n_rlm_describe(_rlm_context, \(limit), \(decoded(terms)))\n")
    }

    /// A cell that prints, for each string the model's code searched for, whether it occurs as written, only in another
    /// case, or not at all — with real lines that hold it (or its longest word).
    static func nearCell(searching words: [String], limit: Int) -> String {
        isolated(nearSource + "\n_rlm_near(_rlm_context, \(decoded(words)), \(limit))\n")
    }

    /// A cell that runs `source` in a namespace of its own with the real builtins and `_rlm_context` bound to
    /// `context`: the model's namespace is neither read (a rebound `print`, `len` or `json` cannot break the probe)
    /// nor written. The source travels as base64, so nothing in it can end a literal of the cell.
    private static func isolated(_ source: String) -> String {
        let encoded = Data(source.utf8).base64EncodedString()
        return "__import__('builtins').exec(__import__('base64').b64decode('\(encoded)').decode(), "
            + "{'__builtins__': __import__('builtins'), '_rlm_context': context})\n"
    }

    /// A Python expression for a list of strings, carried as base64 JSON.
    private static func decoded(_ words: [String]) -> String {
        let json = (try? JSONSerialization.data(withJSONObject: words)) ?? Data("[]".utf8)
        return "__import__('json').loads(__import__('base64').b64decode('\(json.base64EncodedString())'))"
    }

    /// The string literals a cell searches for: quoted strings of 2 to 80 characters with a letter or digit, not
    /// format or encoding words, at most `limit` of them, longest first.
    static func searchLiterals(in code: String, limit: Int = 6) -> [String] {
        var found = [String]()
        let skip: Set<String> = ["utf-8", "utf8", "ascii", "latin-1", "ignore", "replace", "strict", "rb", "wb"]
        for match in code.matches(of: literal) {
            var text = String(match.output.1 ?? match.output.2 ?? "")
            // f-strings: the fixed parts only.
            text = text.replacing(#/\{[^}]*\}/#, with: " ").replacing(#/\s+/#, with: " ")
                .trimmingCharacters(in: .whitespaces)
            text = text.replacingOccurrences(of: "\\n", with: "").replacingOccurrences(of: "\\t", with: "")
            guard (2...80).contains(text.count), text.contains(where: { $0.isLetter || $0.isNumber }),
                !skip.contains(text.lowercased()), !found.contains(text)
            else { continue }
            found.append(text)
        }
        return Array(found.sorted { $0.count > $1.count }.prefix(limit))
    }

    /// When a search used the question's own wording and the data does not: a phrase of three words or more that
    /// occurs nowhere, or a word of the question (or one sharing its first five letters: `complaint` for
    /// `complaints`) that occurs nowhere in any case. Returns it, with a searched string that does occur as written.
    /// Such a question is usually about meaning, which keywords cannot settle.
    static func questionWording(searched: [String], near: String, question: String) -> (
        searched: String, present: String?
    )? {
        func occurs(_ word: String, _ how: String) -> Bool { near.contains("\(quoted(word)) occurs \(how)") }
        let questionWords = question.lowercased().split { !$0.isLetter }.map(String.init).filter { $0.count >= 5 }
        let absent = searched.first { literal in
            guard occurs(literal, "nowhere"), literal.allSatisfy({ $0.isLetter || $0 == " " || $0 == "'" }) else {
                return false
            }
            if literal.split(separator: " ").count >= 3 { return true }
            let word = literal.lowercased()
            return word.count >= 5 && questionWords.contains { $0.hasPrefix(word.prefix(5)) }
        }
        guard let absent else { return nil }
        return (absent, searched.first { occurs($0, "as written") })
    }

    /// How Python's `repr` writes a plain string, as the near-lines probe prints it.
    private static func quoted(_ text: String) -> String {
        text.contains("'") && !text.contains("\"") ? "\"\(text)\"" : "'\(text)'"
    }

    /// A literal with capitals searched in text the code lowercased (or the reverse), which can never match:
    /// `"Redis" in doc.lower()`. Returns the literal and the case it needs.
    static func caseMismatch(in code: String) -> (literal: String, fixed: String)? {
        let lowers = code.contains(".lower()") || code.contains(".casefold()")
        let uppers = code.contains(".upper()")
        for literal in searchLiterals(in: code, limit: 12) where literal.contains(where: \.isLetter) {
            if lowers, literal != literal.lowercased() { return (literal, literal.lowercased()) }
            if uppers, !lowers, literal != literal.uppercased() { return (literal, literal.uppercased()) }
        }
        return nil
    }

    /// Single- or double-quoted one-line Python string literals (prefixes such as `f` or `r` allowed).
    nonisolated(unsafe) private static let literal =
        #/(?:\b[rRfFbBuU]{0,2})?(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)')/#

    /// Whether a step's cells found nothing: no error, and what they printed is empty or only empty values (`0`,
    /// `[]`, `None`, …, possibly after a label), or the error is what code raises on an empty selection.
    static func foundNothing(_ results: [CellResult], code: [String] = []) -> Bool {
        guard !results.isEmpty else { return false }
        // A cell that prints nothing and was not asked to (a setup cell) found nothing only if it raised.
        let printsSomething = code.isEmpty || code.contains { $0.contains("print(") }
        for result in results {
            if let error = result.error {
                let empty =
                    ["IndexError", "StopIteration", "ZeroDivisionError"].contains(error.type)
                    || (error.type == "ValueError" && error.message.contains("empty"))
                if !empty { return false }
                continue
            }
            if result.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, !printsSomething { return false }
            for line in result.stdout.split(whereSeparator: \.isNewline) {
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.isEmpty { continue }
                guard text.wholeMatch(of: emptyValue) != nil else { return false }
            }
        }
        return true
    }

    nonisolated(unsafe) private static let emptyValue =
        #/(?:[^:=]{0,60}[:=]\s*)?(?:0|0\.0+|\[\]|\{\}|set\(\)|\(\)|None|''|""|Counter\(\)|defaultdict\(.*\{\}\))/#

    private static let describeSource = #"""
        def _rlm_describe(ctx, limit, terms=()):
            import json, csv, io, re, collections
            out = []

            def cut(s, n=70):
                s = str(s)
                return s if len(s) <= n else s[:n - 3] + '...'

            def sample_lines(text):
                big = len(text) > 120000
                lines = text[:120000].split('\n')
                if big:
                    lines = lines[:-1]
                lines = [l[:3000] for l in lines[:300]]
                if big:
                    step = len(text) // 80
                    for i in range(1, 80):
                        p = text.find('\n', i * step)
                        if p < 0:
                            break
                        q = text.find('\n', p + 1)
                        lines.append(text[p + 1:q if q >= 0 else len(text)][:3000])
                return [l for l in lines if l.strip()]

            def values_note(vals, total):
                c = collections.Counter(vals)
                if not c:
                    return ''
                if all(isinstance(v, bool) for v in c):
                    return 'true/false'
                nums = [v for v in c if isinstance(v, (int, float)) and not isinstance(v, bool)]
                if len(nums) == len(c):
                    kind = 'int' if all(isinstance(v, int) for v in nums) else 'number'
                    return f'{kind}, e.g. {nums[0]}'
                if len(c) == 1 and total >= 2:
                    v = next(iter(c))
                    return 'always ' + (json.dumps(v) if isinstance(v, str) else str(v))
                if len(c) <= 8 and total >= 2 * len(c):
                    return ', '.join(json.dumps(v) if isinstance(v, str) else str(v)
                                     for v, _ in c.most_common()) + ' (the values seen)'
                v = next(iter(c))
                if isinstance(v, str) and re.fullmatch(r'[$\u20ac\u00a3]-?[\d,]+(\.\d+)?', v):
                    return f'money, e.g. {json.dumps(v)} (as a number: float(v[1:].replace(",", "")))'
                return ('text, e.g. ' + json.dumps(cut(v, 40))) if isinstance(v, str) else f'e.g. {cut(v, 40)}'

            def walk(v, path, acc, seen):
                if isinstance(v, dict):
                    for k, x in v.items():
                        walk(x, f'{path}.{k}' if path else str(k), acc, seen)
                elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v[:10]):
                    for e in v[:30]:
                        walk(e, path + '[]', acc, seen)
                else:
                    if isinstance(v, list):
                        v = 'list'
                    elif v is None:
                        v = 'null'
                    acc.setdefault(path, []).append(v)
                    seen.add(path)

            def access(path):
                parts = path.replace('[]', '.[]').split('.')
                s, var = 'r', 'r'
                for p in parts:
                    if p == '[]':
                        return None
                    s += f'[{json.dumps(p)}]'
                return s

            def describe_records(recs, what, how):
                acc, present = {}, collections.Counter()
                for r in recs:
                    seen = set()
                    walk(r, '', acc, seen)
                    for p in seen:
                        present[p] += 1
                out.append(f'{what}; fields (from {len(recs)} sampled records):')
                for path in list(acc)[:24]:
                    note = values_note(acc[path], len(acc[path]))
                    miss = ''
                    if '[]' not in path and present[path] < len(recs):
                        miss = f' (missing in {100 - 100 * present[path] // len(recs)}% of records)'
                    out.append(f'  {path}: {note}{miss}')
                nested = next((p for p in acc if '.' in p and '[]' not in p), None)
                listed = next((p for p in acc if '[]' in p), None)
                out.append('  ' + how)
                tips = []
                if nested:
                    tips.append(f'a nested field is {access(nested)}')
                if listed:
                    head, _, tail = listed.partition('[]')
                    tips.append(f'a list field: for item in {access(head)}: item[{json.dumps(tail.lstrip("."))}]'
                                if tail else f'a list field: {access(head)}')
                if any(present[p] < len(recs) for p in acc if '[]' not in p):
                    tips.append('use r.get(...) for fields some records lack')
                if tips:
                    out.append('  (' + '; '.join(tips) + ')')

            def try_jsonl(lines, src, header):
                recs = []
                for l in lines:
                    s = l.strip()
                    if s.startswith('{'):
                        try:
                            v = json.loads(s)
                        except ValueError:
                            continue
                        if isinstance(v, dict):
                            recs.append(v)
                if len(recs) < 2 or len(recs) < 0.8 * len(lines):
                    return False
                body = f'{src}.split("\\n", 1)[1]' if header else src
                describe_records(recs, 'JSON lines: one JSON object per line',
                                 f'Parse: rows = [json.loads(l) for l in {body}.splitlines() if l.strip()]')
                return True

            def try_csv(lines, src, header):
                first = lines[0]
                for d, name in ((',', 'comma'), ('\t', 'tab'), (';', 'semicolon'), ('|', 'pipe')):
                    if first.count(d) < 1:
                        continue
                    try:
                        rows = list(csv.reader(lines[:300], delimiter=d))
                    except csv.Error:
                        continue
                    n = len(rows[0])
                    if n < 2 or len(rows) < 3 or sum(len(r) == n for r in rows) < 0.9 * len(rows):
                        continue
                    head = rows[0]
                    if any(re.fullmatch(r'-?[\d.,]+', h.strip() or '0') for h in head):
                        continue
                    out.append(f'CSV ({name}-separated) with a header row; columns (from {len(rows) - 1} sampled rows):')
                    for i, h in enumerate(head[:24]):
                        vals = [r[i] for r in rows[1:] if len(r) == n]
                        conv = []
                        for v in vals:
                            try:
                                conv.append(int(v))
                            except ValueError:
                                try:
                                    conv.append(float(v))
                                except ValueError:
                                    conv.append(v)
                        out.append(f'  {h}: {values_note(conv, len(conv))}')
                    body = f'{src}.split("\\n", 1)[1]' if header else src
                    dl = '' if d == ',' else f', delimiter={d!r}'
                    out.append(f'  Parse: rows = list(csv.DictReader(io.StringIO({body}){dl}))  '
                               f'(import csv, io; values are str: convert with int() or float())')
                    return True
                return False

            kv = re.compile(r'([A-Za-z_][\w.-]{0,40})=("[^"]{0,200}"|[^\s,;]{1,200})')
            field = re.compile(r'^([A-Za-z][A-Za-z0-9 _/()-]{0,40}):[ \t]+(\S.*)$')

            def try_fields(lines, what, per_doc=False):
                acc, keys = {}, []
                for l in lines:
                    m = field.match(l.strip())
                    if m:
                        k = m.group(1)
                        if k not in acc:
                            keys.append(k)
                        acc.setdefault(k, []).append(m.group(2).strip())
                keys = [k for k in keys if len(acc[k]) >= 2 or len(lines) < 60]
                if len(keys) < 2:
                    return False
                out.append(f'{what} "Name: value" lines; the names, exactly as written (case and spaces matter):')
                for k in keys[:20]:
                    out.append(f'  {k}: {values_note(acc[k], len(acc[k]))}')
                if per_doc:
                    out.append('  Parse each document: for doc in context: f = dict(l.split(": ", 1) for l in '
                               f'doc.splitlines() if ": " in l); then f[{json.dumps(keys[0])}]')
                return True

            def try_log(lines):
                rows = [l.split() for l in lines]
                # Lines of the dominant shape only (a traceback or a continuation line is not a log line).
                masks = collections.Counter(re.sub(r'[0-9]', '9', r[0]) for r in rows if r)
                if masks:
                    top = masks.most_common(1)[0][0]
                    rows = [r for r in rows if r and re.sub(r'[0-9]', '9', r[0]) == top]
                pairs = [kv.findall(l) for l in lines]
                with_kv = sum(len(p) >= 2 for p in pairs)
                shown = False
                if with_kv >= 0.5 * len(lines):
                    acc = {}
                    for p in pairs:
                        for k, v in p:
                            acc.setdefault(k, []).append(v)
                    few = []
                    for k, vs in list(acc.items())[:14]:
                        c = collections.Counter(vs)
                        if len(c) <= 10 and len(vs) >= 2 * len(c):
                            few.append(f'  {k}=' + ', '.join(v for v, _ in c.most_common()) + ' (the values seen)')
                    if few:
                        out.append('Lines of key=value fields; those with few values:')
                        out.extend(few)
                        shown = True
                width = min(8, min((len(r) for r in rows), default=0))
                words = []
                for i in range(width):
                    col = [r[i] for r in rows]
                    if any('=' in v for v in col):
                        break
                    c = collections.Counter(col)
                    if 2 <= len(c) <= 8 and len(col) >= 3 * len(c):
                        words.append(f'word {i + 1} is ' + ' or '.join(v for v, _ in c.most_common()))
                if words:
                    out.append('Line words, exactly as written: ' + '; '.join(words))
                    shown = True
                return shown

            def describe_text(text, src, header):
                lines = sample_lines(text)
                if header and lines:
                    lines = lines[1:]
                if not lines:
                    out.append('(empty)')
                    return
                if try_jsonl(lines, src, header) or try_csv(lines, src, header):
                    return
                a = try_log(lines)
                b = try_fields(lines, 'Has')
                if not (a or b) and not header:
                    avg = sum(map(len, lines)) // len(lines)
                    out.append(f'Plain text (lines of about {avg} characters).')

            if isinstance(ctx, str):
                out.append(f'`context` ({len(ctx):,} characters, {ctx.count(chr(10)) + 1:,} lines):')
                describe_text(ctx, 'context', False)
            elif isinstance(ctx, list) and ctx and all(isinstance(d, str) for d in ctx[:50]):
                labels = [d[4:d.find('\n')] if d.startswith('### ') and '\n' in d else '' for d in ctx]
                exts = collections.Counter((l.rsplit('.', 1)[-1] if '.' in l.rsplit('/', 1)[-1] else '(none)')
                                           for l in labels if l)
                if exts:
                    out.append('File types: ' + ', '.join(f'{n} .{e}' if e != '(none)' else f'{n} without extension'
                                                           for e, n in exts.most_common(8)))
                if len(ctx) <= 12:
                    for i, d in enumerate(ctx):
                        out.append(f'context[{i}] ({labels[i] or "no name"}, {len(d):,} characters):')
                        describe_text(d, f'context[{i}]', bool(labels[i]))
                else:
                    docs = ctx[:200]
                    lines = [l for d in docs for l in d[:20000].split('\n', 40)[1:40]]
                    if not try_fields(lines, 'Documents have', True):
                        mark = len(out)
                        describe_text(ctx[0], 'context[0]', bool(labels[0]))
                        if len(out) > mark:
                            out.insert(mark, f'{len(ctx):,} documents; the first:')
            elif isinstance(ctx, list) and ctx and all(isinstance(r, dict) for r in ctx[:50]):
                describe_records(ctx[:300], f'A list of {len(ctx):,} JSON objects', 'Access: for r in context: r["..."]')
            elif isinstance(ctx, dict):
                for k, v in list(ctx.items())[:8]:
                    if isinstance(v, list) and v and all(isinstance(r, dict) for r in v[:50]):
                        describe_records(v[:300], f'context[{json.dumps(k)}] is a list of {len(v):,} JSON objects',
                                         f'Access: for r in context[{json.dumps(k)}]: r["..."]')
            if terms:
                if isinstance(ctx, str):
                    docs = [ctx]
                elif isinstance(ctx, list):
                    docs = [d for d in ctx if isinstance(d, str)]
                else:
                    docs = [json.dumps(ctx)]
                ident = re.compile(r'[A-Za-z0-9_]')
                forms_out = []
                for term in terms[:8]:
                    forms, seen, folded, where = collections.Counter(), 0, None, []
                    for d in docs:
                        label = d[4:d.find('\n')] if len(docs) > 1 and d.startswith('### ') else ''
                        i = d.find(term)
                        while i >= 0 and seen < 400:
                            j = i + len(term)
                            if not (i > 0 and ident.match(d[i - 1]) and ident.match(term[0])) and \
                                    not (j < len(d) and ident.match(d[j]) and ident.match(term[-1])):
                                a, b = i, j
                                while a > 0 and not d[a - 1].isspace() and i - a < 40:
                                    a -= 1
                                while b < len(d) and not d[b].isspace() and b - j < 40:
                                    b += 1
                                forms[d[a:b].strip('.,;:()[]{}')] += 1
                                seen += 1
                                if len(where) < 8:
                                    s0 = d.rfind('\n', 0, i) + 1
                                    s1 = d.find('\n', i)
                                    line = d[s0:s1 if s1 >= 0 else len(d)].strip()
                                    if len(line) > 160:
                                        line = line[max(0, i - s0 - 70):][:160]
                                    where.append((label + ': ' if label else '') + line)
                            i = d.find(term, j)
                        if seen >= 400:
                            break
                    if not forms:
                        low = term.lower()
                        for d in docs:
                            k = d.lower().find(low)
                            if k >= 0:
                                folded = d[k:k + len(term)]
                                break
                            if len(d) > 50_000_000:
                                break
                    if forms and seen <= 8:
                        forms_out.append(f'  {term}: in {seen} line{"s" if seen > 1 else ""}, exactly:')
                        forms_out.extend('    ' + w for w in where)
                    elif forms:
                        more = '+' if seen >= 400 else ''
                        shown = ', '.join(f'{f} ({n}{more} times)' for f, n in forms.most_common(3))
                        forms_out.append(f'  {term}: as {shown}')
                    elif folded:
                        forms_out.append(f'  {term}: not as written; only in another case, as {folded}')
                    elif not re.fullmatch(r'\w+(\.\w+)+', term):
                        forms_out.append(f'  {term}: nowhere as written, in any case')
                if forms_out:
                    out.append("How the question's terms appear in `context` (whole words; match this exact form):")
                    out.extend(forms_out)
            text = '\n'.join(out)
            if len(text) > limit:
                text = text[:limit - 20].rsplit('\n', 1)[0] + '\n  (more not shown)'
            print(text)
        """#

    private static let nearSource = #"""
        def _rlm_near(ctx, words, limit):
            if isinstance(ctx, str):
                docs = [ctx]
            elif isinstance(ctx, list):
                docs = [d for d in ctx if isinstance(d, str)]
            else:
                import json
                docs = [json.dumps(ctx, indent=1)[:50_000_000]]
            def lines_with(needle, fold, most):
                found = []
                for d in docs:
                    hay = d.lower() if fold else d
                    i = hay.find(needle)
                    while i >= 0 and len(found) < most:
                        a = d.rfind('\n', 0, i) + 1
                        b = d.find('\n', i)
                        b = len(d) if b < 0 else b
                        line = d[a:b].strip()
                        if line and line not in found:
                            found.append(line[:160])
                        i = hay.find(needle, b)
                    if len(found) >= most:
                        break
                return found

            out = []
            for w in words:
                if lines_with(w, False, 1):
                    out.append(f'{w!r} occurs as written, e.g.: {lines_with(w, False, 1)[0]}')
                    continue
                folded = lines_with(w.lower(), True, 2)
                if folded:
                    out.append(f'{w!r} occurs only in another case or form:')
                    out.extend('  ' + l for l in folded)
                    continue
                spaced = w.replace('_', ' ').lower()
                if spaced != w.lower():
                    found = lines_with(spaced, True, 2)
                    if found:
                        out.append(f'{w!r} occurs nowhere, but {spaced!r} does:')
                        out.extend('  ' + l for l in found)
                        continue
                parts = sorted({p for p in __import__('re').findall(r'[A-Za-z0-9]{3,}', w)}, key=len, reverse=True)
                near = []
                for p in parts[:3]:
                    near = lines_with(p.lower(), True, 2)
                    if near:
                        out.append(f'{w!r} occurs nowhere, in any case; lines with {p!r}:')
                        out.extend('  ' + l for l in near)
                        break
                if not near:
                    out.append(f'{w!r} occurs nowhere, in any case.')
            text = '\n'.join(out)
            print(text[:limit])
        """#
}
