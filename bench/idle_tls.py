#!/usr/bin/env python3
"""TLS client helper for bench/gateway (standard library only).

  idle_tls.py PORT COUNT    opens COUNT TLS connections to 127.0.0.1:PORT,
                            one after the other: handshake, one GET / read
                            to the end of its response, so the server holds
                            an idle keep-alive TLS connection; prints
                            "ready" and holds them all until stdin closes.
  idle_tls.py --resumes PORT
                            prints "yes" when a second connection resumes
                            the session of the first (TLS 1.3 ticket), else
                            "no": tells whether a client that keeps its
                            session (wrk does) gets resumed handshakes.

Certificates are not verified: the bench makes its own self-signed one.
"""
import socket
import ssl
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def exchange(s):
    """Sends one GET and reads its whole response (Content-Length body)."""
    s.sendall(REQUEST)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("connection closed before the end of the response")
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if len(body) >= length:
            return head.split(b"\r\n", 1)[0]


def connect(ctx, port, session=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def hold(port, count):
    ctx = context()
    conns = []
    for i in range(count):
        try:
            s = connect(ctx, port)
            status = exchange(s)
        except OSError as e:
            print(f"idle_tls: connection {i}: {e}", file=sys.stderr)
            return 1
        if b" 200 " not in status + b" ":
            print(f"idle_tls: connection {i}: {status.decode(errors='replace')}", file=sys.stderr)
            return 1
        conns.append(s)
    print("ready", flush=True)
    sys.stdin.read()
    for s in conns:
        s.close()
    return 0


def resumes(port):
    ctx = context()
    first = connect(ctx, port)
    exchange(first)  # the TLS 1.3 tickets arrive with the response
    session = first.session
    first.close()
    second = connect(ctx, port, session)
    exchange(second)
    print("yes" if second.session_reused else "no")
    second.close()
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "--resumes":
        return resumes(int(argv[2]))
    if len(argv) == 3:
        return hold(int(argv[1]), int(argv[2]))
    print("usage: idle_tls.py PORT COUNT | idle_tls.py --resumes PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
