#!/usr/bin/env python3
"""A Loki push receiver for tests (stdlib only).

POST /loki/api/v1/push is checked against Loki's documented push API
(https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs):
  - Content-Type: application/json; Content-Encoding: gzip (the body must
    gunzip);
  - {"streams": [{"stream": {label: value}, "values": [[ts, line], ...]}]}
    with a non-empty streams list, label names matching
    [a-zA-Z_][a-zA-Z0-9_]*, label values strings, values non-empty, each
    entry exactly [string of decimal unix nanoseconds, string line];
  - as Loki (2.4+, unordered writes): an entry may be older than the
    newest of its stream by at most an hour (else it is refused), and an
    entry equal to one already stored (same stream, timestamp and line) is
    a duplicate that Loki drops: it is not recorded again (a client's
    resend after a restart is harmless only if it sends the same timestamp).
    The record file is replayed at start, so this holds across restarts.
A valid push answers 204 and appends one JSON object per entry to --out:
{"labels": {...}, "ns": "...", "line": "..."}. An invalid one answers 400
and appends the reason to --out + ".errors" (a test asserts it is empty).

usage: loki_receiver.py --port P --out FILE
"""
import argparse
import gzip
import http.server
import json
import re
import sys

LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    last_ns = {}
    stored = set()
    try:
        with open(args.out) as f:
            for rec in f:
                r = json.loads(rec)
                key = json.dumps(r["labels"], sort_keys=True)
                last_ns[key] = max(last_ns.get(key, 0), int(r["ns"]))
                stored.add((key, r["ns"], r["line"]))
    except FileNotFoundError:
        pass
    HOUR_NS = 3600 * 10**9

    def validate(doc):
        if not isinstance(doc, dict) or set(doc) != {"streams"}:
            return "top level must be an object with only \"streams\""
        streams = doc["streams"]
        if not isinstance(streams, list) or not streams:
            return "streams must be a non-empty array"
        seen = dict(last_ns)
        for s in streams:
            if not isinstance(s, dict) or set(s) - {"stream", "values"}:
                return "a stream must be {stream, values}"
            labels, values = s.get("stream"), s.get("values")
            if not isinstance(labels, dict) or not labels:
                return "stream labels must be a non-empty object"
            for k, v in labels.items():
                if not LABEL.match(k):
                    return "bad label name %r" % k
                if not isinstance(v, str):
                    return "label %s: value must be a string" % k
            if not isinstance(values, list) or not values:
                return "values must be a non-empty array"
            key = json.dumps(labels, sort_keys=True)
            for e in values:
                if not isinstance(e, list) or len(e) != 2:
                    return "an entry must be [ts, line]"
                ts, line = e
                if not isinstance(ts, str) or not ts.isdigit():
                    return "ts must be a string of unix nanoseconds, got %r" % (ts,)
                if not isinstance(line, str):
                    return "line must be a string"
                if int(ts) < seen.get(key, 0) - HOUR_NS:
                    return "entry too old for stream %s: %s is more than an hour before %s" % (key, ts, seen[key])
                seen[key] = max(seen.get(key, 0), int(ts))
        return None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            pass

        def answer(self, status, text=""):
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if body:
                self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def reject(self, why):
            with open(args.out + ".errors", "a") as f:
                f.write(why + "\n")
            self.answer(400, why)

        def do_GET(self):
            self.answer(200, "ready") if self.path == "/ready" else self.answer(404, "not found")

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(n)
            if self.path != "/loki/api/v1/push":
                return self.answer(404, "not found")
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                return self.reject("Content-Type must be application/json")
            if self.headers.get("Content-Encoding", "") != "gzip":
                return self.reject("Content-Encoding must be gzip")
            try:
                doc = json.loads(gzip.decompress(raw).decode("utf-8"))
            except Exception as e:  # noqa: BLE001 - any decoding failure is the client's
                return self.reject("body: %s" % e)
            why = validate(doc)
            if why:
                return self.reject(why)
            with open(args.out, "a") as f:
                for s in doc["streams"]:
                    key = json.dumps(s["stream"], sort_keys=True)
                    for ts, line in s["values"]:
                        if (key, ts, line) in stored:
                            continue  # Loki drops an exact duplicate
                        stored.add((key, ts, line))
                        f.write(json.dumps({"labels": s["stream"], "ns": ts, "line": line}) + "\n")
                        last_ns[key] = max(last_ns.get(key, 0), int(ts))
            self.answer(204)

    srv = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    print("listening", args.port, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
