"""Schemathesis against docs/openapi.json and the live server (over the fake model), with a valid key.

The document is taken as it is, with three changes for this deployment: the server's URL, the one model it serves
(`fake-model`, so generated chat requests run an RLM instead of all being 404s) and `rlm.max_iterations` kept small.
Set SCHEMATHESIS_SEED to replay a run, SCHEMATHESIS_MAX_EXAMPLES to change its size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import MODEL, OPENAPI

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "ignored_auth",
]


def deployed_schema(url: str) -> dict:
    schema = json.loads(OPENAPI.read_text())
    schema["servers"] = [{"url": url}]
    components = schema["components"]["schemas"]
    for name in ("ChatCompletionRequest", "SessionCreateRequest"):
        components[name]["properties"]["model"] = {"type": "string", "enum": [MODEL]}
    components["RLMOptions"]["properties"]["max_iterations"]["maximum"] = 3
    return schema


def test_the_server_conforms_to_the_openapi_document(server, keys, tmp_path):
    key = keys.create("schemathesis", rpm=1000000, max_concurrent=8)
    schema_path = tmp_path / "openapi.json"
    schema_path.write_text(json.dumps(deployed_schema(server.url)))
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(schema_path),
        "--url", server.url,
        "--header", f"Authorization: Bearer {key}",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"),
        "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261130"),
        "--workers", "1",
        "--request-timeout", "60",
        "--suppress-health-check", "all",
        "--output-truncate", "false",
        "--report", "junit",
        "--report-dir", str(tmp_path / "report"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    output = result.stdout + result.stderr
    print(output[-6000:])
    assert result.returncode == 0, "schemathesis found problems:\n" + output[-15000:]
