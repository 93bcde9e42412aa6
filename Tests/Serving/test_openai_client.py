"""`rlm serve` driven with the official `openai` client (and httpx where the client cannot say it): answers, streaming,
keys and their limits, body limits, contexts, sessions, errors, CORS."""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from conftest import MODEL, Keys, assert_error, assert_no_leak

CONTEXT_ID = re.compile(r"^ctx_[0-9a-f]{24}$")
SESSION_ID = re.compile(r"^ses_[0-9a-f]{24}$")


def as_dict(obj) -> dict:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def ask(client, question: str, *, earlier=(), **rlm):
    """One completion: `earlier` messages, then the question as the last user message."""
    messages = list(earlier) + [{"role": "user", "content": question}]
    extra = {"rlm": rlm} if rlm else None
    return client.chat.completions.create(model=MODEL, messages=messages, extra_body=extra)


def answer(completion) -> str | None:
    return completion.choices[0].message.content


def log_with_errors(errors: int, size: int | None = None) -> bytes:
    """A log with exactly `errors` lines holding ERROR, padded with other lines to about `size` bytes."""
    line = b"an ERROR line\n"
    filler = b"an ordinary line of the log, nothing to see here\n"
    body = line * errors
    if size:
        body += filler * max(0, (size - len(body)) // len(filler))
    return body


# MARK: - answers


def test_models(server, key):
    models = server.client(key).models.list()
    assert MODEL in [m.id for m in models.data]
    raw = server.http(key).get("/v1/models")
    assert raw.status_code == 200
    body = raw.json()
    assert body["object"] == "list"
    assert all(item["object"] == "model" and isinstance(item["id"], str) for item in body["data"])


def test_answer_over_earlier_messages(server, key):
    client = server.client(key)
    earlier = [
        {"role": "system", "content": "You are a log reader."},
        {"role": "user", "content": "Here is the log:\nok\nERROR one\nok\nERROR two\nERROR three\n"},
        {"role": "assistant", "content": "Noted."},
    ]
    completion = ask(client, "count:ERROR", earlier=earlier)
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert answer(completion) == "3"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    rlm = as_dict(completion)["rlm"]
    assert rlm["status"] == "answered"
    assert rlm["iterations"] >= 1
    assert "cost_usd" in rlm and "trajectory" in rlm
    assert_no_leak(json.dumps(as_dict(completion)))


def test_content_as_text_parts(server, key):
    client = server.client(key)
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "ERROR a\n"}, {"type": "text", "text": "ERROR b\n"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "count:ERROR"}]},
        ],
    )
    assert answer(completion) == "2"


def test_sampling_fields_are_accepted_and_ignored(server, key):
    completion = server.client(key).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "ERROR"}, {"role": "user", "content": "count:ERROR"}],
        temperature=0.3, top_p=0.9, max_tokens=5, stop=["\n"], seed=1, user="someone",
    )
    assert answer(completion) == "1"


def test_unknown_model_is_404(server, key):
    with pytest.raises(openai.NotFoundError) as caught:
        server.client(key).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "count:ERROR"}]
        )
    error = assert_error(caught.value.response, 404)
    assert error["code"] == "model_not_found"


def test_upstream_failure_is_an_error_without_secrets(server, key):
    response = server.http(key).post(
        "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "fail:upstream"}]}
    )
    assert_error(response, (500, 502))


def test_quick_start_snippet(server, key):
    """docs/SERVING.md's quick start (with `content=`: openai 3.x deprecates raw bytes as `body=`). The client sends
    the raw bytes as `application/json`: the server must take them as they are."""
    client = server.client(key)
    ctx = client.post("/contexts", content=log_with_errors(7, 4096), cast_to=dict)
    assert CONTEXT_ID.match(ctx["id"]), ctx
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "How many ERROR lines are there? count:ERROR"}],
        extra_body={"rlm": {"contexts": [ctx["id"]], "max_iterations": 10}},
    )
    assert answer(reply) == "7"


# MARK: - streaming


def test_streaming_with_the_client(server, key):
    client = server.client(key)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "ERROR\nERROR\n"}, {"role": "user", "content": "count:ERROR"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks, "no chunk"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant"
    progress = [
        as_dict(c)["rlm"] for c in chunks
        if as_dict(c).get("rlm") and c.choices and not c.choices[0].delta.content and not c.choices[0].finish_reason
    ]
    assert progress, "no progress chunk with an `rlm` field"
    # Each says what happens (the event's kind) and in which root iteration.
    assert all(isinstance(p.get("event"), str) and isinstance(p.get("iteration"), int) for p in progress), progress
    assert any(p["iteration"] >= 1 for p in progress), progress
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "2"
    finishing = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and chunks[finishing[0]].choices[0].finish_reason == "stop"
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage is not None, "the usage chunk is not last"
    assert usage.usage.total_tokens == usage.usage.prompt_tokens + usage.usage.completion_tokens > 0
    assert finishing[0] < len(chunks) - 1


def sse_events(response: httpx.Response) -> list[str]:
    events, data = [], []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line == "" and data:
            events.append("\n".join(data))
            data = []
    if data:
        events.append("\n".join(data))
    return events


def test_streaming_raw_sse_ends_with_done(server, key):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "count:ERROR"}],
        "stream": True,
    }
    with server.http(key).stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events and events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c.get("object") == "chat.completion.chunk" for c in chunks), chunks
    assert not any(c.get("usage") for c in chunks), "a usage chunk without stream_options.include_usage"
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"]) == "0"
    assert_no_leak("\n".join(events))


# MARK: - keys


def test_same_401_without_a_key_with_a_wrong_one_and_a_revoked_one(server, keys: Keys):
    http = server.http()
    revoked_name = "to-revoke"
    revoked = keys.create(revoked_name)
    assert server.client(revoked).models.list().data  # works before

    keys.revoke(revoked_name)
    bodies = {}
    for label, headers in {
        "missing": {},
        "malformed": {"Authorization": "Basic Zm9vOmJhcg=="},
        "bare scheme": {"Authorization": "Bearer"},
        "unknown": {"Authorization": "Bearer rlm_" + "0" * 64},
        "wrong": {"Authorization": "Bearer " + revoked[:-4] + "abcd"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }.items():
        response = http.get("/v1/models", headers=headers)
        assert_error(response, 401)
        bodies[label] = response.json()
    assert len({json.dumps(b, sort_keys=True) for b in bodies.values()}) == 1, bodies

    with pytest.raises(openai.AuthenticationError):
        server.client("rlm_wrong_key").models.list()
    with pytest.raises(openai.AuthenticationError):
        server.client(revoked).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    # Authentication comes before the body is looked at.
    assert_error(http.post("/v1/chat/completions", content=b"not json"), 401)
    for path in ("/v1/contexts", "/v1/sessions", "/metrics"):
        assert_error(http.get(path), 401)


def test_429_past_the_requests_per_minute(server, keys: Keys):
    client = server.client(keys.create(rpm=3))
    for _ in range(3):
        client.models.list()
    with pytest.raises(openai.RateLimitError) as caught:
        client.models.list()
    response = caught.value.response
    assert_error(response, 429)
    retry = response.headers.get("retry-after")
    assert retry is not None and retry.isdigit() and 1 <= int(retry) <= 60, retry
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "count:ERROR"}])


def test_429_past_the_concurrent_runs(server, keys: Keys, fake_model):
    client = server.client(keys.create(max_concurrent=1, rpm=1000))
    before = fake_model.stats()["served"]
    results = {}

    def slow():
        results["slow"] = answer(ask(client, "sleep:4"))

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.time() + 60
    while fake_model.stats()["served"] <= before and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the cell is sleeping in the sandbox now
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client, "count:ERROR")
    assert_error(caught.value.response, 429)
    assert caught.value.response.headers.get("retry-after", "").isdigit()
    thread.join(120)
    assert results.get("slow") == "slept"
    assert answer(ask(client, "count:ERROR")) == "0"  # a slot again


def test_tokens_per_day_cut_the_run_then_refuse(server, keys: Keys):
    client = server.client(keys.create(tokens_per_day=2500, rpm=1000))
    assert answer(ask(client, "count:ERROR")) == "0"  # about 1,300 tokens
    outcomes = []
    for _ in range(4):
        response = server.http(client.api_key).post(
            "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "count:ERROR"}]}
        )
        assert response.status_code < 500, response.text
        if response.status_code == 429:
            assert_error(response, 429)
            assert response.headers.get("retry-after", "").isdigit()
            outcomes.append("429")
            break
        assert response.status_code == 200, response.text
        body = response.json()
        if body["rlm"]["status"] == "budget_exhausted":
            assert body["choices"][0]["message"]["content"] is None
            assert body["choices"][0]["finish_reason"] == "length"
            outcomes.append("cut")
        else:
            outcomes.append(body["rlm"]["status"])
    assert "429" in outcomes or "cut" in outcomes, outcomes


# MARK: - body limits


def raw_request(url: str, head: bytes, chunks, timeout: float = 60) -> tuple[int, dict, bytes]:
    """Sends a request by hand, stopping early (without error) when the server answers before the body is sent.
    Returns the status, headers and body."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    try:
        sock.sendall(head)
        sock.setblocking(False)
        for chunk in chunks:
            view = memoryview(chunk)
            answered = False
            while view:
                readable, writable, _ = select.select([sock], [sock], [], timeout)
                if readable:
                    answered = True
                    break
                if not writable:
                    raise TimeoutError("the server neither read the body nor answered")
                try:
                    view = view[sock.send(view):]
                except (BrokenPipeError, ConnectionResetError):
                    answered = True
                    break
            if answered:
                break
        sock.setblocking(True)
        sock.settimeout(timeout)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        sock.close()


def test_413_for_a_body_over_max_body(server, key):
    size = 3 << 19  # 1.5 MiB against --max-body 1
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * size}]}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    status, headers, payload = raw_request(server.url, head, [body[i:i + 65536] for i in range(0, len(body), 65536)])
    assert status == 413, payload[:300]
    assert_error(httpx.Response(status, headers=headers, content=payload), 413)

    # Chunked, with no length to refuse up front: the limit holds on the bytes read.
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    pieces = [b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536]) for i in range(0, len(body), 65536)]
    status, headers, payload = raw_request(server.url, head, pieces + [b"0\r\n\r\n"])
    assert status == 413, payload[:300]
    assert_error(httpx.Response(status, headers=headers, content=payload), 413)


def test_a_body_under_max_body_is_served(server, key):
    filler = ("ERROR " + "x" * 94 + "\n") * 9000  # ~900 KB against --max-body 1 (MiB)
    completion = ask(server.client(key), "count:ERROR", earlier=[{"role": "user", "content": filler}])
    assert answer(completion) == "9000"


# MARK: - contexts


def upload_raw(http: httpx.Client, data: bytes, name: str | None = None, content_type="application/octet-stream"):
    params = {"name": name} if name else None
    return http.post("/v1/contexts", content=data, params=params, headers={"Content-Type": content_type})


def test_context_raw_upload_over_max_body_then_answer_get_list_delete(server, key):
    http = server.http(key)
    data = log_with_errors(321, 3 << 19)  # 1.5 MiB: uploads have their own limit, not --max-body
    response = upload_raw(http, data, name="app.log")
    assert response.status_code == 200, response.text
    ctx = response.json()
    assert CONTEXT_ID.match(ctx["id"]), ctx
    assert ctx["bytes"] == len(data) and ctx["name"] == "app.log"

    completion = ask(server.client(key), "count:ERROR", contexts=[ctx["id"]])
    assert answer(completion) == "321"

    got = http.get(f"/v1/contexts/{ctx['id']}")
    assert got.status_code == 200
    assert {k: got.json()[k] for k in ("id", "bytes", "name")} == {k: ctx[k] for k in ("id", "bytes", "name")}
    listed = http.get("/v1/contexts")
    assert listed.status_code == 200 and listed.json()["object"] == "list"
    assert ctx["id"] in [c["id"] for c in listed.json()["data"]]

    deleted = http.delete(f"/v1/contexts/{ctx['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["id"] == ctx["id"] and deleted.json()["deleted"] is True
    assert_error(http.get(f"/v1/contexts/{ctx['id']}"), 404)
    assert_error(http.delete(f"/v1/contexts/{ctx['id']}"), 404)
    assert ctx["id"] not in [c["id"] for c in http.get("/v1/contexts").json()["data"]]
    with pytest.raises(openai.NotFoundError) as caught:
        ask(server.client(key), "count:ERROR", contexts=[ctx["id"]])
    assert_error(caught.value.response, 404)


def test_context_text_plain_and_the_client_post(server, key):
    client = server.client(key)
    ctx = client.post(
        "/contexts", content=log_with_errors(4, 1000), cast_to=dict,
        options={"params": {"name": "plain"}, "headers": {"Content-Type": "text/plain"}},
    )
    assert CONTEXT_ID.match(ctx["id"]) and ctx["name"] == "plain"
    assert answer(ask(client, "count:ERROR", contexts=[ctx["id"]])) == "4"


def test_context_multipart_upload(server, key):
    http = server.http(key)
    data = log_with_errors(12, 20000)
    response = http.post("/v1/contexts", files={"file": ("server.log", data, "text/plain")})
    assert response.status_code == 200, response.text
    ctx = response.json()
    assert CONTEXT_ID.match(ctx["id"]) and ctx["bytes"] == len(data)
    named = http.post("/v1/contexts", params={"name": "labelled"}, files={"file": ("x.bin", data, "application/octet-stream")})
    assert named.status_code == 200 and named.json()["name"] == "labelled"
    assert_error(http.post("/v1/contexts", files={"other": ("x", b"data", "text/plain")}), 400)
    # Two documents: the count covers both.
    assert answer(ask(server.client(key), "count:ERROR", contexts=[ctx["id"], named.json()["id"]])) == "24"


def test_another_keys_context_is_404_like_a_missing_one(server, key, other_key):
    mine = upload_raw(server.http(key), log_with_errors(2, 100)).json()["id"]
    missing = "ctx_" + "0" * 24
    theirs = server.http(other_key)
    for method in ("GET", "DELETE"):
        foreign = theirs.request(method, f"/v1/contexts/{mine}")
        absent = theirs.request(method, f"/v1/contexts/{missing}")
        a, b = assert_error(foreign, 404), assert_error(absent, 404)
        assert (a["type"], a["code"], a["message"].replace(mine, "ID")) == \
               (b["type"], b["code"], b["message"].replace(missing, "ID"))
    for ids in ([mine], [missing]):
        with pytest.raises(openai.NotFoundError) as caught:
            ask(server.client(other_key), "count:ERROR", contexts=ids)
        assert_error(caught.value.response, 404)
    assert mine not in [c["id"] for c in theirs.get("/v1/contexts").json()["data"]]
    # Still there for its owner.
    assert server.http(key).get(f"/v1/contexts/{mine}").status_code == 200


# MARK: - sessions


def test_sessions_keep_variables_across_questions(server, key, other_key):
    http = server.http(key)
    ctx = upload_raw(http, log_with_errors(5, 2000)).json()["id"]
    created = http.post("/v1/sessions", json={"contexts": [ctx], "model": MODEL})
    assert created.status_code == 200, created.text
    session = created.json()
    sid = session["id"]
    assert SESSION_ID.match(sid) and session["object"] == "session"
    assert session["contexts"] == [ctx]
    assert session["expires_at"] > session["created"] > 0

    client = server.client(key)
    assert answer(ask(client, "set:secret=41", session=sid)) == "41"
    assert answer(ask(client, "get:secret", session=sid)) == "41"
    assert answer(ask(client, "count:ERROR", session=sid)) == "5"
    assert answer(ask(client, "get:secret")) == "undefined"  # no session: a fresh REPL

    assert sid in [s["id"] for s in http.get("/v1/sessions").json()["data"]]
    theirs = server.http(other_key)
    assert sid not in [s["id"] for s in theirs.get("/v1/sessions").json()["data"]]
    assert_error(theirs.delete(f"/v1/sessions/{sid}"), 404)
    with pytest.raises(openai.NotFoundError):
        ask(server.client(other_key), "get:secret", session=sid)

    closed = http.delete(f"/v1/sessions/{sid}")
    assert closed.status_code == 200 and closed.json()["deleted"] is True
    assert_error(http.delete(f"/v1/sessions/{sid}"), 404)
    with pytest.raises(openai.NotFoundError):
        ask(client, "get:secret", session=sid)


def test_a_session_over_another_keys_context_is_404(server, key, other_key):
    mine = upload_raw(server.http(key), b"ERROR").json()["id"]
    assert_error(server.http(other_key).post("/v1/sessions", json={"contexts": [mine]}), 404)


# MARK: - errors


def test_errors_are_openai_shaped_without_traces_or_paths(server, key):
    http = server.http(key)
    chat = "/v1/chat/completions"
    user = [{"role": "user", "content": "count:ERROR"}]
    deep = b'{"model": "fake-model", "messages": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    cases = [
        ("POST", chat, {"content": b"not json"}, 400),
        ("POST", chat, {"content": b"\xff\xfe\x00 invalid utf-8"}, 400),
        ("POST", chat, {"content": b""}, 400),
        ("POST", chat, {"content": deep}, 400),
        ("POST", chat, {"json": {}}, 400),
        ("POST", chat, {"json": [1, 2]}, 400),
        ("POST", chat, {"json": {"messages": user}}, 400),
        ("POST", chat, {"json": {"model": MODEL}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": []}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": "count:ERROR"}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": [{"role": "system", "content": "no question"}]}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": [{"role": "user", "content": 42}]}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}}, 400),
        ("POST", chat, {"json": {"model": 7, "messages": user}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "stream": "yes"}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"max_iterations": -1}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"max_iterations": 0}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"max_iterations": "ten"}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"max_iterations": 10**30}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"max_depth": -1}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"timeout": -5}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"max_cost": "a lot"}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"max_tokens": 1.5}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"bogus": 1}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"contexts": "ctx_x"}}}, 400),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"contexts": ["../../etc/passwd"]}}}, (400, 404)),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": {"session": "/etc/passwd"}}}, (400, 404)),
        ("POST", chat, {"json": {"model": MODEL, "messages": user, "rlm": "fast"}}, 400),
        ("GET", "/v1/contexts/not-an-id", {}, (400, 404)),
        ("GET", "/v1/contexts/..%2F..%2Fetc%2Fpasswd", {}, (400, 404)),
        ("DELETE", "/v1/sessions/ses_zz", {}, (400, 404)),
        ("GET", "/v1/no-such-endpoint", {}, 404),
        ("POST", "/v1/sessions", {"json": {"contexts": "ctx_x"}}, 400),
        ("POST", "/v1/sessions", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", "/v1/sessions", {"json": {"model": "no-such-model"}}, 404),
        ("POST", "/v1/contexts", {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 400),
        ("POST", "/v1/contexts", {"content": b"data", "params": {"name": "x" * 1000}}, 400),
    ]
    failures = []
    for method, path, kwargs, status in cases:
        response = http.request(method, path, **kwargs)
        try:
            assert_error(response, status, extra_markers=(str(server.store),))
        except AssertionError as error:
            failures.append(f"{method} {path} {str(kwargs)[:160]}: {str(error)[:600]}")
    assert not failures, f"{len(failures)} of {len(cases)} bad requests:\n" + "\n".join(failures)
    assert server.http().get("/healthz").status_code == 200, "the server did not survive the bad requests"


def test_a_method_a_path_does_not_have_is_405(server, key):
    http = server.http(key)
    for method, path, allowed in (("PUT", "/v1/models", "GET"), ("DELETE", "/v1/chat/completions", "POST"),
                                  ("PATCH", "/v1/contexts", "GET")):
        response = http.request(method, path)
        assert_error(response, 405)
        assert allowed in response.headers.get("allow", ""), response.headers


# MARK: - health and metrics


def test_health_and_readiness_need_no_key(server):
    http = server.http()
    health = http.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_metrics_need_a_key(server, key):
    assert_error(server.http().get("/metrics"), 401)
    response = server.http(key).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in response.text or "# HELP" in response.text
    assert_no_leak(response.text)


# MARK: - CORS


def access_control(response: httpx.Response) -> dict:
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def preflight(http: httpx.Client, origin: str) -> httpx.Response:
    return http.options(
        "/v1/chat/completions",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )


def test_no_cors_headers_without_cors_origin(server, key):
    http = server.http(key)
    for origin in ("https://app.example", "null", "http://127.0.0.1"):
        response = http.get("/v1/models", headers={"Origin": origin})
        assert response.status_code == 200
        assert access_control(response) == {}, response.headers
        response = preflight(server.http(), origin)
        assert response.status_code < 500
        assert access_control(response) == {}, response.headers
    assert access_control(server.http().get("/v1/models", headers={"Origin": "https://app.example"})) == {}


def test_cors_origin_is_echoed_for_the_allowed_origin_only(start_server, rlm_bin, rlm_env):
    allowed = "https://app.example"
    cors = start_server(["--cors-origin", allowed])
    key = Keys(rlm_bin, cors.store, rlm_env).create("cors", rpm=1000)
    http = cors.http(key)
    response = http.get("/v1/models", headers={"Origin": allowed})
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") == allowed
    response = http.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in {k.lower() for k in response.headers}

    answered = preflight(cors.http(), allowed)  # no key: a browser's preflight carries none
    assert answered.status_code in (200, 204), answered.text
    headers = access_control(answered)
    assert headers.get("access-control-allow-origin") == allowed, headers
    assert "POST" in headers.get("access-control-allow-methods", "").upper(), headers
    allowed_headers = headers.get("access-control-allow-headers", "").lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers, headers
    refused = preflight(cors.http(), "https://evil.example")
    assert "access-control-allow-origin" not in access_control(refused), refused.headers

    completion = cors.http(key).post(
        "/v1/chat/completions", headers={"Origin": allowed},
        json={"model": MODEL, "messages": [{"role": "user", "content": "count:ERROR"}]},
    )
    assert completion.status_code == 200
    assert completion.headers.get("access-control-allow-origin") == allowed
