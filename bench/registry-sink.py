#!/usr/bin/env python3
"""A registry that stores nothing: the push ceiling for bench/registry.

It answers the distribution push protocol (ping, blob HEAD -> 404, POST -> upload
location, PATCH/PUT -> 202/201, manifest PUT -> 201) and reads every request body to the
end without hashing or writing it. A push against it costs only the client and loopback, so
`distribution time / sink time` is the highest push speed-up any server could show with
this client on this machine. Not a registry: nothing can be pulled from it.

Usage: registry-sink.py PORT
"""
import socket
import sys
import threading
import uuid


def read_body(f, headers):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                f.readline()
                return
            skip(f, size)
            f.readline()
    skip(f, int(headers.get("content-length", "0") or 0))


def skip(f, n):
    while n:
        got = len(f.read(min(n, 1 << 20)))
        if got == 0:
            raise EOFError
        n -= got


def serve(conn):
    # skopeo with --dest-tls-verify=false tries TLS first: refuse a ClientHello at once.
    if conn.recv(1, socket.MSG_PEEK) in (b"\x16", b""):
        conn.close()
        return
    f = conn.makefile("rb", buffering=1 << 20)
    try:
        while True:
            line = f.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers = {}
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                k, v = h.decode("latin-1").split(":", 1)
                headers[k.strip().lower()] = v.strip()
            read_body(f, headers)
            path = target.split("?")[0]
            extra = ""
            if method == "HEAD" or (method == "GET" and path != "/v2/"):
                status = "404 Not Found"
            elif method == "GET":
                status = "200 OK"
            elif method == "POST":
                status = "202 Accepted"
                extra = "Location: %s%s\r\nRange: 0-0\r\n" % (path, uuid.uuid4().hex)
            elif method == "PATCH":
                status = "202 Accepted"
                extra = "Location: %s\r\nRange: 0-0\r\n" % path
            else:
                status = "201 Created"
                extra = "Location: %s\r\n" % path
            conn.sendall(("HTTP/1.1 %s\r\n%sContent-Length: 0\r\n\r\n" % (status, extra)).encode())
    except (EOFError, ConnectionError, ValueError):
        pass
    finally:
        conn.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen(64)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
