"""Serve one GGUF model with llama.cpp's OpenAI-compatible server (the xllamacpp wheel) on loopback.

Run by SwiftRLM's LocalModelServer with the private venv's python:

    serve_llama.py --model PATH --port PORT --ctx N_CTX --threads N [--alias NAME] [--ready-file PATH]

PORT 0 lets the server bind a free port itself (no race between picking and binding). Once the model is loaded and
the socket listens, the script writes {"port": N, "pid": P} to --ready-file (atomically) and to stdout.

The server lives exactly as long as its parent wants: it exits when stdin reaches EOF (the parent closed the pipe,
or died), on SIGTERM, or on SIGINT.
"""

import argparse
import json
import os
import signal
import sys
import threading


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="path of the .gguf file")
    parser.add_argument("--port", type=int, default=0, help="loopback port; 0 picks a free one")
    parser.add_argument("--ctx", type=int, default=8192, help="context window in tokens (n_ctx)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for generation and prompt batches")
    parser.add_argument("--alias", default=None, help="model name reported by /v1/models")
    parser.add_argument("--ready-file", default=None, help="where to write {port, pid} once listening")
    return parser.parse_args()


def write_ready_file(path, payload):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
    os.replace(temporary, path)


def main():
    arguments = parse_arguments()
    if not os.path.isfile(arguments.model):
        print(f"serve_llama: no model file at {arguments.model}", file=sys.stderr, flush=True)
        return 2

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_stdin():
        # EOF means the parent closed our stdin or died: the server must not outlive it.
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except OSError:
            pass
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = arguments.model
    params.n_ctx = arguments.ctx
    params.cpuparams.n_threads = arguments.threads
    params.cpuparams_batch.n_threads = arguments.threads
    params.hostnames = ["127.0.0.1"]
    params.port = arguments.port
    params.use_jinja = True
    if arguments.alias:
        params.model_alias = {arguments.alias}

    try:
        server = xllamacpp.Server(params)
    except Exception as error:  # the wheel raises on a bad model or a busy port
        print(f"serve_llama: the server did not start: {error}", file=sys.stderr, flush=True)
        return 1

    address = server.listening_address  # "http://127.0.0.1:PORT"
    port = int(address.rsplit(":", 1)[1].rstrip("/"))
    payload = {"port": port, "pid": os.getpid()}
    if arguments.ready_file:
        write_ready_file(arguments.ready_file, payload)
    print(json.dumps(payload), flush=True)

    while not stop.wait(1.0):
        pass
    print("serve_llama: stopping", file=sys.stderr, flush=True)
    sys.stderr.flush()
    sys.stdout.flush()
    # The server's C++ threads are not daemon threads: leave without waiting for them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
