# SwiftRLM sandbox worker: a persistent Python REPL driven over the framed channel described in docs/CHANNEL.md.
#
# The host's BOOTSTRAP reads frame 0 (this source) from fd 0 and executes it as module `rlm_worker` with filename
# `<rlm-worker>`. From then on fd 0 carries host -> worker frames and fd 1 carries worker -> host frames. Every frame is
# a 4-byte big-endian length followed by a UTF-8 JSON object.
#
# Threads: the main thread runs cells (and all other requests, in order). A reader thread owns the inbound channel:
# it hands `subcall_result` frames to the waiting sub-call, turns `interrupt` into SIGINT for the main thread while a
# cell runs, exits on `shutdown`/EOF, and queues everything else for the main thread. A drain thread empties the two
# capture pipes behind fds 1 and 2, keeping only a bounded head and tail per stream and per cell.
#
# WASI (the wasm backend: CPython for wasm32-wasip1 run in-process by the host's WebAssembly engine) has no threads,
# signals, pipes, dup or fork, so there the worker runs single-threaded (`_WASI`): the main loop reads every frame
# itself; a sub-call sends its frame and reads frames until its reply (an `interrupt` meanwhile raises
# KeyboardInterrupt in the cell, `shutdown` exits); `time.sleep` waits on the channel too, so an interrupt ends it; and
# a cell's output is captured at the Python level (sys.stdout/sys.stderr), with the same head+tail bound. There fd 1 IS
# the channel: user code that writes to it directly (os.write(1, ...)) breaks the framing, and the host then kills the
# session as a protocol violation. An interrupt cannot reach a cell spinning in pure Python (nothing reads the channel
# meanwhile): the host kills the guest after the grace period, as it kills a process that ignores SIGINT.
#
# Standard library only, and only cheap modules at start: the host wants a cold start close to `python3 -c pass`, so
# `_thread`, `_signal` and `_json` are used instead of `threading`, `signal` and `json` (each of those pulls in `enum`,
# `re` or `functools`); `traceback`/`linecache` are imported on the first error and `ctypes` only for Landlock.

import os
import sys
import _thread
import _signal
import _ast
import itertools
import select
from time import perf_counter as _clock

try:
    from _queue import SimpleQueue as _SimpleQueue
except ImportError:  # pragma: no cover - CPython always has _queue
    from queue import SimpleQueue as _SimpleQueue

_WORKER_FILE = '<rlm-worker>'
_WASI = sys.platform == 'wasi'
_exit = os._exit      # bound early: user code shares the os module and may rebind its names
_getpid = os.getpid if hasattr(os, 'getpid') else (lambda: 1)
_MAIN_PID = _getpid()
_MAIN_TID = _thread.get_ident()
_DEFAULT_OUTPUT_LIMIT = 20000
_DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_MIN_MAX_FRAME = 65536
_DEFAULT_MAX_BATCH = 4096  # the host's limit too (WorkerMessage.maxBatchPrompts); `init` may say otherwise
_PyCF_ONLY_AST = 0x400
_CUT_NOTE = '\n... [truncated to fit the channel frame limit]'
_BUILTIN_NAMES = frozenset(
    ('llm_query', 'llm_query_batched', 'rlm_query', 'FINAL', 'FINAL_VAR', 'SHOW_VARS', 'answer'))
_CONTEXT_KINDS = ('str', 'list', 'json')
_HOST_TYPES = frozenset(
    ('init', 'exec', 'context', 'get_var', 'subcall_result', 'interrupt', 'shutdown'))

# Mutable state lives in one-element lists so the signal handler and helper threads see updates without `global`.
_MAX_FRAME = [_DEFAULT_MAX_FRAME]
_OUTPUT_LIMIT = [_DEFAULT_OUTPUT_LIMIT]
_MAX_BATCH = [_DEFAULT_MAX_BATCH]
_ACTIVE = [False]      # user code of a cell is running on the main thread: SIGINT raises KeyboardInterrupt
_DEFER = [0]           # main thread is writing a frame: hold a KeyboardInterrupt until the frame is complete
_PEND_INT = [False]    # an interrupt arrived while deferred
_CELL_OPEN = [False]   # between the start of an exec and its result: sub-calls are allowed
_FINAL = [None]        # the current cell's final answer
_CELL_NO = [0]

_CHAN_IN = -1          # host -> worker
_CHAN_OUT = -1         # worker -> host
_DIAG = -1             # the original fd 2, for the worker's own fatal diagnostics
_SEND_LOCK = _thread.allocate_lock()
_QUEUE = _SimpleQueue()
_PENDING = {}          # sub-call id -> [lock held until the reply arrives, reply]
_ABANDONED = set()     # sub-call ids whose caller was interrupted: a late reply is dropped
_SUB_IDS = itertools.count(1)
_NS = {}               # the REPL namespace
_CTX_BOUND = {}        # context name -> the object bound, to undo a cell shrinking or deleting it
_DATA_FD = [-1]        # the context data pipe (fd 3 at start, moved to a close-on-exec fd), or -1
_DATA_OUT = [-1]       # the data pipe out, for rlm_query contexts (fd 4 at start), or -1
_DATA_OUT_LOCK = _thread.allocate_lock()
_INLINE = [False]      # no data pipes (container, command, wasm): context bytes follow their frame on the channel
_MAX_CHILD = [0]       # the most bytes an rlm_query context may have (from init)
_SOURCES = {}          # cell filename -> source, for tracebacks
_WORK_DIR = ['.']
_LC_SYNCED = [False]
_INT_LOCK = _thread.allocate_lock()
_INT_EARLY = [False]   # an interrupt for an exec that has not started yet
_EXECS_QUEUED = [0]    # exec requests queued by the reader
_EXECS_DONE = [0]      # number of the last cell whose user code has ended (cells count from 1)


class _ProtocolError(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------- JSON

def _setup_json():
    # The C accelerator of the json package, used directly: importing `json` costs more than the rest of start-up
    # (it imports `re` and `enum`). Falls back to the json package when `_json` is missing or differs.
    try:
        import _json

        class _Ctx:
            strict = True
            object_hook = None
            object_pairs_hook = None
            parse_float = float
            parse_int = int
            memo = None

            @staticmethod
            def parse_constant(name):
                raise ValueError('invalid JSON constant ' + name)

        scan = _json.make_scanner(_Ctx())

        def _default(o):
            raise TypeError(f'Object of type {type(o).__name__} is not JSON serializable')

        enc = _json.make_encoder(None, _default, _json.encode_basestring, None, ':', ',', False, False, False)

        def dumps(obj):
            return ''.join(enc(obj, 0))

        def checked_dumps(obj):
            # Circular references are detected (markers dict); used for user-supplied values.
            e = _json.make_encoder({}, _default, _json.encode_basestring, None, ':', ',', False, False, False)
            return ''.join(e(obj, 0))

        ws = ' \t\n\r'

        def loads(s):
            s = s.strip(ws)
            try:
                obj, end = scan(s, 0)
            except StopIteration as e:
                raise ValueError(f'Expecting value at char {e.value}') from None
            except SystemError:
                # The accelerator fails to build its error for some inputs: the json package says what is wrong.
                import json
                return json.loads(s)
            if end != len(s):
                raise ValueError(f'Extra data at char {end}')
            return obj

        if loads(dumps({'a': [1, 2.5, 'x\u00e9', None, True]})) != {'a': [1, 2.5, 'x\u00e9', None, True]}:
            raise ValueError('self-check failed')
        return dumps, checked_dumps, loads
    except Exception:
        import json

        def dumps(obj):
            return json.dumps(obj, ensure_ascii=False, separators=(',', ':'), allow_nan=False)

        return dumps, dumps, json.loads


_dumps, _checked_dumps, _loads = _setup_json()


def _encode(msg):
    s = _dumps(msg)
    try:
        return s.encode('utf-8')
    except UnicodeEncodeError:
        # Lone surrogates (from str() of user objects) are not UTF-8: the host must get valid UTF-8 JSON.
        return s.encode('utf-8', 'replace')


# -------------------------------------------------------------------------------------------------------- channel

class _FrameReader:
    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()

    def _fill(self, want):
        try:
            chunk = os.read(self.fd, min(max(want, 262144), 1 << 20))
        except OSError:
            chunk = b''
        if not chunk:
            _exit(0)  # the host closed the channel
        self.buf += chunk

    def complete(self):
        """Whether a whole frame is buffered already."""
        buf = self.buf
        return len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], 'big')

    def frame(self):
        buf = self.buf
        while len(buf) < 4:
            self._fill(4 - len(buf))
        n = int.from_bytes(buf[:4], 'big')
        if n > _MAX_FRAME[0]:
            raise _ProtocolError(f'host frame of {n} bytes exceeds the frame cap {_MAX_FRAME[0]}')
        need = 4 + n
        while len(buf) < need:
            self._fill(need - len(buf))
        payload = bytes(buf[4:need])
        del buf[:need]
        try:
            msg = _loads(payload.decode('utf-8'))
        except Exception as e:
            raise _ProtocolError(f'host frame is not UTF-8 JSON: {e}') from None
        if type(msg) is not dict:
            raise _ProtocolError('host frame is not a JSON object')
        t = msg.get('type')
        if t not in _HOST_TYPES:
            raise _ProtocolError(f'unknown host frame type {t!r}')
        if t not in ('interrupt', 'shutdown') and type(msg.get('id')) is not str:
            raise _ProtocolError(f'{t} frame without a string id')
        return msg


def _write_all(data):
    mv = memoryview(data)
    while mv:
        try:
            n = os.write(_CHAN_OUT, mv)
        except BrokenPipeError:
            _exit(0)  # the host is gone
        mv = mv[n:]


def _write_records(data, fd):
    mv = memoryview(data)
    step = 1 << 20
    for i in range(0, len(mv), step):
        part = mv[i:i + step]
        _write_fd(fd, len(part).to_bytes(4, 'big'))
        _write_fd(fd, part)
    _write_fd(fd, b'\0\0\0\0')


def _write_fd(fd, data):
    mv = memoryview(data)
    while mv:
        try:
            n = os.write(fd, mv)
        except BrokenPipeError:
            _exit(0)  # the host is gone
        mv = mv[n:]


def _send_bytes(payload, for_subcall=False, then=None):
    """Writes one frame. Frames never interleave (lock); an interrupt on the main thread is held back until the frame
    is complete so that the channel never carries half a frame. `then`: bytes that follow on the data pipe out as
    chunk records, written whole under the same hold (the caller holds _DATA_OUT_LOCK, so streams keep frame order).
    Returns False when `for_subcall` and no cell is open."""
    main = _thread.get_ident() == _MAIN_TID
    if main:
        _DEFER[0] += 1
    try:
        with _SEND_LOCK:
            if for_subcall and not _CELL_OPEN[0]:
                return False
            _write_all(len(payload).to_bytes(4, 'big') + payload)
            if then is not None and _INLINE[0]:
                # No data pipe: the records follow their frame on the channel itself, before any other frame.
                _write_records(then, _CHAN_OUT)
        if then is not None and not _INLINE[0]:
            _write_records(then, _DATA_OUT[0])
        return True
    finally:
        if main:
            _DEFER[0] -= 1
            if _PEND_INT[0] and not _DEFER[0]:
                _PEND_INT[0] = False
                if _ACTIVE[0]:
                    raise KeyboardInterrupt


def _fit(msg, fields):
    """Encodes `msg`, cutting the largest of `fields` ((container, key) pairs holding str or None) until the frame fits
    the cap. Returns None if it cannot fit."""
    cap = _MAX_FRAME[0]
    note = _CUT_NOTE
    b = _encode(msg)
    for _ in range(16):
        over = len(b) - cap
        if over <= 0:
            return b
        best = None
        best_len = -1
        for c, k in fields:
            v = c.get(k)
            if type(v) is str and len(v) > best_len:
                best, best_len = (c, k), len(v)
        if best is None or best_len <= len(note):
            return None
        c, k = best
        s = c[k]
        base = s[:-len(note)] if s.endswith(note) else s
        enc_len = len(_encode(base))
        keep = enc_len - over - len(note) * 6 - 16
        c[k] = base[:int(len(base) * keep / enc_len)] + note if keep > 0 else note
        b = _encode(msg)
    return b if len(b) <= cap else None


def _diag(text):
    try:
        if _DIAG >= 0:
            os.write(_DIAG, ('rlm_worker: ' + text + '\n').encode('utf-8', 'replace'))
    except OSError:
        pass


def _fatal(message, code=2):
    """The worker cannot go on: tell the host (if the channel is intact) and exit."""
    if _getpid() != _MAIN_PID:
        _exit(1)
    _diag('fatal: ' + message)
    try:
        payload = _encode({'type': 'fatal', 'message': message[:4000]})
        if _CHAN_OUT >= 0 and _SEND_LOCK.acquire(True, 2.0):
            _write_all(len(payload).to_bytes(4, 'big') + payload)
    except BaseException:
        pass
    _exit(code)


# -------------------------------------------------------------------------------------------------------- capture

_R_OUT = _R_ERR = _W_OUT = _W_ERR = _NULL = _CTL_R = _CTL_W = -1
_CAPTURED = [None]
_DRAINED = _thread.allocate_lock()  # held; the drain thread releases it once per cell end
_DRAINED.acquire()
_CONT = bytes(range(0x80, 0xC0))  # UTF-8 continuation bytes


class _Stream:
    __slots__ = ('head', 'tail', 'dropped', 'full', 'hb', 'tb')

    def __init__(self, limit):
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0      # characters thrown away between head and tail
        self.full = False     # head complete: further bytes go to the tail
        self.hb = 4 * limit + 8   # enough bytes for `limit` characters of valid UTF-8
        self.tb = 4 * limit + 8

    def feed(self, data):
        if not self.full:
            room = self.hb - len(self.head)
            if len(data) <= room:
                self.head += data
                return
            cut = room
            while cut > 0 and (data[cut] & 0xC0) == 0x80:
                cut -= 1
            self.head += data[:cut]
            data = data[cut:]
            self.full = True
        tail = self.tail
        tail += data
        if len(tail) > 2 * self.tb:
            cut = len(tail) - self.tb
            n = len(tail)
            while cut < n and (tail[cut] & 0xC0) == 0x80:
                cut += 1
            self.dropped += len(bytes(tail[:cut]).translate(None, _CONT))
            del tail[:cut]

    def render(self, limit):
        h = limit // 2
        t = limit - h
        if not self.dropped:
            if not self.tail:
                text = self.head.decode('utf-8', 'replace')
            else:
                text = (self.head + self.tail).decode('utf-8', 'replace')
            if len(text) <= limit:
                return text
            return text[:h] + f'\n... [{len(text) - limit} characters cut] ...\n' + text[len(text) - t:]
        ht = self.head.decode('utf-8', 'replace')
        tt = self.tail.decode('utf-8', 'replace')
        total = len(ht) + self.dropped + len(tt)
        return ht[:h] + f'\n... [{total - h - t} characters cut] ...\n' + tt[len(tt) - t:]


def _drain_loop():
    _signal.pthread_sigmask(_signal.SIG_BLOCK, [_signal.SIGINT])
    limit = _OUTPUT_LIMIT[0]
    streams = {_R_OUT: _Stream(limit), _R_ERR: _Stream(limit)}
    poller = select.poll()
    for fd in (_R_OUT, _R_ERR, _CTL_R):
        poller.register(fd, select.POLLIN)
    read = os.read
    while True:
        for fd, _ev in poller.poll():
            if fd == _CTL_R:
                read(_CTL_R, 64)
                for rfd in (_R_OUT, _R_ERR):
                    st = streams[rfd]
                    # Until EAGAIN, but bounded: a background process flooding the pipe must not stall the cell.
                    for _ in range(256):
                        try:
                            chunk = read(rfd, 65536)
                        except BlockingIOError:
                            break
                        except OSError:
                            break
                        if not chunk:
                            break
                        st.feed(chunk)
                _CAPTURED[0] = (streams[_R_OUT], streams[_R_ERR])
                streams = {_R_OUT: _Stream(limit), _R_ERR: _Stream(limit)}
                _DRAINED.release()
            else:
                try:
                    chunk = read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b''
                if chunk:
                    streams[fd].feed(chunk)
                else:
                    poller.unregister(fd)  # all write ends gone (user closed them): avoid a busy loop


def _drain_thread():
    try:
        _drain_loop()
    except BaseException as e:
        _fatal(f'output drain thread failed: {type(e).__name__}: {e}')


def _flush_std():
    for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            s.flush()
        except BaseException:
            pass


def _collect_output():
    """Ends the cell's capture: returns (stdout, stderr) cut to the output limit."""
    _flush_std()
    if _WASI:
        out, err = _WASI_STREAMS[0]
        _WASI_STREAMS[0] = None
        limit = _OUTPUT_LIMIT[0]
        return out.render(limit), err.render(limit)
    os.write(_CTL_W, b'.')
    _DRAINED.acquire()
    out, err = _CAPTURED[0]
    _CAPTURED[0] = None
    limit = _OUTPUT_LIMIT[0]
    return out.render(limit), err.render(limit)


_WASI_STREAMS = [None]   # WASI: the current cell's (stdout, stderr) _Stream pair
_WASI_READER = [None]    # WASI: the channel's frame reader, shared by the main loop and waiting cells


def _wasi_capture():
    """WASI: a fresh sys.stdout/sys.stderr per cell that feed bounded _Streams (fds 1 and 2 are the channel and the
    host's diagnostics, never the cell's). fileno() is unsupported, so libraries fall back to write()."""
    import io

    class _Sink(io.RawIOBase):
        def __init__(self, stream):
            self._stream = stream

        def writable(self):
            return True

        def write(self, b):
            b = bytes(b)
            self._stream.feed(b)
            return len(b)

    limit = _OUTPUT_LIMIT[0]
    streams = (_Stream(limit), _Stream(limit))
    _WASI_STREAMS[0] = streams
    for name, stream in (('stdout', streams[0]), ('stderr', streams[1])):
        w = io.TextIOWrapper(_Sink(stream), encoding='utf-8', errors='backslashreplace', line_buffering=True,
                             write_through=True)
        setattr(sys, name, w)
        setattr(sys, '__' + name + '__', w)


def _fix_std_fds():
    if _WASI:
        _wasi_capture()
        return
    # Each cell starts with fd 0 on /dev/null and fds 1/2 on the capture pipes, whatever the last cell did to them.
    os.dup2(_NULL, 0)
    os.dup2(_W_OUT, 1)
    os.dup2(_W_ERR, 2)
    for name, fd, mode in (('stdin', 0, 'r'), ('stdout', 1, 'w'), ('stderr', 2, 'w')):
        s = getattr(sys, name, None)
        try:
            ok = s is not None and not s.closed
        except BaseException:
            ok = True  # a user object without `closed`: the user's choice
        if not ok:
            setattr(sys, name, _open_std(fd, mode))


def _open_std(fd, mode):
    return open(fd, mode, encoding='utf-8', errors='backslashreplace', closefd=False,
                buffering=1 if mode == 'w' else -1)


# ------------------------------------------------------------------------------------------------------- children

def _after_fork_child():
    # A forked child (e.g. a fork bomb) must never reach the channel.
    global _CHAN_IN, _CHAN_OUT, _DIAG
    for fd in (_CHAN_IN, _CHAN_OUT, _DIAG, _R_OUT, _R_ERR, _CTL_R, _CTL_W):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    _CHAN_IN = _CHAN_OUT = _DIAG = -1


def _child_exit():
    _flush_std()
    _exit(1)


# -------------------------------------------------------------------------------------------------------- signals

def _on_sigint(signum, frame):
    if _ACTIVE[0]:
        if _DEFER[0]:
            _PEND_INT[0] = True
        else:
            raise KeyboardInterrupt


# ------------------------------------------------------------------------------------------------------ sub-calls

def _subcall(what, fields, stream=None):
    if _getpid() != _MAIN_PID:
        raise RuntimeError(f'{what} is not available in a forked child process')
    if stream is not None:
        with _DATA_OUT_LOCK:
            return _subcall_sent(what, fields, stream)
    return _subcall_sent(what, fields, None)


def _subcall_sent(what, fields, stream):
    sid = f'w{next(_SUB_IDS)}'
    msg = {'type': 'subcall', 'id': sid, 'call': what}
    msg.update(fields)
    payload = _encode(msg)
    if len(payload) > _MAX_FRAME[0]:
        raise ValueError(f'{what}: request of {len(payload)} bytes exceeds the channel frame limit '
                         f'of {_MAX_FRAME[0]} bytes; send less text')
    if _WASI:
        return _wasi_subcall(what, sid, payload, stream)
    slot = [_thread.allocate_lock(), None]
    slot[0].acquire()
    _PENDING[sid] = slot
    try:
        if not _send_bytes(payload, for_subcall=True, then=stream):
            del _PENDING[sid]
            raise RuntimeError(f'{what} can only be called while a cell is running (not from a thread that '
                               f'outlives its cell)')
        slot[0].acquire()
    except BaseException:
        if _PENDING.pop(sid, None) is not None:
            _ABANDONED.add(sid)
        raise
    reply = slot[1]
    if reply.get('ok'):
        return reply.get('value')
    raise RuntimeError(reply.get('error') or f'{what} failed')


def _check_subcall_result(m):
    ok = m.get('ok')
    if type(ok) is not bool:
        raise _ProtocolError('subcall_result: ok (bool) is required')
    if ok and 'value' not in m:
        raise _ProtocolError('subcall_result: value is required when ok')
    if not ok and type(m.get('error')) is not str:
        raise _ProtocolError('subcall_result: error (str) is required when not ok')


def _wasi_subcall(what, sid, payload, stream):
    """Single-threaded sub-call: sends the frame, then reads frames until its reply. An `interrupt` meanwhile raises
    KeyboardInterrupt in the cell (a late reply is then dropped); `shutdown` exits."""
    if not _send_bytes(payload, for_subcall=True, then=stream):
        raise RuntimeError(f'{what} can only be called while a cell is running')
    while True:
        m = _wasi_frame()
        if m['type'] == 'subcall_result' and m['id'] == sid:
            if m.get('ok'):
                return m.get('value')
            raise RuntimeError(m.get('error') or f'{what} failed')
        if m['type'] == 'interrupt':
            _ABANDONED.add(sid)
            raise KeyboardInterrupt
        _wasi_idle_frame(m)


def _wasi_frame():
    """The next host frame, read by the cell itself (WASI). The host sends no request while a cell runs: anything it
    may send then is handled by the caller or `_wasi_idle_frame`; a malformed frame ends the worker."""
    try:
        m = _WASI_READER[0].frame()
        if m['type'] == 'subcall_result':
            _check_subcall_result(m)
        return m
    except _ProtocolError as e:
        _fatal(f'protocol violation: {e}')


def _wasi_idle_frame(m):
    """A frame that arrived while the cell waited for something else: a late reply to an abandoned sub-call is
    dropped, `shutdown` exits, an `interrupt` for a cell that has ended is moot; anything else breaks the protocol."""
    t = m['type']
    if t == 'subcall_result' and m['id'] in _ABANDONED:
        _ABANDONED.discard(m['id'])
    elif t == 'shutdown':
        _exit(0)
    elif t != 'interrupt':
        _fatal(f'protocol violation: unexpected {t!r} frame while a cell runs')


def _wasi_sleep(secs):
    """time.sleep for WASI: waits on the channel rather than the clock alone, so that the host's `interrupt` ends a
    sleeping cell with KeyboardInterrupt (the REPL kept) instead of waiting for the kill."""
    if isinstance(secs, bool) or not isinstance(secs, (int, float)):
        try:
            secs = float(secs)
        except (TypeError, ValueError):
            raise TypeError(f"'{type(secs).__name__}' object cannot be interpreted as an integer or float") from None
    if secs != secs or secs < 0:
        raise ValueError('sleep length must be non-negative')
    end = _clock() + secs
    reader = _WASI_READER[0]
    while True:
        left = end - _clock()
        if left <= 0:
            return
        if not reader.complete():
            if not select.select([_CHAN_IN], [], [], left)[0]:
                continue
        m = _wasi_frame()
        if m['type'] == 'interrupt' and _ACTIVE[0]:
            raise KeyboardInterrupt
        _wasi_idle_frame(m)


def _check_model(what, model):
    if model is not None and type(model) is not str:
        raise TypeError(f'{what}: model must be a str or None, not {type(model).__name__}')


def llm_query(prompt, model=None):
    """Asks a sub-model one question and returns its answer (str)."""
    if not isinstance(prompt, str):
        raise TypeError(f'llm_query: prompt must be a str, not {type(prompt).__name__}')
    _check_model('llm_query', model)
    return _subcall('llm_query', {'prompt': str(prompt), 'model': model})


def llm_query_batched(prompts, model=None):
    """Asks a sub-model several questions concurrently; returns the answers (list of str) in order."""
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f'llm_query_batched: prompts must be a list of str, not {type(prompts).__name__}')
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f'llm_query_batched: prompts[{i}] must be a str, not {type(p).__name__}')
    _check_model('llm_query_batched', model)
    if not prompts:
        return []
    # The host drops a worker whose batch is over its limit; raising here keeps the REPL and says what to do.
    if len(prompts) > _MAX_BATCH[0]:
        raise ValueError(f'llm_query_batched: {len(prompts)} prompts in one call, more than the limit of '
                         f'{_MAX_BATCH[0]}; split the list and call it several times')
    return _subcall('llm_query_batched', {'prompts': [str(p) for p in prompts], 'model': model})


def rlm_query(prompt, context=None, model=None):
    """Runs a child RLM (one level deeper) on `prompt` with an optional JSON-serializable `context`; returns str.
    `model` names a declared model to drive the child (default: the root model)."""
    if not isinstance(prompt, str):
        raise TypeError(f'rlm_query: prompt must be a str, not {type(prompt).__name__}')
    _check_model('rlm_query', model)
    if context is None:
        return _subcall('rlm_query', {'prompt': str(prompt), 'model': model})
    # The child's context streams out on the data pipe (not in the frame), and from the host straight into the
    # child's sandbox: a str as UTF-8 text, anything else as JSON.
    if isinstance(context, str):
        kind, data = 'str', context.encode('utf-8', 'replace')
    else:
        try:
            kind, data = 'json', _checked_dumps(context).encode('utf-8', 'replace')
        except (TypeError, ValueError, RecursionError) as e:
            raise TypeError(f'rlm_query: context must be a str or JSON-serializable (list, dict, numbers, bool, '
                            f'None): {e}') from None
    if len(data) > _MAX_CHILD[0]:
        raise ValueError(f'rlm_query: the context is {len(data):,} bytes, more than the {_MAX_CHILD[0]:,} a child '
                         f'context may have here; pass a smaller piece')
    if _DATA_OUT[0] < 0 and not _INLINE[0]:
        raise RuntimeError('rlm_query: this sandbox cannot hand a context to a child')
    return _subcall('rlm_query', {'prompt': str(prompt), 'model': model,
                                  'context_stream': {'kind': kind, 'bytes': len(data)}}, data)


# -------------------------------------------------------------------------------------------------- final answers

def FINAL(value):
    """Sets the final answer of the run to str(value)."""
    _FINAL[0] = str(value)


def _user_var_names():
    return sorted(k for k in _NS if not k.startswith('_') and k not in _BUILTIN_NAMES)


def FINAL_VAR(name):
    """Sets the final answer of the run to str() of the variable called `name`."""
    if not isinstance(name, str):
        # Lenient: FINAL_VAR(result) with the value itself.
        _FINAL[0] = str(name)
        return
    key = name.strip().strip('\'"').strip()
    if key not in _NS:
        names = _user_var_names()
        raise NameError(f'FINAL_VAR: no variable named {key!r}; variables: '
                        + (', '.join(names) if names else '(none)'))
    _FINAL[0] = str(_NS[key])


class _Listing(str):
    """The text SHOW_VARS printed; not echoed again as a cell's last expression."""

    def __repr__(self):
        return str.__str__(self)


def _describe(v):
    t = type(v).__name__
    if isinstance(v, (str, bytes, list, tuple, dict, set, frozenset)):
        return f'{t} (len {len(v)})'
    return t


def SHOW_VARS():
    """Prints and returns the user variables and their types."""
    lines = []
    for k in _user_var_names():
        try:
            lines.append(f'  {k}: {_describe(_NS[k])}')
        except Exception:
            lines.append(f'  {k}: ?')
    text = _Listing('Variables:\n' + '\n'.join(sorted(lines)) if lines else 'No user variables.')
    print(text)
    return text


# ------------------------------------------------------------------------------------------------------- contexts

def _restore_contexts():
    """Small models overwrite `context` with a slice or with invented sample data and then count in that. A cell
    that deletes a loaded context, or rebinds it to a smaller value of the same type, gets the full value back and a
    note saying so. Other rebinds (say, parsing a JSON str into a dict) are kept."""
    notes = []
    for name, original in _CTX_BOUND.items():
        current = _NS.get(name, _CTX_BOUND)
        if current is original:
            continue
        if current is _CTX_BOUND:
            what = 'deleted'
        elif type(current) is type(original) and hasattr(current, '__len__') and len(current) < len(original):
            unit = 'characters' if type(original) is str else 'items'
            what = f'replaced by a smaller value ({len(current):,} of {len(original):,} {unit})'
        else:
            continue
        _NS[name] = original
        notes.append(f'[note: `{name}` was {what}; it has been restored to the full data. '
                     f'Keep slices and results in other variables.]')
    return '\n'.join(notes)


class _DataReader:
    """Reads the host's context data pipe: chunk records (4-byte big-endian length, then the bytes; a zero length ends a
    file) after a small header per file. Small reads come from a buffer; chunks are read straight into their own
    bytearray."""

    def __init__(self, fd, prefix=b''):
        self.fd = fd
        self.spare = bytearray(1 << 20)
        # `prefix`: bytes already read from `fd` by the frame reader (inline data follows its frame on the channel).
        self.buf = bytearray(max(65536, len(prefix)))
        self.buf[:len(prefix)] = prefix
        self.start = 0
        self.end = len(prefix)

    def leftover(self):
        """Bytes read past the context's records (the next frames, when the data came inline on the channel)."""
        return bytes(self.buf[self.start:self.end])

    def _fill(self):
        if self.start == self.end:
            self.start = self.end = 0
        elif self.start > 32768 or self.end == len(self.buf):
            n = self.end - self.start
            self.buf[:n] = self.buf[self.start:self.end]
            self.start, self.end = 0, n
        if self.end == len(self.buf):
            self.buf.extend(bytes(len(self.buf)))
        n = os.readv(self.fd, [memoryview(self.buf)[self.end:]])
        if not n:
            raise _ProtocolError('the context data pipe ended in the middle of a context')
        self.end += n

    def take(self, n):
        while self.end - self.start < n:
            self._fill()
        b = bytes(self.buf[self.start:self.start + n])
        self.start += n
        return b

    def number(self, width):
        return int.from_bytes(self.take(width), 'big')

    def chunk(self, n, reuse=False):
        """The next `n` bytes in a bytearray of exactly that length; with `reuse`, the same full-size buffer every
        time (its pages are touched once, not once per chunk): the caller must be done with it before the next call."""
        if reuse and n == len(self.spare):
            out = self.spare
        else:
            out = bytearray(n)
        have = min(n, self.end - self.start)
        if have:
            out[:have] = self.buf[self.start:self.start + have]
            self.start += have
        mv = memoryview(out)
        while have < n:
            got = os.readv(self.fd, [mv[have:]])
            if not got:
                raise _ProtocolError('the context data pipe ended in the middle of a chunk')
            have += got
        return out


# The fast path builds a big str in place: CPython's PyUnicode_New allocates it uninitialised, the bytes are copied
# into it as they arrive, and nothing else holds the text meanwhile, so a 1 GB context costs about 1 GB rather than
# the 2 GB of bytes-then-decode. It is checked once per worker (a small string is built and compared); where it is not
# available (another Python, no ctypes) the pieces are joined instead.
_FAST = [None]
_FAST_MIN = 1 << 20


def _fast_api():
    v = _FAST[0]
    if v is None:
        v = False
        try:
            import ctypes
            new = ctypes.pythonapi.PyUnicode_New
            new.restype = ctypes.py_object
            new.argtypes = (ctypes.c_ssize_t, ctypes.c_uint32)
            gs = sys.getsizeof
            hdr = {127: gs('') - 1, 255: gs('\xe9') - 2, 65535: gs('\u0100') - 4, 1114111: gs('\U00010000') - 8}
            for maxchar, sample in ((127, 'abcd'), (255, 'a\xe9cd'), (65535, 'a\u0100cd'), (1114111, 'a\U00010000cd')):
                t = new(len(sample), maxchar)
                b = sample.encode(_WIDE_CODEC[maxchar], 'surrogatepass')
                ctypes.memmove(id(t) + hdr[maxchar], b, len(b))
                if t != sample or hash(t) != hash(sample):
                    raise ValueError('PyUnicode_New self-check failed')
            v = (ctypes, new, hdr)
        except Exception:
            v = False
        _FAST[0] = v
    return v


_HOST_SKIPPED = (1 << 64) - 1  # a file's planned size when the host could not open it (it says why itself)
def _huge_pages(address, size):
    """Asks for transparent huge pages over a big fresh buffer: filling it then takes a fault every 2 MiB instead of
    every 4 KiB. Advice only: nothing changes where the kernel says no."""
    try:
        libc = _FAST[0][0].CDLL(None)
        start = (address + (1 << 21) - 1) & ~((1 << 21) - 1)
        end = (address + size) & ~((1 << 21) - 1)
        if end > start:
            libc.madvise(_FAST[0][0].c_void_p(start), _FAST[0][0].c_size_t(end - start), 14)  # MADV_HUGEPAGE
    except Exception:
        pass


_WIDE_CODEC = {127: 'latin-1', 255: 'latin-1', 65535: 'utf-16-le', 1114111: 'utf-32-le'}
_MAXCHAR = {1: 255, 2: 65535, 4: 1114111}
_ASCII_FAMILY = frozenset(('utf_8', 'utf_8_sig', 'ascii', 'iso8859_1', 'iso8859_15', 'cp1252', 'cp1250', 'cp1251',
                           'cp437'))


class _Undecodable(Exception):
    def __init__(self, offset, byte, codec):
        super().__init__(f'byte 0x{byte:02X} at offset {offset:,} is not valid {codec}')
        self.offset = offset
        self.codec = codec


class _TextBuilder:
    """One str from bytes arriving in chunks. While every chunk is ASCII (and the encoding is ASCII-compatible) the
    bytes go straight into a preallocated ASCII str; otherwise chunks are decoded into pieces, assembled at the end into
    one str of the right width with each piece released as soon as it is copied."""

    def __init__(self, size, codec, errors, track_nul=True):
        codecs = __import__('codecs')
        self.track_nul = track_nul  # a NUL byte matters only in documents (binary files are left out)
        self.codec = codec
        self.family = codecs.lookup(codec).name.replace('-', '_')
        self.errors = errors
        self.decoder = codecs.getincrementaldecoder(codec)(errors)
        self.pieces = []
        self.chars = 0
        self.offset = 0          # bytes fed
        self.nul = False
        self.target = None       # [str, address, characters filled, capacity] on the ASCII fast path
        self.fast = False
        api = _fast_api() if size >= _FAST_MIN and self.family in _ASCII_FAMILY else False
        if api:
            t = api[1](size, 127)
            self.target = [t, id(t) + api[2][127], 0, size]
            self.fast = True
            _huge_pages(self.target[1], size)

    def feed(self, chunk):
        if self.track_nul and not self.nul and 0 in chunk:
            self.nul = True
        t = self.target
        if self.fast and chunk.isascii() and t[2] + len(chunk) <= t[3]:
            ctypes = _FAST[0][0]
            ctypes.memmove(t[1] + t[2], (ctypes.c_char * len(chunk)).from_buffer(chunk), len(chunk))
            t[2] += len(chunk)
            self.chars += len(chunk)
            self.offset += len(chunk)
            return
        self.fast = False
        try:
            piece = self.decoder.decode(chunk)
        except UnicodeDecodeError as e:
            raise _Undecodable(self.offset + e.start - len(self.decoder.getstate()[0]), e.object[e.start],
                               self.codec) from None
        self._add(piece)
        self.offset += len(chunk)

    def _add(self, piece):
        if piece:
            self.pieces.append(piece)
            self.chars += len(piece)

    def reread_as(self, codec, pending):
        """`auto` found bytes that are not UTF-8: everything so far is read again as `codec` (an ASCII prefix reads
        the same; text decoded so far is valid UTF-8, so its bytes come back exactly), then `pending` (the chunk that
        failed) is fed."""
        old = self.pieces
        buffered = self.decoder.getstate()[0]
        codecs = __import__('codecs')
        self.codec = codec
        self.family = codecs.lookup(codec).name.replace('-', '_')
        self.decoder = codecs.getincrementaldecoder(codec)(self.errors)
        self.pieces = []
        self.chars = self.target[2] if self.target is not None else 0
        self.fast = False
        while old:
            p = old.pop(0)
            self._add(p.encode('utf-8', 'surrogatepass').decode(codec, self.errors))
        self._add(self.decoder.decode(buffered))
        self.feed(pending)

    def finish(self):
        try:
            self._add(self.decoder.decode(b'', True))
        except UnicodeDecodeError as e:
            raise _Undecodable(self.offset - len(e.object) + e.start, e.object[e.start], self.codec) from None
        t = self.target
        self.target = None
        head, filled = (t[0], t[2]) if t is not None else (None, 0)
        if t is not None and not self.pieces:
            return head if filled == t[3] else head[:filled]
        t = None
        pieces = self.pieces
        self.pieces = []
        api = _FAST[0]
        if not api or self.chars < _FAST_MIN:
            if head is not None:
                pieces.insert(0, head[:filled])
                head = None
            return ''.join(pieces)
        ctypes, new, hdr = api
        width = 1
        latin = False
        for p in pieces:
            if not p.isascii():
                width = max(width, (sys.getsizeof(p) - hdr[255]) // (len(p) + 1))
                latin = True
        maxchar = _MAXCHAR[width] if latin else 127
        out = new(self.chars, maxchar)
        codec = _WIDE_CODEC[maxchar]
        base = id(out) + hdr[maxchar]
        pos = 0
        if head is not None:
            step = 1 << 24
            for i in range(0, filled, step):
                b = head[i:min(filled, i + step)].encode(codec)
                ctypes.memmove(base + pos * width, b, len(b))
                pos += len(b) // width
            head = None
        pieces.reverse()
        while pieces:
            p = pieces.pop()
            b = p.encode(codec, 'surrogatepass')
            ctypes.memmove(base + pos * width, b, len(b))
            pos += len(p)
            p = b = None
        if pos != self.chars:
            raise ValueError(f'internal error: assembled {pos} of {self.chars} characters')
        return out


_BOMS = ((b'\xef\xbb\xbf', 'utf-8-sig'), (b'\xff\xfe\x00\x00', 'utf-32'), (b'\x00\x00\xfe\xff', 'utf-32'),
         (b'\xff\xfe', 'utf-16'), (b'\xfe\xff', 'utf-16'))


class _Source:
    """Reads one file's chunks from the data pipe and decodes them: `auto` (a BOM decides, else UTF-8, else Latin-1
    when there is no NUL byte) or a named codec. `documents`: a file holding a NUL byte (under an ASCII-compatible
    encoding) is binary and skipped. Always consumes the whole file from the pipe, whatever happens."""

    def __init__(self, reader, encoding, errors, documents, raw):
        self.reader = reader
        self.encoding = encoding
        self.errors = errors
        self.documents = documents
        self.raw = raw              # keep the bytes (JSON)
        self.nbytes = 0
        self.skipped = None         # why the file was left out
        self.undecodable = False    # ... because it did not decode
        self.decoded_as = None      # how auto decoded it, when not as UTF-8

    def _binary(self, builder):
        return self.documents and builder.nul and builder.family in _ASCII_FAMILY

    def read(self, size):
        """Returns the text (bytes when raw), or None when the file is left out (see `skipped`).
        Raises MemoryError after consuming the file."""
        if size < _FAST_MIN and not self.raw and self.encoding == 'auto':
            return self._read_small(size)
        # Chunks are consumed before the next is read (decoded or copied), except raw ones, which are kept.
        return self._read_chunks(self._records(reuse=not self.raw), size)

    def _records(self, reuse=False):
        reader = self.reader
        while True:
            n = reader.number(4)
            if n == 0:
                return
            self.nbytes += n
            yield reader.chunk(n, reuse)

    def _read_small(self, size):
        """The common case of a source tree: a small file that is plain UTF-8, decoded in one call; anything else
        (a BOM, bad bytes, a NUL in a document) goes the general way with the same bytes."""
        chunks = list(self._records())
        data = chunks[0] if len(chunks) == 1 else bytearray().join(chunks)
        if not data.startswith((b'\xef\xbb\xbf', b'\xff\xfe', b'\xfe\xff', b'\x00\x00\xfe\xff')) \
                and not (self.documents and 0 in data):
            try:
                return data.decode('utf-8')
            except UnicodeDecodeError:
                pass
        return self._read_chunks(iter((data,)) if data else iter(()), size)

    def _read_chunks(self, chunks, size):
        builder = None
        data = bytearray() if self.raw else None
        failure = None
        auto = self.encoding == 'auto'
        for chunk in chunks:
            if failure is not None:
                continue
            try:
                if self.raw:
                    data += chunk
                    continue
                if builder is None:
                    codec = self.encoding
                    if auto:
                        codec = 'utf-8'
                        for bom, name in _BOMS:
                            if chunk.startswith(bom):
                                codec, auto = name, False
                                if name != 'utf-8-sig':
                                    self.decoded_as = name.upper() + ' (from its byte-order mark)'
                                break
                    builder = _TextBuilder(size, codec, self.errors, self.documents)
                try:
                    builder.feed(chunk)
                except _Undecodable:
                    if self._binary(builder):
                        pass
                    elif not auto or builder.nul or 0 in chunk:
                        raise
                    else:
                        auto = False
                        self.decoded_as = 'Latin-1 (it is not valid UTF-8)'
                        builder.reread_as('latin-1', chunk)
                if self._binary(builder):
                    failure = 'binary file (it holds NUL bytes), skipped'
                    builder = None
            except _Undecodable as e:
                failure = e
                builder = None
            except MemoryError as e:
                failure = e
                builder = data = None
        if failure is None:
            if self.raw:
                return data
            try:
                if builder is None:
                    return ''
                try:
                    return builder.finish()
                except _Undecodable:
                    # A truncated sequence at the very end shows only now: `auto` still reads the file as Latin-1.
                    if not auto or builder.nul:
                        raise
                    self.decoded_as = 'Latin-1 (it is not valid UTF-8)'
                    builder.reread_as('latin-1', bytearray())
                    return builder.finish()
            except _Undecodable as e:
                failure = e
        if isinstance(failure, MemoryError):
            raise failure
        if isinstance(failure, str):
            self.skipped = failure
        else:
            self.undecodable = True
            self.skipped = f'not valid {failure.codec} ({failure})'
            if self.documents:
                self.skipped += ', skipped'
        return None


def _on_context(m):
    """Builds a context from the files the host streams on the data pipe, binds it, and replies with what it
    measured (or why it could not: the REPL state is kept either way)."""
    rid = m['id']
    name, kind, count = m.get('name'), m.get('kind'), m.get('files')
    encoding, errors = m.get('encoding'), m.get('errors')
    sample, heads = m.get('sample'), m.get('heads')
    # The host counts the lines of a big text itself when it can (on its own core, while the bytes stream): counting
    # them here would cost a pass over the whole str after it is built.
    count_lines = m.get('count_lines', True)
    if type(count_lines) is not bool:
        raise _ProtocolError('context: count_lines must be a bool')
    if type(name) is not str or not name.isidentifier():
        raise _ProtocolError(f'context: name must be a Python identifier, got {name!r}')
    if kind not in _CONTEXT_KINDS:
        raise _ProtocolError(f'context: kind must be "str", "list" or "json", got {kind!r}')
    if type(count) is not int or count < 0 or (kind != 'list' and count != 1):
        raise _ProtocolError('context: files (int; 1 unless kind is "list") is required')
    if type(encoding) is not str or errors not in ('strict', 'replace'):
        raise _ProtocolError('context: encoding (str) and errors ("strict" or "replace") are required')
    if type(sample) is not int or type(heads) is not int or sample < 0 or heads < 0:
        raise _ProtocolError('context: sample and heads (non-negative int) are required')
    inline = m.get('_inline')
    if inline is not None:
        frames, gate = inline
        reader = _DataReader(_CHAN_IN, frames.buf)
        try:
            _build_context(m, reader, name, kind, count, encoding, errors, sample, heads, count_lines)
        finally:
            # The frame reader resumes with whatever was read past the records, then the reader thread goes on.
            frames.buf = bytearray(reader.leftover())
            if gate is not None:
                gate.release()
        return
    if _DATA_FD[0] < 0:
        raise _ProtocolError('context: this worker has no data pipe')
    _build_context(m, _DataReader(_DATA_FD[0]), name, kind, count, encoding, errors, sample, heads, count_lines)


def _build_context(m, reader, name, kind, count, encoding, errors, sample, heads, count_lines):
    rid = m['id']
    error = None
    if encoding != 'auto':
        try:
            encoding = __import__('codecs').lookup(encoding).name
        except LookupError:
            error = f'unknown encoding {encoding!r}: pass a Python codec name such as utf-8, latin-1, utf-16 or cp1252'
    docs = []
    sizes = []
    skipped = []
    decoded_as = []
    total_bytes = 0
    lines = 0
    value = None
    head = None
    for _ in range(count):
        label = reader.take(reader.number(4)).decode('utf-8', 'replace')
        size = reader.number(8)
        if size == _HOST_SKIPPED:
            if reader.number(4) != 0:
                raise _ProtocolError('context: a file the host skipped carries data')
            continue
        src = _Source(reader, encoding if error is None else 'latin-1', errors, kind == 'list', kind == 'json')
        try:
            got = src.read(size)
        except MemoryError:
            got = None
            if error is None:
                error = (f'the sandbox ran out of memory building the context (at {label}); '
                         f'raise the sandbox memory limit (--memory)')
        if error is not None:
            continue
        if src.decoded_as:
            decoded_as.append([label, f'decoded as {src.decoded_as}'])
        if got is None:
            if kind == 'list':
                skipped.append([label, src.skipped])
                continue
            error = f'context {label} could not be read: {src.skipped}'
            if getattr(src, 'undecodable', None) is not None:
                error += ('. If it is in another encoding, pass --encoding (latin-1, utf-16, cp1252, …); '
                          'to load it anyway with bad bytes replaced, pass --encoding-errors replace')
            continue
        if kind == 'json':
            total_bytes = src.nbytes
            try:
                text = got.decode('utf-8-sig' if encoding == 'auto' else encoding, errors)
                got = None
                value = _loads(text)
                lines = text.count('\n') + (1 if text and not text.endswith('\n') else 0)
                chars = len(text)
                head = text[:sample]
                text = None
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                error = f'context {label} is not valid JSON ({e}); rename it to load it as text'
            except MemoryError:
                error = 'the sandbox ran out of memory parsing the JSON context; raise --memory'
            continue
        if kind == 'list' and label:
            got = f'### {label}\n' + got
        docs.append(got)
        sizes.append(src.nbytes)
        got = None
    if error is None and ((kind == 'str' and not docs) or (kind == 'json' and head is None)):
        error = 'the host could not send the context file'
    if error is not None:
        _reply({'type': 'loaded', 'id': rid, 'error': error[:4000]})
        return
    summary = {'shape': kind, 'skipped': skipped[:1000], 'decoded_as': decoded_as[:1000]}
    if kind == 'str':
        value = docs[0]
        summary.update(type='str', characters=len(value), bytes=sizes[0], lines=_lines(value) if count_lines else 0,
                       items=0, item_sizes=[], head=value[:sample], item_heads=[], keys=[])
    elif kind == 'list':
        value = docs
        each = max(80, sample // max(1, min(heads, len(docs)))) if docs else 0
        summary.update(type='list', characters=sum(map(len, docs)), bytes=sum(sizes),
                       lines=sum(map(_lines, docs)) if count_lines else 0, items=len(docs), item_sizes=[len(d) for d in docs[:5]],
                       head='', item_heads=[d[:each] for d in docs[:heads]], keys=[])
    else:
        t = type(value)
        summary.update(type=t.__name__, characters=chars, bytes=total_bytes, lines=lines,
                       items=len(value) if t in (dict, list) else 0, item_sizes=[], head=head, item_heads=[],
                       keys=[str(k)[:200] for k in itertools.islice(value, 12)] if t is dict else [])
    docs = None
    _NS[name] = value
    _CTX_BOUND[name] = value
    _reply({'type': 'loaded', 'id': rid, 'summary': summary})


def _lines(text):
    return text.count('\n') + (1 if text and text[-1] != '\n' else 0)


# ---------------------------------------------------------------------------------------------------------- cells

def _register_source(linecache, fname, code):
    linecache.cache[fname] = (len(code), None, code.splitlines(True), fname)


def _sync_linecache(linecache):
    for fname, code in _SOURCES.items():
        if fname not in linecache.cache:
            _register_source(linecache, fname, code)
    _LC_SYNCED[0] = True


def _run_code(code, fname):
    tree = compile(code, fname, 'exec', _PyCF_ONLY_AST, dont_inherit=True)
    body = tree.body
    if body and type(body[-1]) is _ast.Expr:
        last = body.pop()
        if body:
            exec(compile(tree, fname, 'exec', dont_inherit=True), _NS)
        value = eval(compile(_ast.Expression(last.value), fname, 'eval', dont_inherit=True), _NS)
        if value is not None and type(value) is not _Listing:
            print(repr(value))
    else:
        exec(compile(tree, fname, 'exec', dont_inherit=True), _NS)


def _strip_worker_frames(te, traceback, seen):
    if te is None or id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != _WORKER_FILE])
    _strip_worker_frames(te.__cause__, traceback, seen)
    _strip_worker_frames(te.__context__, traceback, seen)
    for sub in getattr(te, 'exceptions', None) or ():
        _strip_worker_frames(sub, traceback, seen)


def _format_error(e):
    name = type(e).__name__
    try:
        message = str(e)
    except BaseException:
        message = f'<unprintable {name} object>'
    try:
        import traceback
        import linecache
        _sync_linecache(linecache)
        te = traceback.TracebackException(type(e), e, e.__traceback__)
        _strip_worker_frames(te, traceback, set())
        tb = ''.join(te.format())
    except BaseException:
        tb = f'{name}: {message}\n'
    return {'type': name, 'message': message, 'traceback': tb}


def _on_exec(m):
    rid = m['id']
    code = m.get('code')
    if type(code) is not str:
        raise _ProtocolError('exec: code (str) is required')
    t0 = _clock()
    _CELL_NO[0] += 1
    cell_no = _CELL_NO[0]
    fname = f'<cell-{cell_no}>'
    _FINAL[0] = None
    _fix_std_fds()
    if len(code) <= 1_000_000:
        _SOURCES[fname] = code
    # Cell sources go to linecache once something has imported it (the worker itself does so only on the first
    # error: importing linecache at start-up would cost the cold start more than the rest of the worker's imports).
    lc = sys.modules.get('linecache')
    if lc is not None:
        if _LC_SYNCED[0]:
            if fname in _SOURCES:
                _register_source(lc, fname, code)
        else:
            _sync_linecache(lc)
    if not _WASI and _signal.getsignal(_signal.SIGINT) is not _on_sigint:
        _signal.signal(_signal.SIGINT, _on_sigint)  # interrupts must keep working whatever the last cell did
    err = None
    _PEND_INT[0] = False
    _CELL_OPEN[0] = True
    try:
        with _INT_LOCK:
            _ACTIVE[0] = True
            early = _INT_EARLY[0]
            _INT_EARLY[0] = False
        if early:
            raise KeyboardInterrupt  # the interrupt came after this exec was sent, before the cell started
        _run_code(code, fname)
        _EXECS_DONE[0] = cell_no  # before clearing _ACTIVE: see _on_interrupt
        _ACTIVE[0] = False
    except BaseException as e:
        _EXECS_DONE[0] = cell_no
        _ACTIVE[0] = False
        err = e
    if _getpid() != _MAIN_PID:
        _child_exit()  # a forked child finished the cell: it must never reach the channel
    error = None
    if err is not None:
        error = _format_error(err)
        err = None
    stdout, stderr = _collect_output()
    restored = _restore_contexts()
    if restored:
        stdout = stdout + ('' if not stdout or stdout.endswith('\n') else '\n') + restored
    final = _FINAL[0]
    if final is None:
        a = _NS.get('answer')
        if isinstance(a, dict) and a.get('ready') is True:
            try:
                final = str(a.get('content'))
            except BaseException as e:
                final = f'<str() of answer["content"] failed: {type(e).__name__}>'
            try:
                a['content'] = ''
                a['ready'] = False
            except BaseException:
                pass
    msg = {'type': 'result', 'id': rid, 'stdout': stdout, 'stderr': stderr, 'error': error, 'final': final,
           'duration_ms': round((_clock() - t0) * 1000.0, 3)}
    fields = [(msg, 'stdout'), (msg, 'stderr'), (msg, 'final')]
    if error is not None:
        fields += [(error, 'message'), (error, 'traceback')]
    payload = _fit(msg, fields)
    if payload is None:
        payload = _encode({'type': 'result', 'id': rid, 'stdout': '', 'stderr': '', 'final': None,
                           'error': {'type': 'FrameTooLarge', 'message': 'the cell result does not fit the channel '
                                     'frame limit', 'traceback': ''},
                           'duration_ms': msg['duration_ms']})
    with _SEND_LOCK:
        _CELL_OPEN[0] = False
        _write_all(len(payload).to_bytes(4, 'big') + payload)


def _on_get_var(m):
    rid = m['id']
    name = m.get('name')
    if type(name) is not str:
        raise _ProtocolError('get_var: name (str) is required')
    if name not in _NS:
        _reply({'type': 'var', 'id': rid, 'found': False, 'value': None, 'type_name': None})
        return
    obj = _NS[name]
    type_name = type(obj).__name__
    _PEND_INT[0] = False
    try:
        _ACTIVE[0] = True  # str() runs user code: let the host interrupt it
        value = str(obj)
        _ACTIVE[0] = False
    except BaseException as e:
        _ACTIVE[0] = False
        value = f'<str() failed: {type(e).__name__}: {e}>'
    if _getpid() != _MAIN_PID:
        _child_exit()
    cap = _MAX_FRAME[0] // 2
    if len(value) > cap // 4:
        b = value.encode('utf-8', 'replace')
        if len(b) > cap:
            note = f'\n... [cut: the value has {len(value)} characters; only the start is shown]'
            value = b[:max(0, cap - len(note.encode()))].decode('utf-8', 'ignore') + note
    msg = {'type': 'var', 'id': rid, 'found': True, 'value': value, 'type_name': type_name}
    payload = _fit(msg, [(msg, 'value')])
    if payload is None:
        payload = _encode({'type': 'var', 'id': rid, 'found': True, 'value': '', 'type_name': type_name})
    _send_bytes(payload)


def _reply(msg):
    payload = _encode(msg)
    if len(payload) > _MAX_FRAME[0]:
        raise _ProtocolError(f'reply of type {msg.get("type")} too large')
    _send_bytes(payload)


# ---------------------------------------------------------------------------------------------------------- reader

def _reader_loop(reader):
    _signal.pthread_sigmask(_signal.SIG_BLOCK, [_signal.SIGINT])
    while True:
        m = reader.frame()
        t = m['type']
        if t == 'subcall_result':
            sid = m['id']
            _check_subcall_result(m)
            slot = _PENDING.pop(sid, None)
            if slot is not None:
                slot[1] = m
                slot[0].release()
            elif sid in _ABANDONED:
                _ABANDONED.discard(sid)
            else:
                raise _ProtocolError(f'subcall_result for unknown id {sid!r}')
        elif t == 'interrupt':
            _on_interrupt()
        elif t == 'shutdown':
            _exit(0)
        elif t == 'init':
            raise _ProtocolError('init sent twice')
        elif t == 'context' and _INLINE[0]:
            # The context's bytes follow this frame on the channel: the main thread reads them through this reader's
            # buffer, and this thread waits until it has (nothing else may be read from the channel meanwhile).
            gate = _thread.allocate_lock()
            gate.acquire()
            m['_inline'] = (reader, gate)
            _QUEUE.put(m)
            gate.acquire()
        else:
            if t == 'exec':
                _EXECS_QUEUED[0] += 1
            _QUEUE.put(m)


def _on_interrupt():
    # SIGINT goes to the main thread itself (pthread_kill), so a blocking call there (time.sleep, waitpid, a lock)
    # is interrupted too; the helper threads block SIGINT. An interrupt that arrives after an exec was queued but before
    # its cell started is kept for that cell. The main thread counts a cell as done before it clears _ACTIVE, so
    # "not active and fewer done than queued" means a cell is waiting to start, never one that just finished.
    with _INT_LOCK:
        if _ACTIVE[0]:
            _signal.pthread_kill(_MAIN_TID, _signal.SIGINT)
        elif _EXECS_QUEUED[0] > _EXECS_DONE[0]:
            _INT_EARLY[0] = True


def _reader_thread(reader):
    try:
        _reader_loop(reader)
    except _ProtocolError as e:
        _fatal(f'protocol violation: {e}')
    except BaseException as e:
        _fatal(f'channel reader failed: {type(e).__name__}: {e}')


# -------------------------------------------------------------------------------------------------------- landlock

def _landlock(work_dir):
    try:
        import ctypes
        import struct
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
    except Exception:
        return 'unsupported'
    c_long = ctypes.c_long
    ENOSYS, EOPNOTSUPP = 38, 95

    def call(*args):
        ctypes.set_errno(0)
        r = syscall(*args)
        return r, ctypes.get_errno()

    abi, e = call(c_long(444), ctypes.c_void_p(None), ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 0:
        if e in (ENOSYS, EOPNOTSUPP):
            return 'unsupported'
        return f'failed: landlock_create_ruleset(VERSION): {os.strerror(e)}'
    EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
    IOCTL_DEV = 1 << 15
    fs = (1 << 13) - 1
    if abi >= 2:
        fs |= 1 << 13  # REFER
    if abi >= 3:
        fs |= 1 << 14  # TRUNCATE
    if abi >= 5:
        fs |= IOCTL_DEV
    if abi >= 6:
        attr = struct.pack('=QQQ', fs, 1 | 2, 1 | 2)  # net: BIND_TCP|CONNECT_TCP; scoped: ABSTRACT_UNIX_SOCKET|SIGNAL
    elif abi >= 4:
        attr = struct.pack('=QQ', fs, 1 | 2)
    else:
        attr = struct.pack('=Q', fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    rs, e = call(c_long(444), buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if rs < 0:
        return f'failed: landlock_create_ruleset: {os.strerror(e)}'
    try:
        rules = [('/', EXECUTE | READ_FILE | READ_DIR), (work_dir, fs)]
        if os.path.isdir('/dev'):
            rules.append(('/dev', READ_FILE | WRITE_FILE | (fs & IOCTL_DEV)))
        for path, access in rules:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError as ex:
                return f'failed: open {path}: {ex.strerror}'
            try:
                rule = ctypes.create_string_buffer(struct.pack('=Qi', access, pfd), 12)
                r, e = call(c_long(445), c_long(rs), c_long(1), rule, c_long(0))  # LANDLOCK_RULE_PATH_BENEATH
                if r < 0:
                    return f'failed: landlock_add_rule {path}: {os.strerror(e)}'
            finally:
                os.close(pfd)
        ctypes.set_errno(0)
        if libc.prctl(ctypes.c_int(38), ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)) != 0:
            return f'failed: prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}'
        r, e = call(c_long(446), c_long(rs), c_long(0))
        if r < 0:
            return f'failed: landlock_restrict_self: {os.strerror(e)}'
        return f'enforced abi {abi}'
    finally:
        os.close(rs)


# ------------------------------------------------------------------------------------------------------------ main

def _setup_channel():
    global _CHAN_IN, _CHAN_OUT, _DIAG, _NULL
    # The data pipes first, while fds 3 and 4 are still the host's (a dup below may reuse a free 3 or 4).
    for fd, slot in ((3, _DATA_FD), (4, _DATA_OUT)):
        try:
            if os.fstat(fd).st_mode & 0o170000 == 0o010000:  # a FIFO: one of the host's context data pipes
                slot[0] = os.dup(fd)
                os.close(fd)
        except OSError:
            pass
    _CHAN_IN = os.dup(0)    # os.dup: close-on-exec
    _CHAN_OUT = os.dup(1)
    try:
        _DIAG = os.dup(2)
    except OSError:
        _DIAG = -1
    fd = os.open('/dev/null', os.O_RDWR)
    _NULL = os.dup(fd)      # close-on-exec spare, restored onto fd 0 before each cell
    os.dup2(fd, 0)
    os.close(fd)


def _setup_capture():
    global _R_OUT, _R_ERR, _W_OUT, _W_ERR, _CTL_R, _CTL_W
    _R_OUT, _W_OUT = os.pipe()  # close-on-exec; the write ends are kept as spares for _fix_std_fds
    _R_ERR, _W_ERR = os.pipe()
    _CTL_R, _CTL_W = os.pipe()
    os.set_blocking(_R_OUT, False)
    os.set_blocking(_R_ERR, False)
    os.dup2(_W_OUT, 1)
    os.dup2(_W_ERR, 2)
    for name, fd, mode in (('stdin', 0, 'r'), ('stdout', 1, 'w'), ('stderr', 2, 'w')):
        s = getattr(sys, name, None)
        try:
            if mode == 'w':
                s.reconfigure(encoding='utf-8', errors='backslashreplace', line_buffering=True)
        except Exception:
            setattr(sys, name, _open_std(fd, mode))
            setattr(sys, '__' + name + '__', getattr(sys, name))


def _read_init(reader):
    m = reader.frame()
    if m['type'] != 'init':
        raise _ProtocolError(f'expected init, got {m["type"]}')
    ol = m.get('output_limit', _DEFAULT_OUTPUT_LIMIT)
    mf = m.get('max_frame', _DEFAULT_MAX_FRAME)
    mb = m.get('max_batch', _DEFAULT_MAX_BATCH)
    wd = m.get('work_dir')
    ll = m.get('landlock')
    if type(ol) is not int or ol < 0:
        raise _ProtocolError('init: output_limit must be a non-negative int')
    if type(mf) is not int or mf < _MIN_MAX_FRAME:
        raise _ProtocolError(f'init: max_frame must be an int >= {_MIN_MAX_FRAME}')
    if type(mb) is not int or mb < 1:
        raise _ProtocolError('init: max_batch must be an int >= 1')
    if type(wd) is not str or not wd:
        raise _ProtocolError('init: work_dir (str) is required')
    if type(ll) is not bool:
        raise _ProtocolError('init: landlock (bool) is required')
    data = m.get('data', 'pipe')
    if data not in ('pipe', 'inline'):
        raise _ProtocolError('init: data must be "pipe" or "inline"')
    if data == 'pipe' and _DATA_FD[0] < 0:
        raise _ProtocolError('init: the host announced data pipes, but fd 3 is not one')
    _INLINE[0] = data == 'inline'
    mc = m.get('max_child_context', 0)
    if type(mc) is not int or mc < 0:
        raise _ProtocolError('init: max_child_context must be a non-negative int')
    _MAX_CHILD[0] = mc
    _OUTPUT_LIMIT[0] = ol
    _MAX_FRAME[0] = mf
    _MAX_BATCH[0] = mb
    return m['id'], wd, ll


class _LazySite:
    """The host starts Python with -S: site-packages (and venv detection) cost startup time most cells never need.
    The first top-level import the standard library cannot satisfy runs site.main() once and retries."""

    done = False

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is not None or cls.done:
            return None
        cls.done = True
        import site
        site.main()
        from importlib.machinery import PathFinder
        return PathFinder.find_spec(name)


def _wasi_main():
    """The single-threaded worker (WASI): fds 0 and 1 are the channel and stay so; context bytes always come inline."""
    global _CHAN_IN, _CHAN_OUT, _DIAG
    _CHAN_IN, _CHAN_OUT, _DIAG = 0, 1, 2
    reader = _FrameReader(_CHAN_IN)
    _WASI_READER[0] = reader
    try:
        rid, work_dir, landlock = _read_init(reader)
    except _ProtocolError as e:
        _fatal(f'protocol violation: {e}')
    if not _INLINE[0]:
        _fatal('protocol violation: init: a WASI worker has no data pipes (data must be "inline")')
    try:
        os.chdir(work_dir)  # a preopened directory (mkdir of it fails with ENOENT under WASI)
    except OSError:
        try:
            os.makedirs(work_dir, exist_ok=True)
            os.chdir(work_dir)
        except OSError as e:
            _diag(f'work dir {work_dir}: {e}')
    _WORK_DIR[0] = work_dir
    import time
    time.sleep = _wasi_sleep
    _NS.update({
        '__name__': '__main__', '__builtins__': __builtins__,
        'llm_query': llm_query, 'llm_query_batched': llm_query_batched, 'rlm_query': rlm_query,
        'FINAL': FINAL, 'FINAL_VAR': FINAL_VAR, 'SHOW_VARS': SHOW_VARS,
        'answer': {'content': '', 'ready': False},
    })
    v = sys.version_info
    status = 'not applicable (wasm: the guest reaches no host kernel)' if landlock else 'disabled'
    _reply({'type': 'ready', 'id': rid, 'pid': _getpid(), 'python': f'{v[0]}.{v[1]}.{v[2]}', 'landlock': status})
    while True:
        m = reader.frame()
        t = m['type']
        if t == 'exec':
            _on_exec(m)
        elif t == 'context':
            m['_inline'] = (reader, None)
            _on_context(m)
        elif t == 'get_var':
            _on_get_var(m)
        elif t == 'subcall_result':
            _check_subcall_result(m)
            if m['id'] not in _ABANDONED:
                raise _ProtocolError(f'subcall_result for unknown id {m["id"]!r}')
            _ABANDONED.discard(m['id'])
        elif t == 'interrupt':
            pass  # no cell is running: nothing to interrupt
        elif t == 'shutdown':
            _exit(0)
        else:
            raise _ProtocolError(f'unexpected request {t!r}')


def main():
    if sys.flags.no_site:
        sys.meta_path.append(_LazySite)
    if _WASI:
        return _wasi_main()
    _setup_channel()
    reader = _FrameReader(_CHAN_IN)
    try:
        rid, work_dir, landlock = _read_init(reader)
    except _ProtocolError as e:
        _fatal(f'protocol violation: {e}')
    _setup_capture()
    _signal.signal(_signal.SIGINT, _on_sigint)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    os.register_at_fork(after_in_child=_after_fork_child)
    work_dir = os.path.abspath(work_dir)
    _WORK_DIR[0] = work_dir
    try:
        os.makedirs(work_dir, exist_ok=True)
        os.chdir(work_dir)
    except OSError as e:
        _diag(f'work dir {work_dir}: {e}')
    # Landlock binds the calling thread and the threads it creates later: apply it before starting any thread.
    status = 'disabled'
    if landlock:
        try:
            status = _landlock(work_dir)
        except Exception as e:
            status = f'failed: {type(e).__name__}: {e}'
    _NS.update({
        '__name__': '__main__', '__builtins__': __builtins__,
        'llm_query': llm_query, 'llm_query_batched': llm_query_batched, 'rlm_query': rlm_query,
        'FINAL': FINAL, 'FINAL_VAR': FINAL_VAR, 'SHOW_VARS': SHOW_VARS,
        'answer': {'content': '', 'ready': False},
    })
    _thread.start_new_thread(_drain_thread, ())
    _thread.start_new_thread(_reader_thread, (reader,))
    v = sys.version_info
    _reply({'type': 'ready', 'id': rid, 'pid': _getpid(), 'python': f'{v[0]}.{v[1]}.{v[2]}', 'landlock': status})
    get = _QUEUE.get
    while True:
        m = get()
        t = m['type']
        if t == 'exec':
            _on_exec(m)
        elif t == 'context':
            _on_context(m)
        elif t == 'get_var':
            _on_get_var(m)
        else:
            raise _ProtocolError(f'unexpected request {t!r}')


def _main_guarded():
    try:
        main()
    except _ProtocolError as e:
        _fatal(f'protocol violation: {e}')
    except BaseException as e:
        if _getpid() != _MAIN_PID:
            _exit(1)
        _fatal(f'internal error: {type(e).__name__}: {e}', 1)


if __name__ in ('rlm_worker', '__main__'):
    _main_guarded()
