#!/usr/bin/env python3
"""A small Agora framework in standard-library Python, speaking the JSON codec.

It connects to the agent's framework socket, performs the handshake,
registers, submits N shell tasks, acknowledges every status event, and prints
each task's final state. Exit status: 0 if every task finished, 1 if any did
not (or the node refused something), 2 for usage and connection errors.

The protocol is specified in docs/FRAMEWORK_API.md; the helpers at the top
of this file (framing, handshake, message shapes) are what another client
would copy, and examples/python/test_framing.py tests them without a node.

    AGORA_SOCKET=/tmp/agora/agora.sock python3 agora_framework.py --count 5
"""

import argparse
import json
import os
import socket
import struct
import sys
import time

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20  # largest frame payload in either direction (1 MiB)
_LENGTH = struct.Struct(">I")  # u32 big-endian length prefix

TERMINAL_STATES = ("finished", "failed", "killed", "lost")
_RANK = {"staging": 0, "starting": 1, "running": 2}


class ProtocolError(Exception):
    """The node sent something this client cannot accept."""


class NodeError(Exception):
    """The node answered with an `error` message."""

    def __init__(self, body):
        self.code = body.get("code")
        self.request_id = body.get("request_id")
        super().__init__("%s: %s" % (self.code, body.get("message")))


# ---------------------------------------------------------------- framing


def encode_frame(payload, max_frame=MAX_FRAME):
    """Puts the 4-byte big-endian length in front of `payload` (bytes)."""
    if len(payload) > max_frame:
        raise ValueError(
            "payload of %d bytes exceeds the frame limit of %d" % (len(payload), max_frame)
        )
    return _LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into frame payloads."""

    def __init__(self, max_frame=MAX_FRAME):
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data):
        """Appends bytes read from the socket."""
        self._buf.extend(data)

    def next_frame(self):
        """The next complete payload, or None if more bytes are needed.

        Raises ProtocolError as soon as a prefix announces an oversized frame.
        """
        if len(self._buf) < _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(self._buf)
        if length > self._max:
            raise ProtocolError(
                "the node announced a frame of %d bytes (limit %d)" % (length, self._max)
            )
        end = _LENGTH.size + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[_LENGTH.size:end])
        del self._buf[:end]
        return payload


def handshake(codec="json"):
    """The handshake frame's payload: b'agora/1 json'."""
    return ("agora/%d %s" % (PROTOCOL_VERSION, codec)).encode("ascii")


# ---------------------------------------------------------------- messages


def message(kind, body=None):
    """A message in serde's externally tagged form: a bare string without a body."""
    return kind if body is None else {kind: body}


def encode_message(msg):
    """A message as a complete frame of compact JSON."""
    return encode_frame(json.dumps(msg, separators=(",", ":")).encode("utf-8"))


def decode_message(payload):
    """A frame payload as (kind, body); body is None for messages without one."""
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError("the node sent a frame that is not JSON: %s" % e) from None
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and len(value) == 1:
        ((kind, body),) = value.items()
        return kind, body
    raise ProtocolError("the node sent JSON that is not a message: %.200r" % (value,))


def register(name, role="", weight=1, failover_timeout_ms=60000, framework_id=None):
    """The `register` message (framework_id to reattach, else None)."""
    return message(
        "register",
        {
            "name": name,
            "role": role,
            "weight": weight,
            "failover_timeout_ms": failover_timeout_ms,
            "framework_id": framework_id,
        },
    )


def task_spec(name, shell, cpu_millis, mem_mib, env=None, priority=0,
              kill_grace_ms=5000, placement_timeout_ms=0):
    """A task spec running `shell` with `sh -c`; every field is present, as required."""
    return {
        "name": name,
        "command": {"shell": shell},
        "env": dict(env or {}),
        "resources": {
            "cpu_millis": cpu_millis,
            "mem_mib": mem_mib,
            "disk_mib": 0,
            "gpus": 0,
            "ports": 0,
        },
        "constraints": [],
        "priority": priority,
        "kill_grace_ms": kill_grace_ms,
        "placement_timeout_ms": placement_timeout_ms,
    }


def submit(request_id, specs):
    """The `submit` message."""
    return message("submit", {"request_id": request_id, "tasks": list(specs)})


def ack(task_id, seq):
    """The `ack` message for a status event."""
    return message("ack", {"task_id": task_id, "seq": seq})


def is_forward(old, new):
    """True when a task may go from state `old` (None: unknown) to `new`."""
    if old is None:
        return True
    if old in TERMINAL_STATES:
        return False
    return _RANK.get(new, 3) > _RANK[old]


def parse_cpus(text):
    """'0.5' -> 500 millicores."""
    value = float(text)
    if value < 0:
        raise ValueError("negative")
    return int(round(value * 1000))


# ---------------------------------------------------------------- connection


class Connection:
    """One framework socket connection using the JSON codec."""

    def __init__(self, path, deadline):
        self.deadline = deadline
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.decoder = FrameDecoder()

    def send(self, msg):
        self.sock.sendall(encode_message(msg))

    def send_raw(self, payload):
        self.sock.sendall(encode_frame(payload))

    def recv_payload(self):
        while True:
            payload = self.decoder.next_frame()
            if payload is not None:
                return payload
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ProtocolError("the node closed the connection")
            self.decoder.feed(data)

    def recv(self):
        return decode_message(self.recv_payload())

    def close(self):
        self.sock.close()


def connect(path, deadline):
    """Connects and handshakes; returns (connection, node_id)."""
    conn = Connection(path, deadline)
    conn.send_raw(handshake("json"))
    kind, body = conn.recv()
    if kind == "error":
        raise NodeError(body)
    if kind != "welcome":
        raise ProtocolError("expected welcome, got %s" % kind)
    if body.get("version") != PROTOCOL_VERSION:
        raise ProtocolError("the node speaks protocol version %s" % body.get("version"))
    return conn, body["node_id"]


def run(args):
    deadline = time.monotonic() + args.timeout
    conn, node_id = connect(args.socket, deadline)
    try:
        conn.send(register(args.name, role="example", failover_timeout_ms=args.failover_ms))
        kind, body = conn.recv()
        while kind == "status":  # not expected before registered; tolerate it
            kind, body = conn.recv()
        if kind == "error":
            raise NodeError(body)
        if kind != "registered":
            raise ProtocolError("expected registered, got %s" % kind)
        framework_id = body["framework_id"]
        print("registered %s on node %s" % (framework_id, node_id), flush=True)

        specs = [
            task_spec(args.name, args.command, args.cpu_millis, args.mem)
            for _ in range(args.count)
        ]
        conn.send(submit(1, specs))
        task_ids = None  # from `submitted`
        latest = {}  # task id -> status object (latest forward state)
        while task_ids is None or any(
            latest.get(t, {}).get("state") not in TERMINAL_STATES for t in task_ids
        ):
            kind, body = conn.recv()
            if kind == "submitted" and body.get("request_id") == 1:
                task_ids = body["task_ids"]
                print("submitted %d tasks" % len(task_ids), flush=True)
            elif kind == "status":
                status = body["status"]
                task_id = status["task_id"]
                old = latest.get(task_id, {}).get("state")
                if is_forward(old, status["state"]):
                    latest[task_id] = status
                    if args.verbose:
                        print("  %s %s" % (task_id, status["state"]), flush=True)
                if body["seq"] != 0:
                    # A blocking send from inside the read loop is safe: the
                    # node keeps reading while we do not (docs/FRAMEWORK_API.md
                    # section 10, "Flow control").
                    conn.send(ack(task_id, body["seq"]))
            elif kind == "error":
                err = NodeError(body)
                if err.request_id == 1 or task_ids is None:
                    raise err
                print("node error: %s" % err, file=sys.stderr)
            # offers and answers to other requests are not used here
    finally:
        conn.close()

    all_finished = True
    for task_id in task_ids:
        s = latest[task_id]
        all_finished &= s["state"] == "finished"
        extra = []
        for key in ("node", "exit_code", "signal", "reason"):
            if s.get(key) is not None:
                extra.append("%s=%s" % (key, s[key]))
        print("%s %s %s" % (task_id, s["state"], " ".join(extra)), flush=True)
    return 0 if all_finished else 1


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Run tasks on an Agora cluster through the JSON framework API."
    )
    p.add_argument("--socket", default=os.environ.get("AGORA_SOCKET"),
                   help="the agent's framework socket (default: $AGORA_SOCKET)")
    p.add_argument("--count", type=int, default=3, help="number of tasks (default 3)")
    p.add_argument("--cpus", default="0.1", help="cores per task, e.g. 0.5 (default 0.1)")
    p.add_argument("--mem", type=int, default=32, help="MiB per task (default 32)")
    p.add_argument("--command", default='echo "hello from $AGORA_NODE_ID"',
                   help="shell line each task runs")
    p.add_argument("--name", default="py-example", help="framework and job name")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="give up after this many seconds (default 120)")
    p.add_argument("--failover-ms", type=int, default=10000,
                   help="failover timeout sent at register (default 10000)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every state change")
    args = p.parse_args(argv)
    if not args.socket:
        p.error("no socket: pass --socket PATH or set AGORA_SOCKET")
    if not 1 <= args.count <= 10000:
        p.error("--count must be between 1 and 10000")
    try:
        args.cpu_millis = parse_cpus(args.cpus)
    except ValueError:
        p.error("--cpus must be a number of cores such as 0.5")

    try:
        return run(args)
    except FileNotFoundError:
        print("error: no socket at %s; is the agent running? (check --socket or AGORA_SOCKET)"
              % args.socket, file=sys.stderr)
    except ConnectionRefusedError:
        print("error: nothing listens on %s (a stale socket?); start the agent" % args.socket,
              file=sys.stderr)
    except PermissionError:
        print("error: permission denied on %s; run as the user the agent runs as" % args.socket,
              file=sys.stderr)
    except NodeError as e:
        print("error: the node refused: %s" % e, file=sys.stderr)
        return 1
    except ProtocolError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except socket.timeout:
        print("error: timed out after %.0f s waiting for the node" % args.timeout,
              file=sys.stderr)
        return 1
    except OSError as e:
        print("error: %s: %s" % (args.socket, e), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
