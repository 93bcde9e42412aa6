/// The viewer page's own CSS and JavaScript (``TrajectoryViewer``). Both are inlined into every page and allowed by
/// their SHA-256 in the page's Content-Security-Policy, so they must not change between render and serve.
///
/// The script reads the trajectory from the `application/json` block and builds the page with DOM calls only:
/// trajectory text reaches the page through `textContent` and text nodes, never through markup, an attribute
/// name, a class name, a URL or a style. Nothing is fetched.
enum ViewerAssets {
    /// The page's stylesheet: system fonts, light and dark colours, no `url(…)`.
    static let style = #"""
        :root{color-scheme:light dark;--bg:#fafaf8;--fg:#1d1d1f;--mut:#6b6b70;--line:#dcdcd5;--card:#fff;\#
        --code:#f3f3ee;--kw:#8a3ab9;--str:#287a28;--com:#85858a;--num:#b35900;--bi:#1d5fa8;--err:#b3261e;\#
        --ok:#1e7b34;--warn:#9a6700;--acc:#2f6fdb;--cost:#d9730d;--child:#eef3fb}
        @media (prefers-color-scheme:dark){:root{--bg:#161719;--fg:#e6e6e6;--mut:#9a9aa0;--line:#35373b;\#
        --card:#1e1f22;--code:#25272a;--kw:#d19cff;--str:#8fd18f;--com:#8a8f98;--num:#ffb070;--bi:#7fb6ff;\#
        --err:#ff8a80;--ok:#7bd88f;--warn:#e3b341;--acc:#7aa7ff;--cost:#ffa657;--child:#1c2330}}
        *{box-sizing:border-box}
        body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",\#
        Roboto,sans-serif}
        main{max-width:1200px;margin:0 auto;padding:16px 20px 64px}
        h1{font-size:20px;margin:4px 0 2px;overflow-wrap:anywhere}
        h2{font-size:17px;margin:0;overflow-wrap:anywhere}
        h3{font-size:14px;margin:18px 0 6px;text-transform:uppercase;letter-spacing:.04em;color:var(--mut)}
        .muted{color:var(--mut)}
        .banner{border:1px solid var(--warn);color:var(--warn);border-radius:6px;padding:6px 10px;margin:8px 0}
        nav.runs{display:flex;flex-wrap:wrap;gap:6px;margin:10px 0}
        nav.runs button{font:inherit;border:1px solid var(--line);background:var(--card);color:var(--fg);\#
        border-radius:14px;padding:2px 10px;cursor:pointer;max-width:340px;overflow:hidden;text-overflow:ellipsis;\#
        white-space:nowrap}
        section.run{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;\#
        margin:16px 0}
        .run-head{display:flex;align-items:center;gap:10px;flex-wrap:wrap}
        .badge{font-size:12px;font-weight:600;border-radius:10px;padding:1px 9px;border:1px solid currentColor}
        .b-ok{color:var(--ok)}.b-warn{color:var(--warn)}.b-err{color:var(--err)}.b-none{color:var(--mut)}
        dl.meta{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:4px 16px;margin:10px 0}
        dl.meta div{min-width:0}
        dl.meta dt{font-size:11px;color:var(--mut);text-transform:uppercase;letter-spacing:.04em}
        dl.meta dd{margin:0;overflow-wrap:anywhere}
        .outcome{border-left:4px solid var(--mut);padding:4px 12px;margin:10px 0}
        .outcome.o-ok{border-color:var(--ok)}.outcome.o-warn{border-color:var(--warn)}\#
        .outcome.o-err{border-color:var(--err)}
        .outcome .label{font-weight:600}
        pre{margin:4px 0;padding:8px 10px;background:var(--code);border-radius:6px;white-space:pre-wrap;\#
        overflow-wrap:anywhere;font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",\#
        monospace}
        pre.answer{font:14px/1.5 system-ui,sans-serif;background:transparent;padding:2px 0}
        pre.err,.err{color:var(--err)}
        pre.code{border-left:3px solid var(--acc)}
        .kw{color:var(--kw);font-weight:600}.str{color:var(--str)}.com{color:var(--com);font-style:italic}\#
        .num{color:var(--num)}.bi{color:var(--bi)}
        button.more{font:12px system-ui,sans-serif;border:1px solid var(--line);background:var(--card);\#
        color:var(--acc);border-radius:5px;padding:1px 8px;cursor:pointer;margin:0 0 4px}
        details{margin:4px 0}
        summary{cursor:pointer;padding:3px 0}
        details.iter{border:1px solid var(--line);border-radius:8px;padding:2px 10px;margin:6px 0}
        details.iter>summary{font-weight:600}
        .digest{font-weight:400;color:var(--mut);margin-left:8px}
        .ev{border-top:1px dashed var(--line);padding:6px 0}
        .ev-head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
        .ev-head .kind{font-weight:600;overflow-wrap:anywhere}
        .ev-meta{font-size:12px;color:var(--mut)}
        .kv{font-size:12.5px;color:var(--mut);overflow-wrap:anywhere}
        .kv span.v{color:var(--fg)}
        .sub{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--mut);margin-top:4px}
        .child{background:var(--child);border-radius:8px;padding:4px 10px;margin:6px 0 6px 14px;\#
        border-left:3px solid var(--acc)}
        ul.tree{list-style:none;padding-left:18px;margin:2px 0}
        ul.tree li{margin:2px 0;overflow-wrap:anywhere}
        ul.tree li::before{content:"\2514\2500 ";color:var(--mut)}
        svg.timeline{width:100%;height:auto;max-height:240px;display:block}
        svg.timeline .axis{stroke:var(--mut);stroke-width:1}
        svg.timeline .grid{stroke:var(--line);stroke-width:1}
        svg.timeline .tok{stroke:var(--acc);stroke-width:2;fill:none}
        svg.timeline .cost{stroke:var(--cost);stroke-width:2;fill:none;stroke-dasharray:6 3}
        svg.timeline .dot{fill:var(--acc)}
        svg.timeline text{fill:var(--mut);font:11px system-ui,sans-serif}
        .legend{font-size:12px;color:var(--mut)}
        .legend .sw-tok{color:var(--acc)}.legend .sw-cost{color:var(--cost)}
        """#

    /// The page's script: reads the embedded trajectory and renders it (see the type's comment for the rules).
    static let script = #"""
        (function () {
          'use strict';
          var scriptStart = performance.now();  // the page's HTML is parsed by now
          var SHOW = 3000;             // characters of a text shown before its "Show all" button
          var HIGHLIGHT_MAX = 200000;  // longer code is shown without colours
          var EAGER = 400;             // a file with at most this many events opens every step at once
          var TREE_MAX = 2000;         // sub-calls listed in a run's tree before "and N more"
          var app = document.getElementById('app');

          function el(tag, cls, text) {
            var e = document.createElement(tag);
            if (cls) e.className = cls;
            if (text !== undefined && text !== null) e.textContent = text;
            return e;
          }
          function add(parent, child) { parent.appendChild(child); return child; }
          function isObj(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }
          function has(o, k) { return Object.prototype.hasOwnProperty.call(o, k); }
          function num(v) { return typeof v === 'number' && isFinite(v) ? v : null; }
          function str(v) {
            if (v === undefined || v === null) return '';
            if (typeof v === 'string') return v;
            try { return JSON.stringify(v); } catch (e) { return String(v); }
          }
          function pretty(v) {
            try { return JSON.stringify(v, null, 2); } catch (e) { return String(v); }
          }
          function words(list) {
            var s = new Set();
            list.split(' ').forEach(function (w) { s.add(w); });
            return s;
          }
          function fmtInt(n) { return n === null ? '\u2013' : Math.round(n).toLocaleString('en-US'); }
          function fmtCost(c) {
            if (c === null) return '\u2013';
            return '$' + (c !== 0 && Math.abs(c) < 0.01 ? c.toFixed(4) : c.toFixed(2));
          }
          function fmtSecs(s) {
            if (s === null) return '\u2013';
            if (s < 1) return Math.round(s * 1000) + ' ms';
            if (s < 120) return (Math.round(s * 10) / 10) + ' s';
            var m = Math.floor(s / 60), r = Math.round(s - m * 60);
            return m + 'm ' + (r < 10 ? '0' : '') + r + 's';
          }
          function fmtMs(ms) { return ms === null ? '\u2013' : fmtSecs(ms / 1000); }
          function fmtTime(t) {
            if (t === null) return '\u2013';
            try { return new Date(t * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC'); }
            catch (e) { return String(t); }
          }

          // Python, for colours only: comments, strings (prefixes, triple quotes, unterminated ones), numbers,
          // keywords and the names the REPL provides.
          var KEYWORDS = words('False None True and as assert async await break class continue def del elif else ' +
            'except finally for from global if import in is lambda nonlocal not or pass raise return try while ' +
            'with yield match case');
          var BUILTINS = words('print len range str int float bool list dict set tuple sorted enumerate zip map ' +
            'filter sum min max abs any all open isinstance type repr round reversed self context llm_query ' +
            'llm_query_batched rlm_query FINAL FINAL_VAR SHOW_VARS');
          var TOKEN = new RegExp([
            '(#[^\\n]*)',
            '((?:[rRbBuUfF]{1,2})?(?:\'\'\'[\\s\\S]*?(?:\'\'\'|$)|"""[\\s\\S]*?(?:"""|$)|' +
              '\'(?:[^\'\\\\\\n]|\\\\[\\s\\S])*\'?|"(?:[^"\\\\\\n]|\\\\[\\s\\S])*"?))',
            '(\\b(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|\\d[\\d_]*(?:\\.[\\d_]*)?(?:[eE][+-]?\\d+)?[jJ]?))',
            '([A-Za-z_][A-Za-z0-9_]*)'
          ].join('|'), 'g');

          function highlightPython(parent, code) {
            var frag = document.createDocumentFragment();
            var last = 0, m, cls;
            TOKEN.lastIndex = 0;
            while ((m = TOKEN.exec(code)) !== null) {
              if (m[0].length === 0) { TOKEN.lastIndex++; continue; }
              if (m[1] !== undefined) cls = 'com';
              else if (m[2] !== undefined) cls = 'str';
              else if (m[3] !== undefined) cls = 'num';
              else if (KEYWORDS.has(m[4])) cls = 'kw';
              else if (BUILTINS.has(m[4])) cls = 'bi';
              else continue;
              if (m.index > last) frag.appendChild(document.createTextNode(code.slice(last, m.index)));
              frag.appendChild(el('span', cls, m[0]));
              last = m.index + m[0].length;
            }
            if (last < code.length) frag.appendChild(document.createTextNode(code.slice(last)));
            parent.appendChild(frag);
          }

          // A model reply: prose as it is, fenced blocks (```repl, ```python, bare ```) coloured as Python.
          var FENCE = /```([^\n`]*)\n([\s\S]*?)(```|$)/g;
          function highlightReply(parent, text) {
            var last = 0, m;
            FENCE.lastIndex = 0;
            while ((m = FENCE.exec(text)) !== null) {
              if (m[0].length === 0) { FENCE.lastIndex++; continue; }
              parent.appendChild(document.createTextNode(text.slice(last, m.index) + '```' + m[1] + '\n'));
              var lang = m[1].trim().toLowerCase();
              var span = el('span', 'fenced');
              if (lang === '' || lang === 'repl' || lang === 'python' || lang === 'py') highlightPython(span, m[2]);
              else span.textContent = m[2];
              parent.appendChild(span);
              if (m[3]) parent.appendChild(document.createTextNode(m[3]));
              last = m.index + m[0].length;
            }
            if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
          }

          // A text of the trajectory: the first SHOW characters, the rest behind a button.
          function textBlock(value, cls, colour) {
            var text = str(value);
            var wrap = el('div', 'block');
            var pre = add(wrap, el('pre', cls));
            function fill(full) {
              pre.textContent = '';
              var shown = full ? text : text.slice(0, SHOW);
              if (colour && shown.length <= HIGHLIGHT_MAX) colour(pre, shown);
              else pre.textContent = shown;
            }
            fill(text.length <= SHOW);
            if (text.length > SHOW) {
              var more = add(wrap, el('button', 'more',
                'Show all ' + fmtInt(text.length) + ' characters (' + fmtInt(text.length - SHOW) + ' hidden)'));
              more.type = 'button';
              more.addEventListener('click', function () { fill(true); wrap.removeChild(more); });
            }
            return wrap;
          }
          function kv(parent, pairs) {
            var line = el('div', 'kv'), first = true;
            pairs.forEach(function (p) {
              if (p[1] === null || p[1] === undefined || p[1] === '') return;
              if (!first) line.appendChild(document.createTextNode(' \u00b7 '));
              first = false;
              line.appendChild(document.createTextNode(p[0] + ' '));
              add(line, el('span', 'v', str(p[1])));
            });
            if (!first) parent.appendChild(line);
            return line;
          }
          function sub(parent, label) { return add(parent, el('div', 'sub', label)); }

          // ---- The data --------------------------------------------------------------------------------------

          var payload;
          try {
            payload = JSON.parse(document.getElementById('rlm-trajectory').textContent);
          } catch (e) {
            app.textContent = '';
            add(app, el('p', 'err', 'The embedded trajectory could not be read: ' + e.message));
            return;
          }
          if (!isObj(payload)) payload = {};
          var events = Array.isArray(payload.events) ? payload.events : [];
          var unreadable = Array.isArray(payload.unreadable) ? payload.unreadable : [];
          var source = str(payload.source) || 'trajectory';
          var eager = events.length <= EAGER;
          document.title = source + ' \u2014 rlm view';

          var runs = [], runById = new Map(), otherSchema = 0;
          events.forEach(function (ev) {
            if (!isObj(ev)) return;
            if (ev.schema !== 1) otherSchema++;
            var id = typeof ev.run === 'string' ? ev.run : '(no run id)';
            var run = runById.get(id);
            if (!run) {
              run = { id: id, events: [], scopes: new Map(), calls: new Map(), t0: null, shown: new Set() };
              runById.set(id, run);
              runs.push(run);
            }
            run.events.push(ev);
            if (run.t0 === null && num(ev.time) !== null) run.t0 = ev.time;
            var scope = scopeOf(ev);
            if (!run.scopes.has(scope)) run.scopes.set(scope, []);
            run.scopes.get(scope).push(ev);
            if ((ev.kind === 'subcall_started' || ev.kind === 'subcall') && isObj(ev.data)) {
              var cid = str(ev.data.call_id);
              var call = run.calls.get(cid);
              if (!call) {
                call = { id: cid, scope: scope, depth: num(ev.depth), started: null, done: null };
                run.calls.set(cid, call);
              }
              if (ev.kind === 'subcall_started') call.started = ev; else call.done = ev;
            }
          });
          function scopeOf(ev) { return typeof ev.scope === 'string' ? ev.scope : 'root'; }
          function dataOf(ev) { return isObj(ev.data) ? ev.data : {}; }
          function kindOf(ev) { return typeof ev.kind === 'string' ? ev.kind : str(ev.kind); }
          function first(run, kind) {
            for (var i = 0; i < run.events.length; i++) if (run.events[i].kind === kind) return run.events[i];
            return null;
          }
          function lastOf(run, kind) {
            for (var i = run.events.length - 1; i >= 0; i--) if (run.events[i].kind === kind) return run.events[i];
            return null;
          }
          function lastUsage(run) {
            for (var i = run.events.length - 1; i >= 0; i--) if (isObj(run.events[i].usage)) return run.events[i].usage;
            return null;
          }

          // ---- Events ----------------------------------------------------------------------------------------

          var KNOWN = new Map([
            ['run_started', ['query', 'model', 'sub_model', 'budget', 'configuration']],
            ['context_loaded', ['type', 'shape', 'bytes', 'characters', 'lines', 'items', 'skipped', 'decoded_as']],
            ['model_request', ['model', 'messages', 'delta', 'estimated_prompt_tokens']],
            ['model_response', ['model', 'text', 'input_tokens', 'output_tokens', 'cost_usd', 'latency_ms']],
            ['code_started', ['block', 'code']],
            ['code_result', ['block', 'code', 'stdout', 'stderr', 'error', 'timed_out', 'state_lost', 'duration_ms']],
            ['subcall_started', ['call_id', 'call', 'model', 'prompts']],
            ['subcall', ['call_id', 'call', 'model', 'prompt', 'reply', 'prompts', 'input_tokens', 'output_tokens',
              'cost_usd', 'latency_ms', 'error']],
            ['note', ['note']],
            ['error', ['message']],
            ['budget_exhausted', ['budget', 'reason']],
            ['final_answer', ['answer', 'bare']],
            ['run_finished', ['status', 'answer', 'reason', 'signal', 'iterations', 'duration_ms']]
          ]);
          var TOP = words('schema run seq time kind depth scope iteration data usage');
          var STATUS = new Map([
            ['answered', ['b-ok', 'answered']],
            ['budget_exhausted', ['b-warn', 'a budget ran out']],
            ['no_answer', ['b-warn', 'the loop ended without an answer']],
            ['error', ['b-err', 'the run failed']],
            ['interrupted', ['b-err', 'interrupted']]
          ]);

          function card(run, ev, title, cls) {
            var c = el('div', 'ev' + (cls ? ' ' + cls : ''));
            var head = add(c, el('div', 'ev-head'));
            add(head, el('span', 'kind', title));
            var meta = [];
            if (num(ev.seq) !== null) meta.push('#' + ev.seq);
            if (run.t0 !== null && num(ev.time) !== null) meta.push('+' + fmtSecs(ev.time - run.t0));
            if (num(ev.depth)) meta.push('depth ' + ev.depth);
            add(head, el('span', 'ev-meta', meta.join(' \u00b7 ')));
            return c;
          }
          // Fields this viewer does not know, shown as JSON so nothing in the file is hidden.
          function extras(c, ev, known) {
            var rest = {}, any = false;
            Object.keys(ev).forEach(function (k) { if (!TOP.has(k)) { rest[k] = ev[k]; any = true; } });
            if (isObj(ev.data) && known) {
              var d = {}, anyData = false;
              Object.keys(ev.data).forEach(function (k) {
                if (known.indexOf(k) < 0) { d[k] = ev.data[k]; anyData = true; }
              });
              if (anyData) { rest.data = d; any = true; }
            }
            if (!any) return;
            var det = add(c, el('details'));
            add(det, el('summary', 'muted', 'Other fields'));
            add(det, textBlock(pretty(rest)));
          }
          function generic(run, ev, why) {
            var c = card(run, ev, kindOf(ev) || '(no kind)');
            add(c, el('div', 'kv', why));
            add(c, textBlock(pretty(ev)));
            return c;
          }

          function renderEvent(run, ev, ctx) {
            var kind = kindOf(ev);
            if (!KNOWN.has(kind)) return generic(run, ev, 'An event of a kind this viewer does not know:');
            if (!isObj(ev.data)) return generic(run, ev, 'This event has no data object:');
            try {
              var c = renderKnown(run, ev, kind, ev.data, ctx);
              extras(c, ev, KNOWN.get(kind));
              return c;
            } catch (e) {
              return generic(run, ev, 'This event could not be shown as a ' + kind + ' (' + e.message + '):');
            }
          }

          function renderKnown(run, ev, kind, d, ctx) {
            var c;
            switch (kind) {
            case 'run_started':
              c = card(run, ev, 'Run started');
              kv(c, [['model', d.model], ['sub-model', d.sub_model], ['at', fmtTime(num(ev.time))]]);
              sub(c, 'Query'); add(c, textBlock(d.query, 'answer'));
              if (isObj(d.budget)) {
                kv(c, Object.keys(d.budget).map(function (k) {
                  return [k.replace(/_/g, ' '), d.budget[k] === null ? 'none' : d.budget[k]];
                }));
              }
              if (d.configuration !== undefined) {
                var conf = add(c, el('details'));
                add(conf, el('summary', 'muted', 'Configuration'));
                add(conf, textBlock(pretty(d.configuration)));
              }
              return c;
            case 'context_loaded':
              c = card(run, ev, 'Context loaded');
              kv(c, [['type', d.type], ['shape', d.shape], ['bytes', num(d.bytes) === null ? d.bytes : fmtInt(d.bytes)],
                ['characters', num(d.characters) === null ? d.characters : fmtInt(d.characters)],
                ['lines', d.lines], ['items', d.items]]);
              [['skipped', d.skipped], ['decoded as', d.decoded_as]].forEach(function (pair) {
                if (!Array.isArray(pair[1]) || !pair[1].length) return;
                sub(c, pair[0]);
                var ul = add(c, el('ul', 'tree'));
                pair[1].forEach(function (item) {
                  add(ul, el('li', null, isObj(item) ? str(item.label) + ' \u2014 ' + str(item.reason) : str(item)));
                });
              });
              return c;
            case 'model_request':
              c = card(run, ev, 'Model request');
              kv(c, [['model', d.model], ['messages', d.messages], ['estimated prompt tokens', d.estimated_prompt_tokens]]);
              if (Array.isArray(d.delta) && d.delta.length) {
                var det = add(c, el('details'));
                add(det, el('summary', 'muted', d.delta.length + ' new message' + (d.delta.length === 1 ? '' : 's')));
                d.delta.forEach(function (msg) {
                  if (!isObj(msg)) { add(det, textBlock(str(msg))); return; }
                  sub(det, str(msg.role) || 'message');
                  add(det, textBlock(msg.content));
                });
              }
              return c;
            case 'model_response':
              c = card(run, ev, 'Model reply');
              kv(c, [['model', d.model], ['tokens in', fmtInt(num(d.input_tokens))], ['out', fmtInt(num(d.output_tokens))],
                ['cost', d.cost_usd === null ? 'unknown' : fmtCost(num(d.cost_usd))], ['latency', fmtMs(num(d.latency_ms))]]);
              add(c, textBlock(d.text, null, highlightReply));
              return c;
            case 'code_started':
              if (ctx.results.has(str(d.block))) {
                return card(run, ev, 'Cell ' + str(d.block) + ' started', 'quiet');
              }
              c = card(run, ev, 'Cell ' + str(d.block) + ' started (no result recorded)');
              add(c, textBlock(d.code, 'code', highlightPython));
              return c;
            case 'code_result':
              var flags = [];
              if (d.error !== null && d.error !== undefined) flags.push('raised');
              if (d.timed_out === true) flags.push('timed out');
              if (d.state_lost === true) flags.push('state lost');
              c = card(run, ev, 'Cell ' + str(d.block) + (flags.length ? ' \u2014 ' + flags.join(', ') : ''),
                flags.length ? 'failed' : null);
              kv(c, [['ran for', fmtMs(num(d.duration_ms))]]);
              add(c, textBlock(d.code, 'code', highlightPython));
              if (str(d.stdout) !== '') { sub(c, 'Output'); add(c, textBlock(d.stdout)); }
              if (str(d.stderr) !== '') { sub(c, 'Stderr'); add(c, textBlock(d.stderr, 'err')); }
              if (d.error !== null && d.error !== undefined) {
                sub(c, 'Error');
                var err = isObj(d.error) ? str(d.error.type) + ': ' + str(d.error.message) : str(d.error);
                add(c, textBlock(err, 'err'));
              }
              return c;
            case 'subcall_started':
              var id = str(d.call_id);
              c = card(run, ev, 'Sub-call ' + id + ' \u00b7 ' + str(d.call) + ' started');
              kv(c, [['model', d.model], ['prompts', d.prompts]]);
              if (run.scopes.has(id) && id !== scopeOf(ev)) {
                var child = add(c, el('details', 'child'));
                var depth = num(ev.depth);
                add(child, el('summary', null, 'Child loop ' + id + (depth !== null ? ' (depth ' + (depth + 1) + ')' : '') +
                  ' \u2014 ' + iterationCount(run, id) + ' iteration(s)'));
                lazy(child, function () { return renderLoop(run, id); });
              }
              return c;
            case 'subcall':
              var failed = d.error !== null && d.error !== undefined;
              c = card(run, ev, 'Sub-call ' + str(d.call_id) + ' \u00b7 ' + str(d.call) + (failed ? ' failed' : ' returned'),
                failed ? 'failed' : null);
              kv(c, [['model', d.model], ['prompts', d.prompts], ['tokens in', fmtInt(num(d.input_tokens))],
                ['out', fmtInt(num(d.output_tokens))], ['cost', d.cost_usd === null ? 'unknown' : fmtCost(num(d.cost_usd))],
                ['latency', fmtMs(num(d.latency_ms))]]);
              sub(c, num(d.prompts) !== null && d.prompts > 1 ? 'First prompt' : 'Prompt');
              add(c, textBlock(d.prompt));
              sub(c, d.call === 'rlm_query' ? 'Child\u2019s answer' : (num(d.prompts) !== null && d.prompts > 1 ? 'First reply' : 'Reply'));
              add(c, textBlock(d.reply));
              if (failed) { sub(c, 'Error'); add(c, textBlock(d.error, 'err')); }
              return c;
            case 'note':
              c = card(run, ev, 'Note');
              add(c, textBlock(d.note));
              return c;
            case 'error':
              c = card(run, ev, 'Error', 'failed');
              add(c, textBlock(d.message, 'err'));
              return c;
            case 'budget_exhausted':
              c = card(run, ev, 'Budget exhausted: ' + str(d.budget), 'failed');
              add(c, textBlock(d.reason));
              return c;
            case 'final_answer':
              c = card(run, ev, 'Final answer' + (d.bare === true ? ' (a reply without FINAL, taken as the answer)' : ''));
              add(c, textBlock(d.answer, 'answer'));
              return c;
            case 'run_finished':
              c = card(run, ev, 'Run finished: ' + str(d.status));
              kv(c, [['iterations', d.iterations], ['duration', fmtMs(num(d.duration_ms))], ['signal', d.signal]]);
              if (d.answer !== null && d.answer !== undefined) add(c, textBlock(d.answer, 'answer'));
              if (d.reason !== null && d.reason !== undefined) { sub(c, 'Reason'); add(c, textBlock(d.reason)); }
              return c;
            }
            return generic(run, ev, 'An event this viewer does not know:');
          }

          // Renders `make()` into `details` the first time it opens (at once for a small file).
          function lazy(details, make) {
            var done = false;
            function fill() {
              if (done) return;
              done = true;
              details.appendChild(make());
            }
            details.addEventListener('toggle', function () { if (details.open) fill(); });
            if (eager) { details.open = true; fill(); }
          }

          function iterationsOf(run, scope) {
            var list = [], byN = new Map();
            (run.scopes.get(scope) || []).forEach(function (ev) {
              var n = num(ev.iteration);
              var key = n === null ? 'none' : n;
              var it = byN.get(key);
              if (!it) { it = { n: n, events: [] }; byN.set(key, it); list.push(it); }
              it.events.push(ev);
            });
            return list;
          }
          function iterationCount(run, scope) {
            return iterationsOf(run, scope).filter(function (it) { return it.n !== null && it.n > 0; }).length;
          }

          // One loop (the root, or a child started by rlm_query): its iterations, each collapsible.
          function renderLoop(run, scope) {
            var box = el('div', 'loop');
            if (run.shown.has(scope)) {
              add(box, el('p', 'muted', 'Loop ' + scope + ' is shown elsewhere on this page.'));
              return box;
            }
            run.shown.add(scope);
            var its = iterationsOf(run, scope);
            if (!its.length) add(box, el('p', 'muted', 'No event of this loop is in the file.'));
            its.forEach(function (it) { add(box, renderIteration(run, it)); });
            return box;
          }

          function renderIteration(run, it) {
            var det = el('details', 'iter');
            var summary = add(det, el('summary'));
            summary.appendChild(document.createTextNode(
              it.n === null ? 'Events without an iteration' : it.n === 0 ? 'Before the first iteration' : 'Iteration ' + it.n));
            var cells = 0, failed = 0, calls = 0, tokens = 0, answered = false;
            var results = new Set();
            it.events.forEach(function (ev) {
              var d = dataOf(ev);
              if (ev.kind === 'code_result') {
                cells++;
                results.add(str(d.block));
                if ((d.error !== null && d.error !== undefined) || d.timed_out === true) failed++;
              } else if (ev.kind === 'subcall_started') calls++;
              else if (ev.kind === 'model_response') tokens += (num(d.input_tokens) || 0) + (num(d.output_tokens) || 0);
              else if (ev.kind === 'final_answer') answered = true;
            });
            var digest = [];
            if (tokens) digest.push(fmtInt(tokens) + ' tokens');
            if (cells) digest.push(cells + ' cell' + (cells === 1 ? '' : 's') + (failed ? ' (' + failed + ' failed)' : ''));
            if (calls) digest.push(calls + ' sub-call' + (calls === 1 ? '' : 's'));
            if (answered) digest.push('final answer');
            digest.push(it.events.length + ' event' + (it.events.length === 1 ? '' : 's'));
            add(summary, el('span', 'digest', digest.join(' \u00b7 ')));
            lazy(det, function () {
              var body = el('div', 'iter-body');
              var ctx = { results: results };
              it.events.forEach(function (ev) { add(body, renderEvent(run, ev, ctx)); });
              return body;
            });
            return det;
          }

          // ---- A run -----------------------------------------------------------------------------------------

          function renderOutcome(run) {
            var fin = lastOf(run, 'run_finished');
            var box = el('div', 'outcome');
            if (!fin) {
              box.className = 'outcome o-warn';
              add(box, el('div', 'label', 'No run_finished event: the run was killed, is still running, or the file was cut.'));
              var fa = lastOf(run, 'final_answer');
              if (fa && scopeOf(fa) === 'root') {
                add(box, el('div', 'muted', 'A final answer was recorded before the file ended:'));
                add(box, textBlock(dataOf(fa).answer, 'answer'));
              }
              return box;
            }
            var d = dataOf(fin), status = str(d.status);
            var known = STATUS.get(status);
            box.className = 'outcome ' + (known ? known[0].replace('b-', 'o-') : 'o-warn');
            if (status === 'answered') {
              add(box, el('div', 'label', 'Answer'));
              add(box, textBlock(d.answer, 'answer'));
              return box;
            }
            add(box, el('div', 'label', 'No answer: ' + (known ? known[1] : 'status ' + status) +
              (d.signal ? ' (' + str(d.signal) + ')' : '')));
            if (d.reason !== null && d.reason !== undefined) add(box, textBlock(d.reason));
            if (d.answer !== null && d.answer !== undefined) {
              add(box, el('div', 'muted', 'Answer recorded:'));
              add(box, textBlock(d.answer, 'answer'));
            }
            return box;
          }

          function svgEl(tag, attrs, text) {
            var e = document.createElementNS('http://www.w3.org/2000/svg', tag);
            Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
            if (text !== undefined) e.textContent = text;
            return e;
          }

          // Tokens (input + output) and cost over time, from each event's `usage` (the run's totals so far).
          function renderTimeline(run) {
            var pts = [];
            run.events.forEach(function (ev) {
              if (!isObj(ev.usage) || num(ev.time) === null || run.t0 === null) return;
              var u = ev.usage;
              pts.push({ t: ev.time - run.t0, tok: (num(u.input_tokens) || 0) + (num(u.output_tokens) || 0),
                cost: num(u.cost_usd) });
            });
            if (!pts.length) return el('p', 'muted', 'No usage was recorded in this run.');
            if (pts.length > 1000) {
              var step = pts.length / 1000, kept = [];
              for (var i = 0; i < 1000; i++) kept.push(pts[Math.floor(i * step)]);
              kept.push(pts[pts.length - 1]);
              pts = kept;
            }
            var W = 1000, H = 200, L = 70, R = 70, T = 14, B = 30;
            var tMax = Math.max.apply(null, pts.map(function (p) { return p.t; }));
            var span = tMax > 0 ? tMax : 1;
            var maxTok = Math.max(1, Math.max.apply(null, pts.map(function (p) { return p.tok; })));
            var costs = pts.filter(function (p) { return p.cost !== null; });
            var maxCost = costs.length ? Math.max.apply(null, costs.map(function (p) { return p.cost; })) : 0;
            function x(t) { return (L + Math.max(0, t) / span * (W - L - R)).toFixed(1); }
            function y(v, max) { return (H - B - v / max * (H - T - B)).toFixed(1); }
            var svg = svgEl('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'timeline', role: 'img' });
            svg.appendChild(svgEl('title', {}, 'Tokens and cost over time'));
            [0.25, 0.5, 0.75, 1].forEach(function (f) {
              var yy = y(f * maxTok, maxTok);
              svg.appendChild(svgEl('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: 'grid' }));
            });
            svg.appendChild(svgEl('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));
            svg.appendChild(svgEl('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }));
            var tokLine = pts.map(function (p) { return x(p.t) + ',' + y(p.tok, maxTok); }).join(' ');
            svg.appendChild(svgEl('polyline', { points: tokLine, class: 'tok' }));
            if (maxCost > 0) {
              svg.appendChild(svgEl('line', { x1: W - R, x2: W - R, y1: T, y2: H - B, class: 'axis' }));
              var costLine = costs.map(function (p) { return x(p.t) + ',' + y(p.cost, maxCost); }).join(' ');
              svg.appendChild(svgEl('polyline', { points: costLine, class: 'cost' }));
              svg.appendChild(svgEl('text', { x: W - R + 6, y: T + 10 }, fmtCost(maxCost)));
              svg.appendChild(svgEl('text', { x: W - R + 6, y: H - B }, '$0'));
            }
            var lastPt = pts[pts.length - 1];
            svg.appendChild(svgEl('circle', { cx: x(lastPt.t), cy: y(lastPt.tok, maxTok), r: 3.5, class: 'dot' }));
            svg.appendChild(svgEl('text', { x: L - 6, y: T + 10, 'text-anchor': 'end' }, fmtInt(maxTok)));
            svg.appendChild(svgEl('text', { x: L - 6, y: H - B, 'text-anchor': 'end' }, '0'));
            svg.appendChild(svgEl('text', { x: L, y: H - 8 }, '0 s'));
            svg.appendChild(svgEl('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, fmtSecs(tMax)));
            var wrap = el('div');
            wrap.appendChild(svg);
            var legend = add(wrap, el('div', 'legend'));
            add(legend, el('span', 'sw-tok', '\u2501 '));
            legend.appendChild(document.createTextNode('tokens, input + output (left axis)   '));
            if (maxCost > 0) {
              add(legend, el('span', 'sw-cost', '\u254d '));
              legend.appendChild(document.createTextNode('cost in USD (right axis)'));
            }
            return wrap;
          }

          // Every sub-call by depth: the calls each loop made, and under an rlm_query the calls of its child.
          function renderCallTree(run) {
            if (!run.calls.size) return el('p', 'muted', 'No sub-calls.');
            var byScope = new Map();
            run.calls.forEach(function (call) {
              if (!byScope.has(call.scope)) byScope.set(call.scope, []);
              byScope.get(call.scope).push(call);
            });
            var listed = 0, visited = new Set();
            function list(scope) {
              var ul = el('ul', 'tree');
              visited.add(scope);
              (byScope.get(scope) || []).forEach(function (call) {
                if (listed >= TREE_MAX) return;
                listed++;
                var s = call.started ? dataOf(call.started) : {}, d = call.done ? dataOf(call.done) : {};
                var kind = str(d.call || s.call), parts = [call.id, kind, str(d.model || s.model)];
                if (num(call.depth) !== null) parts.push('depth ' + call.depth);
                if (num(d.input_tokens) !== null || num(d.output_tokens) !== null) {
                  parts.push(fmtInt((num(d.input_tokens) || 0) + (num(d.output_tokens) || 0)) + ' tokens');
                }
                if (num(d.cost_usd) !== null) parts.push(fmtCost(d.cost_usd));
                if (num(d.latency_ms) !== null) parts.push(fmtMs(d.latency_ms));
                if (!call.done) parts.push('no result recorded');
                var li = add(ul, el('li', null, parts.filter(function (p) { return p !== ''; }).join(' \u00b7 ')));
                if (d.error !== null && d.error !== undefined) add(li, el('span', 'err', ' \u2014 ' + str(d.error)));
                if (run.scopes.has(call.id) && !visited.has(call.id)) {
                  li.appendChild(document.createTextNode(' \u2014 child loop, ' + iterationCount(run, call.id) + ' iteration(s)'));
                  add(li, list(call.id));
                }
              });
              return ul;
            }
            var root = el('ul', 'tree');
            var rootItem = add(root, el('li', null, 'root loop \u00b7 depth 0 \u00b7 ' + iterationCount(run, 'root') + ' iteration(s)'));
            add(rootItem, list('root'));
            byScope.forEach(function (calls, scope) {
              if (visited.has(scope)) return;
              var item = add(root, el('li', null, 'loop ' + scope + ' (not started by a sub-call in this file)'));
              add(item, list(scope));
            });
            if (listed < run.calls.size) add(root, el('li', 'muted', 'and ' + (run.calls.size - listed) + ' more'));
            return root;
          }

          function renderRun(run) {
            var sec = el('section', 'run');
            var fin = lastOf(run, 'run_finished'), start = first(run, 'run_started');
            var fd = fin ? dataOf(fin) : {}, sd = start ? dataOf(start) : {};
            var head = add(sec, el('div', 'run-head'));
            add(head, el('h2', null, 'Run ' + run.id));
            var status = fin ? str(fd.status) : '';
            var known = STATUS.get(status);
            add(head, el('span', 'badge ' + (known ? known[0] : 'b-none'), fin ? status : 'unfinished'));
            var u = lastUsage(run) || {};
            var dl = add(sec, el('dl', 'meta'));
            [['Model', str(sd.model)], ['Sub-model', str(sd.sub_model)], ['Started', fmtTime(run.t0)],
              ['Duration', fmtMs(num(fd.duration_ms))], ['Iterations', fin ? str(fd.iterations) : String(iterationCount(run, 'root'))],
              ['Tokens in / out', fmtInt(num(u.input_tokens)) + ' / ' + fmtInt(num(u.output_tokens))],
              ['Cost', fmtCost(num(u.cost_usd))], ['Model calls', fmtInt(num(u.model_calls))],
              ['Sub-calls', fmtInt(num(u.subcalls))], ['Events', fmtInt(run.events.length)]
            ].forEach(function (pair) {
              if (pair[1] === '') return;
              var div = add(dl, el('div'));
              add(div, el('dt', null, pair[0]));
              add(div, el('dd', null, pair[1]));
            });
            if (start && sd.query !== undefined) { sub(sec, 'Query'); add(sec, textBlock(sd.query, 'answer')); }
            add(sec, renderOutcome(run));
            add(sec, el('h3', null, 'Tokens and cost'));
            add(sec, renderTimeline(run));
            add(sec, el('h3', null, 'Sub-call tree'));
            add(sec, renderCallTree(run));
            add(sec, el('h3', null, 'Steps'));
            add(sec, renderLoop(run, 'root'));
            run.scopes.forEach(function (evs, scope) {
              if (scope === 'root' || (run.calls.has(scope) && run.calls.get(scope).scope !== scope)) return;
              add(sec, el('h3', null, 'Loop ' + scope + ' (no sub-call in this file started it)'));
              add(sec, renderLoop(run, scope));
            });
            return sec;
          }

          // ---- The page --------------------------------------------------------------------------------------

          app.textContent = '';
          add(app, el('h1', null, 'Trajectory ' + source));
          add(app, el('p', 'muted', runs.length + ' run' + (runs.length === 1 ? '' : 's') + ' \u00b7 ' +
            fmtInt(events.length) + ' events' + (unreadable.length ? ' \u00b7 ' + unreadable.length + ' unreadable line(s)' : '') +
            (eager ? '' : ' \u00b7 steps open on click')));
          if (otherSchema) {
            add(app, el('div', 'banner', otherSchema + ' event(s) are not of trajectory schema 1; they are shown as well as this viewer can.'));
          }
          if (!events.length && !unreadable.length) add(app, el('p', 'muted', 'The file holds no events.'));
          var sections = runs.map(function (run) {
            try { return renderRun(run); } catch (e) {
              var s = el('section', 'run');
              add(s, el('h2', null, 'Run ' + run.id));
              add(s, el('p', 'err', 'This run could not be shown: ' + e.message));
              return s;
            }
          });
          if (runs.length > 1) {
            var nav = add(app, el('nav', 'runs'));
            runs.forEach(function (run, i) {
              var b = add(nav, el('button', null, run.id));
              b.type = 'button';
              b.addEventListener('click', function () { sections[i].scrollIntoView(); });
            });
          }
          sections.forEach(function (s) { add(app, s); });
          if (unreadable.length) {
            var bad = add(app, el('section', 'run'));
            add(bad, el('h2', null, 'Lines that could not be read'));
            unreadable.forEach(function (u) {
              if (!isObj(u)) return;
              add(bad, el('div', 'sub', 'Line ' + str(u.line) + (u.last === true ?
                ' \u2014 the last line, cut short (the run was probably killed while writing it)' :
                ' \u2014 not a JSON object')));
              add(bad, textBlock(u.text));
            });
          }
          document.documentElement.setAttribute('data-rendered', 'yes');
          document.documentElement.setAttribute('data-script-start-ms', String(Math.round(scriptStart)));
          document.documentElement.setAttribute('data-render-ms', String(Math.round(performance.now())));
        })();
        """#
}
