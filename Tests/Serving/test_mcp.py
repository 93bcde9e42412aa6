"""`rlm mcp` (stdio) and `/mcp` on `rlm serve` (streamable HTTP) driven with the official MCP Python SDK."""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import asynccontextmanager

import httpx
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from conftest import MODEL

TOOLS = {"rlm_query", "execute_python", "load_context", "list_sessions", "close_session"}
CONTEXT_ID = re.compile(r"ctx_[0-9a-f]{24}")
SESSION_ID = re.compile(r"ses_[0-9a-f]{24}")
DEADLINE = 240  # seconds for one test's whole conversation, on a slow machine

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-03-26", "capabilities": {},
               "clientInfo": {"name": "serving-tests", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# MARK: - connecting


@pytest.fixture(params=["stdio", "http"])
def transport(request, rlm_bin, rlm_env, fake_model, root_dir):
    """How to open an MCP session: `rlm mcp` over stdio, or `/mcp` on the shared server with the main key."""
    if request.param == "stdio":
        params = StdioServerParameters(
            command=rlm_bin,
            args=["mcp", "--root", str(root_dir), "--provider", "openai", "--base-url", fake_model.url,
                  "--model", MODEL, "--api-key-env", "OPENAI_API_KEY"],
            env=rlm_env,
        )

        @asynccontextmanager
        async def open_session():
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    yield session

        return open_session
    server = request.getfixturevalue("server")
    key = request.getfixturevalue("key")
    return lambda: http_session(server.url + "/mcp", key)


@asynccontextmanager
async def http_session(url: str, key: str):
    """An MCP session over streamable HTTP with `Authorization: Bearer key`."""
    timeout = httpx.Timeout(60, read=180)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=timeout) as client:
        async with streamable_http_client(url, http_client=client) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def run(transport, conversation):
    """Runs `conversation(session)` in a fresh MCP session, within DEADLINE seconds."""

    async def main():
        async with transport() as session:
            return await conversation(session)

    return asyncio.run(asyncio.wait_for(main(), DEADLINE))


# MARK: - reading results


def text_of(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content if getattr(c, "type", None) == "text")


def everything(result) -> str:
    """The text and the structured content, for looking up ids."""
    return text_of(result) + "\n" + json.dumps(getattr(result, "structuredContent", None) or {})


def data_of(result) -> dict:
    """The structured content, else the text parsed as JSON, else {}."""
    structured = getattr(result, "structuredContent", None)
    if isinstance(structured, dict) and structured:
        return structured
    try:
        parsed = json.loads(text_of(result))
        return parsed if isinstance(parsed, dict) else {}
    except ValueError:
        return {}


def answer_of(result) -> str:
    data = data_of(result)
    if "answer" in data:
        return str(data["answer"])
    return text_of(result).strip()


def ok(result):
    assert not result.isError, f"tool error: {text_of(result)}"
    return result


def one(pattern: re.Pattern, result) -> str:
    found = pattern.findall(everything(result))
    assert found, f"no {pattern.pattern} in {everything(result)[:500]}"
    return found[0]


def types_of(schema: dict) -> set[str]:
    """The JSON types a property schema allows (`type`, a list of types, or `anyOf`/`oneOf` branches)."""
    kinds = schema.get("type")
    found = set(kinds) if isinstance(kinds, list) else {kinds} if kinds else set()
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        found |= types_of(branch)
    return found


# MARK: - tests


def test_tools_and_their_input_schemas(transport):
    async def conversation(session):
        return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in run(transport, conversation)}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description, tool.name
        assert tool.inputSchema.get("type") == "object", tool.inputSchema

    def properties(name):
        return set(tools[name].inputSchema.get("properties", {}))

    def required(name):
        return set(tools[name].inputSchema.get("required", []))

    assert {"query", "context_ids", "paths", "session_id", "max_iterations", "max_depth", "max_tokens", "max_cost",
            "timeout"} <= properties("rlm_query")
    assert required("rlm_query") == {"query"}
    rlm_query = tools["rlm_query"].inputSchema["properties"]
    assert "string" in types_of(rlm_query["query"])
    assert "array" in types_of(rlm_query["context_ids"]) and "array" in types_of(rlm_query["paths"])
    assert "integer" in types_of(rlm_query["max_iterations"])
    assert "string" in types_of(tools["execute_python"].inputSchema["properties"]["code"])
    assert {"code", "session_id"} <= properties("execute_python") and required("execute_python") == {"code"}
    assert {"path", "text", "name"} <= properties("load_context") and not required("load_context")
    assert not properties("list_sessions") and not required("list_sessions")
    assert properties("close_session") == {"session_id"} and required("close_session") == {"session_id"}


def test_execute_python_keeps_state_in_a_session(transport):
    async def conversation(session):
        first = ok(await session.call_tool("execute_python", {"code": "x = 41\nprint(x)"}))
        assert "41" in text_of(first)
        sid = one(SESSION_ID, first)
        second = ok(await session.call_tool("execute_python", {"code": "print(x + 1)", "session_id": sid}))
        assert "42" in text_of(second)
        fresh = await session.call_tool("execute_python", {"code": "print(x)"})  # a new session: no x
        assert "NameError" in text_of(fresh)
        other = one(SESSION_ID, fresh)
        assert other != sid
        failing = await session.call_tool("execute_python", {"code": "1/0", "session_id": sid})
        assert "ZeroDivisionError" in text_of(failing)
        again = ok(await session.call_tool("execute_python", {"code": "print(x * 2)", "session_id": sid}))
        assert "82" in text_of(again)

        listed = ok(await session.call_tool("list_sessions", {}))
        assert sid in everything(listed) and other in everything(listed)
        ok(await session.call_tool("close_session", {"session_id": sid}))
        ok(await session.call_tool("close_session", {"session_id": other}))
        assert sid not in everything(ok(await session.call_tool("list_sessions", {})))
        gone = await session.call_tool("execute_python", {"code": "print(x)", "session_id": sid})
        assert gone.isError, text_of(gone)
        unknown = await session.call_tool("close_session", {"session_id": "ses_" + "0" * 24})
        assert unknown.isError, text_of(unknown)

    run(transport, conversation)


def test_load_context_and_rlm_query(transport, root_dir):
    async def conversation(session):
        plain = ok(await session.call_tool("rlm_query", {"query": "count:ERROR"}))
        assert answer_of(plain) == "0"

        text = ok(await session.call_tool("load_context", {"text": "alpha ERROR beta ERROR gamma ERROR",
                                                           "name": "inline"}))
        text_id = one(CONTEXT_ID, text)
        answered = ok(await session.call_tool("rlm_query", {"query": "count:ERROR", "context_ids": [text_id],
                                                            "max_iterations": 5}))
        assert answer_of(answered) == "3"

        loaded = ok(await session.call_tool("load_context", {"path": str(root_dir / "app.log")}))
        path_id = one(CONTEXT_ID, loaded)
        answered = ok(await session.call_tool("rlm_query", {"query": "count:ERROR", "context_ids": [path_id]}))
        assert answer_of(answered) == "2"

        by_path = ok(await session.call_tool("rlm_query", {"query": "count:ERROR",
                                                           "paths": [str(root_dir / "sub" / "notes.txt")]}))
        assert answer_of(by_path) == "1"

    run(transport, conversation)


def test_paths_outside_the_root_are_error_results(transport, root_dir, scratch):
    outside = [
        "/etc/passwd",
        str(scratch / "outside.txt"),
        str(root_dir) + "/../outside.txt",
        str(root_dir / "sub" / ".." / ".." / "outside.txt"),
        str(root_dir / "escape.txt"),  # a symbolic link to outside.txt
        str(root_dir / "escape-dir" / "outside.txt"),  # through a linked directory
    ]

    async def conversation(session):
        for path in outside:
            result = await session.call_tool("load_context", {"path": path})
            assert result.isError, f"load_context {path}: {everything(result)[:300]}"
            assert "secret ERROR outside" not in everything(result)
            result = await session.call_tool("rlm_query", {"query": "count:ERROR", "paths": [path]})
            assert result.isError, f"rlm_query paths={path}: {everything(result)[:300]}"
            assert "secret ERROR outside" not in everything(result)
        neither = await session.call_tool("load_context", {})
        assert neither.isError, everything(neither)
        # Still serving.
        ok(await session.call_tool("list_sessions", {}))
        loaded = ok(await session.call_tool("load_context", {"path": str(root_dir / "app.log")}))
        one(CONTEXT_ID, loaded)

    run(transport, conversation)


def test_http_mcp_needs_a_key(server):
    http = server.http()
    for headers in ({}, {"Authorization": "Bearer rlm_" + "0" * 64}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        response = http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **headers})
        assert response.status_code == 401, response.text[:300]
        assert http.get("/mcp", headers={"Accept": "text/event-stream", **headers}).status_code == 401

    async def attempt():
        async with http_session(server.url + "/mcp", "rlm_wrong"):
            pass

    with pytest.raises(BaseException) as caught:
        asyncio.run(asyncio.wait_for(attempt(), 60))
    assert not isinstance(caught.value, asyncio.TimeoutError), "the SDK hung on a refused key"


def test_http_mcp_refuses_a_foreign_origin(server, key):
    response = server.http(key).post(
        "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": "https://evil.example"}
    )
    assert response.status_code == 403, response.text[:300]
    response = server.http(key).post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert response.status_code == 200, response.text[:300]
