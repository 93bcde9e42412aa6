#!/usr/bin/env python3
"""A tiny OpenAI-compatible model server that scripts an RLM, for the serving tests.

    python3 fake_model.py [--host 127.0.0.1] [--port 0] [--delay SECONDS]

Prints ``listening on http://HOST:PORT`` on stdout once it accepts connections. Serves:

- ``GET /v1/models``: one model, ``fake-model``.
- ``POST /v1/chat/completions``: a non-streaming ``chat.completion`` with a realistic ``usage`` (and, when the request
  asks for ``stream: true``, the same reply as SSE chunks).
- ``GET /_fake/stats``: ``{"chat_requests", "in_flight", "served", "models_requests"}`` (for the tests to wait on).
- ``POST /_fake/config``: ``{"delay": SECONDS}`` changes the delay of later replies.

Deterministic and without latency (unless ``--delay``). The replies script an RLM over the engine's own prompts
(Sources/RLM/Prompts.swift):

1. The latest question is the last user message that starts ``Question: `` (the first question of a run) or
   ``A new question about the same `context``` (a follow-up in a session). While no user message after it carries
   ``REPL output``, the reply is a ```` ```repl ```` block chosen from the question's words:
   - ``count:WORD``   prints how many times WORD occurs in ``context`` (a str, each of a list of documents, or a
     structure as JSON), so the answer does not depend on how the server joins or labels documents;
   - ``set:NAME=INT`` assigns the variable and prints it;
   - ``get:NAME``     prints the variable (a NameError when it is not there: the answer is then ``undefined``);
   - ``sleep:SECONDS`` sleeps in the sandbox, then prints ``slept``;
   - ``subcall``      prints ``llm_query("ping")`` (this server answers ``pong`` to a prompt that is not an RLM's);
   - ``fail:upstream`` makes this server answer the request with an HTTP 400 error instead;
   - anything else    prints the length of ``context`` (joined when it is a list, as JSON when structured).
2. Once a user message after the question carries the REPL's output (``REPL output:`` then a ```` ```text ```` fence),
   the reply is ``FINAL(<the output's first line>)``; an error in the output answers ``FINAL(error NameOfError)``,
   except that a NameError answers ``FINAL(undefined)``.
3. The engine's last request (``You have no steps left``) gets the same FINAL from the latest output, if any.
4. Any other conversation (an ``llm_query`` sub-call) gets ``pong``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-model"
FIRST_QUESTION = "Question: "
FOLLOW_UP = "A new question about the same `context`"
OUTPUT_FENCE = re.compile(r"REPL output[^\n]*:\n```text\n(.*?)\n```", re.S)
ERROR_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Interrupt|Exit))\b", re.M)
WORD = r"([A-Za-z0-9_.\-]+)"


def text_of(content) -> str:
    """A message's text: a str, or OpenAI's list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def question_text(message: str) -> str:
    """The question alone, without the sample of the context the engine adds after it."""
    if message.startswith(FIRST_QUESTION):
        body = message[len(FIRST_QUESTION):]
        for marker in ("\n\nHow `context` begins", "\n\nThere is no context to explore", "\nHow `context` begins"):
            cut = body.find(marker)
            if cut >= 0:
                body = body[:cut]
        return body.strip()
    # "A new question about the same `context` (your variables are still there): QUERY"
    cut = message.find("): ")
    return message[cut + 3:].strip() if cut >= 0 else message


def code_for(question: str) -> str:
    """The repl block for a question (see the module's docstring)."""
    if match := re.search(r"count:" + WORD, question):
        word = match.group(1)
        return (
            "import json\n"
            "docs = context if isinstance(context, list) else [context]\n"
            "docs = [d if isinstance(d, str) else json.dumps(d) for d in docs]\n"
            f"print(sum(d.count({word!r}) for d in docs))"
        )
    if match := re.search(r"set:([A-Za-z_][A-Za-z0-9_]*)=(-?[0-9]+)", question):
        name, value = match.group(1), match.group(2)
        return f"{name} = {value}\nprint({name})"
    if match := re.search(r"get:([A-Za-z_][A-Za-z0-9_]*)", question):
        return f"print({match.group(1)})"
    if match := re.search(r"sleep:([0-9]+(?:\.[0-9]+)?)", question):
        return f"import time\ntime.sleep({float(match.group(1))})\nprint('slept')"
    if "subcall" in question:
        return 'print(llm_query("ping"))'
    return (
        "import json\n"
        "data = context\n"
        "if isinstance(data, list):\n"
        "    data = '\\n'.join(str(d) for d in data)\n"
        "elif not isinstance(data, str):\n"
        "    data = json.dumps(data)\n"
        "print(len(data))"
    )


def final_from(output: str) -> str:
    """``FINAL(…)`` from what the REPL printed."""
    errors = ERROR_LINE.findall(output)
    if "Traceback" in output or errors:
        kind = errors[-1] if errors else "Error"
        answer = "undefined" if kind == "NameError" else f"error {kind}"
    else:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        answer = lines[0] if lines else "none"
        if answer.startswith("(no output"):
            answer = "none"
    # Keep FINAL(...) balanced whatever the output held.
    answer = answer.replace("(", "[").replace(")", "]")[:200]
    return f"FINAL({answer})"


def script(messages: list[dict]) -> tuple[str, bool]:
    """The reply to a conversation, and whether the server should fail it (``fail:upstream``)."""
    texts = [(m.get("role"), text_of(m.get("content"))) for m in messages]
    question_at = None
    for index in range(len(texts) - 1, -1, -1):
        role, text = texts[index]
        if role == "user" and (text.startswith(FIRST_QUESTION) or text.startswith(FOLLOW_UP)):
            question_at = index
            break
    if question_at is None:
        return "pong", False
    question = question_text(texts[question_at][1])
    if "fail:upstream" in question:
        return "", True
    outputs = []
    for role, text in texts[question_at + 1:]:
        if role == "user":
            outputs += OUTPUT_FENCE.findall(text)
    if outputs:
        return final_from(outputs[-1]), False
    last_role, last_text = texts[-1]
    if last_role == "user" and last_text.startswith("You have no steps left"):
        return "FINAL(none)", False
    return "```repl\n" + code_for(question) + "\n```", False


def tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


class State:
    def __init__(self, delay: float):
        self.lock = threading.Lock()
        self.delay = delay
        self.chat_requests = 0
        self.in_flight = 0
        self.served = 0
        self.models_requests = 0
        self.sequence = 0

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "chat_requests": self.chat_requests,
                "in_flight": self.in_flight,
                "served": self.served,
                "models_requests": self.models_requests,
                "delay": self.delay,
            }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-model/1"
    state: State  # set on the subclass made by serve()

    def log_message(self, format, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        # Without it a keep-alive client waits ~40 ms for each reply (Nagle against delayed ACKs).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # MARK: plumbing

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, value) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status: int, message: str, kind: str = "invalid_request_error", code=None) -> None:
        self.send_json(status, {"error": {"message": message, "type": kind, "code": code, "param": None}})

    # MARK: routes

    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/models"):
            with self.state.lock:
                self.state.models_requests += 1
            self.send_json(
                200,
                {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "fake"}]},
            )
        elif path.endswith("/models/" + MODEL):
            self.send_json(200, {"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "fake"})
        elif path == "/_fake/stats":
            self.send_json(200, self.state.snapshot())
        else:
            self.error(404, f"no route {path}", code="not_found")

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        raw = self.read_body()
        if path == "/_fake/config":
            try:
                config = json.loads(raw or b"{}")
                with self.state.lock:
                    self.state.delay = float(config.get("delay", self.state.delay))
            except (ValueError, TypeError):
                return self.error(400, "bad config")
            return self.send_json(200, self.state.snapshot())
        if not path.endswith("/chat/completions"):
            return self.error(404, f"no route {path}", code="not_found")
        try:
            request = json.loads(raw)
            messages = request["messages"]
            assert isinstance(messages, list) and messages
        except (ValueError, KeyError, AssertionError, TypeError):
            return self.error(400, "the body must be JSON with a non-empty messages list")
        with self.state.lock:
            self.state.chat_requests += 1
            self.state.in_flight += 1
            self.state.sequence += 1
            sequence = self.state.sequence
            delay = self.state.delay
        try:
            if delay > 0:
                time.sleep(delay)
            reply, fail = script(messages)
            if fail:
                return self.error(400, "the fake model was asked to fail", code="fake_failure")
            self.reply(request, messages, reply, sequence)
        finally:
            with self.state.lock:
                self.state.in_flight -= 1
                self.state.served += 1

    def reply(self, request: dict, messages: list, text: str, sequence: int) -> None:
        prompt = sum(tokens(text_of(m.get("content"))) + 4 for m in messages)
        completion = tokens(text)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        ident = f"chatcmpl-fake-{sequence}"
        created = int(time.time())
        model = request.get("model") or MODEL
        if not request.get("stream"):
            return self.send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
        # Streaming: SSE on a connection closed at the end (no length to give).
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(choices, usage_value=None):
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
            if usage_value is not None:
                chunk["usage"] = usage_value
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for start in range(0, len(text), 16):
            event([{"index": 0, "delta": {"content": text[start:start + 16]}, "finish_reason": None}])
        event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (request.get("stream_options") or {}).get("include_usage"):
            event([], usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def serve(host: str = "127.0.0.1", port: int = 0, delay: float = 0.0) -> Server:
    """A server bound and ready (not yet serving: call ``serve_forever``)."""
    handler = type("BoundHandler", (Handler,), {"state": State(delay)})
    return Server((host, port), handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each chat reply")
    args = parser.parse_args()
    server = serve(args.host, args.port, args.delay)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
