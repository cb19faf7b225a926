#!/usr/bin/env python3
"""A small HTTP/1.1 file server for diskcast's tests (tests/integration/http.rs).

It honours single byte ranges as RFC 9110 says (Range, Content-Range, ETag, If-Range:
a validator that does not match gets the whole file with 200) and misbehaves on purpose:

  --drop-once         the first answer with a body over 64 KiB sends half its bytes, then
                      the connection is shut down (a proxy or server dying mid-response)
  --change-after N    after N answers the file has a new ETag, as if it was replaced on
                      the server while a client read it

Each answer is logged to --log as one line: `RANGE-START STATUS` or `dropped AT`, where AT
is the file offset of the first byte not sent.
"""
import argparse
import http.server
import os
import re
import socket
import threading


class State:
    def __init__(self, args):
        self.root = args.root
        self.drop_once = args.drop_once
        self.change_after = args.change_after
        self.answers = 0
        self.dropped = False
        self.lock = threading.Lock()
        self.log = open(args.log, "a", buffering=1)

    def note(self, line):
        with self.lock:
            self.log.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        st = self.server.state
        name = self.path.split("?", 1)[0].lstrip("/")
        path = os.path.join(st.root, name)
        if "/" in name or not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        with st.lock:
            st.answers += 1
            changed = st.change_after is not None and st.answers > st.change_after
            drop = st.drop_once and not st.dropped
        etag = '"v2"' if changed else '"v1"'
        start, end, status = 0, size - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if m and (if_range is None or if_range == etag):
            start = int(m.group(1))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            if drop and length > 65536:
                with st.lock:
                    st.dropped = True
                half = length // 2
                self.wfile.write(f.read(half))
                self.wfile.flush()
                st.note(f"dropped {start + half}")
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            st.note(f"{start} {status}")
            left = length
            while left > 0:
                chunk = f.read(min(left, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--drop-once", action="store_true")
    p.add_argument("--change-after", type=int)
    args = p.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)
    server.serve_forever()


if __name__ == "__main__":
    main()
