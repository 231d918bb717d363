#!/usr/bin/env python3
"""A scriptable HTTP/1.1 backend for the proxy's tests (stdlib only).

    backend.py PORT status CODE        answers every request with CODE (JSON body)
    backend.py PORT record FILE        answers 200 and appends "METHOD HOST PATH" to FILE

Keep-alive, threaded, quiet. Every request is counted in GET /__count
(plain text), which is not recorded and always answers 200."""
import http.server
import sys
import threading

port, mode, arg = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
count = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        global count
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path == "/__count":
            body = str(count).encode()
            self.send_response(200)
        else:
            with lock:
                count += 1
                if mode == "record":
                    with open(arg, "a") as f:
                        f.write("%s %s %s\n" % (self.command, self.headers.get("Host"), self.path))
            status = 200 if mode == "record" else int(arg)
            body = b'{"backend":%d}' % port
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
