"""Unit tests of agora_framework.py's framing and message helpers (no node needed).

Run from anywhere:  python3 -m unittest discover -s examples/python -v

The message shapes are compared with the examples in docs/FRAMEWORK_API.md,
which protocol/tests/framework_api_doc.rs in turn checks against the Rust
types, so this client and the node cannot silently disagree. A real socket
pair checks that frames survive being split across reads.
"""

import json
import os
import re
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import agora_framework as af  # noqa: E402

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                   "FRAMEWORK_API.md")


def doc_examples(label):
    """The JSON values of the doc's ```json LABEL blocks."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^```json %s\n(.*?)^```" % re.escape(label), text, re.M | re.S)
    return [json.loads(b) for b in blocks]


def doc_message(label, kind):
    """The first example of message `kind` in the doc."""
    for value in doc_examples(label):
        if value == kind or (isinstance(value, dict) and kind in value):
            return value
    raise AssertionError("the doc has no %s example of %s" % (label, kind))


class FramingTest(unittest.TestCase):
    def test_handshake_frame_matches_the_documented_bytes(self):
        frame = af.encode_frame(af.handshake("json"))
        self.assertEqual(frame.hex(" "), "00 00 00 0c 61 67 6f 72 61 2f 31 20 6a 73 6f 6e")
        self.assertEqual(af.handshake("postcard"), b"agora/1 postcard")

    def test_length_is_big_endian_and_excludes_the_prefix(self):
        payload = b"x" * 300
        frame = af.encode_frame(payload)
        self.assertEqual(frame[:4], b"\x00\x00\x01\x2c")
        self.assertEqual(frame[4:], payload)

    def test_oversized_frames_are_refused_both_ways(self):
        with self.assertRaises(ValueError):
            af.encode_frame(b"x" * (af.MAX_FRAME + 1))
        af.encode_frame(b"x" * af.MAX_FRAME)
        dec = af.FrameDecoder()
        dec.feed((af.MAX_FRAME + 1).to_bytes(4, "big"))
        with self.assertRaises(af.ProtocolError):
            dec.next_frame()

    def test_decoder_splits_a_stream_fed_byte_by_byte(self):
        stream = af.encode_frame(b"first") + af.encode_frame(b"") + af.encode_frame(b"third")
        dec = af.FrameDecoder()
        out = []
        for i in range(len(stream)):
            dec.feed(stream[i:i + 1])
            frame = dec.next_frame()
            if frame is not None:
                out.append(frame)
        self.assertEqual(out, [b"first", b"", b"third"])
        self.assertIsNone(dec.next_frame())

    def test_frames_cross_a_real_socket_pair(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            msg = af.submit(9, [af.task_spec("j", "true", 100, 16)] * 50)
            a.sendall(af.encode_message(msg) + af.encode_message("subscribe_offers"))
            dec = af.FrameDecoder()
            got = []
            while len(got) < 2:
                dec.feed(b.recv(7))  # small reads split frames and prefixes
                while True:
                    frame = dec.next_frame()
                    if frame is None:
                        break
                    got.append(af.decode_message(frame))
            self.assertEqual(got[0], ("submit", msg["submit"]))
            self.assertEqual(got[1], ("subscribe_offers", None))
        finally:
            a.close()
            b.close()


class MessageTest(unittest.TestCase):
    def test_register_matches_the_doc(self):
        self.assertEqual(
            af.register("batch", role="analytics", weight=1, failover_timeout_ms=60000),
            doc_message("client", "register"),
        )

    def test_submit_and_task_spec_match_the_doc(self):
        spec = af.task_spec("hello", "echo hello from $AGORA_NODE_ID", 500, 128)
        self.assertEqual(af.submit(1, [spec]), doc_message("client", "submit"))

    def test_ack_and_unit_messages_match_the_doc(self):
        self.assertEqual(af.ack("batch-1f2e3d4c@node-a1b2c3.1", 3), doc_message("client", "ack"))
        self.assertEqual(af.message("subscribe_offers"), doc_message("client", "subscribe_offers"))

    def test_encoded_messages_are_compact_json_in_one_frame(self):
        frame = af.encode_message(af.ack("t.1", 2))
        self.assertEqual(frame[4:], b'{"ack":{"task_id":"t.1","seq":2}}')

    def test_server_messages_decode_to_kind_and_body(self):
        for value in doc_examples("server"):
            kind, body = af.decode_message(json.dumps(value).encode())
            self.assertEqual({kind: body}, value)
        self.assertEqual(af.decode_message(b'"subscribe_offers"'), ("subscribe_offers", None))
        for bad in (b"not json", b"[1,2]", b'{"a":1,"b":2}', b"\xff"):
            with self.assertRaises(af.ProtocolError):
                af.decode_message(bad)

    def test_states_only_move_forward(self):
        self.assertTrue(af.is_forward(None, "running"))
        self.assertTrue(af.is_forward("staging", "finished"))
        self.assertTrue(af.is_forward("starting", "running"))
        self.assertFalse(af.is_forward("running", "starting"))
        self.assertFalse(af.is_forward("running", "running"))
        for terminal in af.TERMINAL_STATES:
            self.assertFalse(af.is_forward(terminal, "lost"))

    def test_cpus_parse_to_millicores(self):
        self.assertEqual(af.parse_cpus("0.5"), 500)
        self.assertEqual(af.parse_cpus("2"), 2000)
        with self.assertRaises(ValueError):
            af.parse_cpus("-1")


class CliTest(unittest.TestCase):
    def test_missing_socket_is_a_clean_error(self):
        missing = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no-such.sock")
        import io
        from contextlib import redirect_stderr

        err = io.StringIO()
        with redirect_stderr(err):
            code = af.main(["--socket", missing, "--timeout", "5"])
        self.assertEqual(code, 2)
        self.assertIn("no socket at", err.getvalue())


if __name__ == "__main__":
    unittest.main()
