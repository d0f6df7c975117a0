#!/usr/bin/env python3
"""Server overhead of `search` with pre-encoded query vectors, by how the numbers are written.

Encodes the first queries through the server's own `encode` op, then sends them back as
`vectors` twice: as the server wrote them (shortest float32 text, ~9 digits) and as a client
holding float32 arrays sends them after `tolist()` (each float32 widened to a Python float,
printed with up to 17 digits). Prints per form the request size and the p50 of round trip minus
the server's `took_ms`. Standard library only.

  python3 tools/bench/serve_vectors_overhead.py --socket /tmp/s.sock --queries index/queries.jsonl
"""
import argparse
import json
import socket
import statistics
import struct
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True, help="path of the server's Unix domain socket")
    ap.add_argument("--queries", required=True, help="BEIR queries.jsonl (uses 'text')")
    ap.add_argument("--limit", type=int, default=60, help="distinct queries (default 60)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the queries (default 3)")
    args = ap.parse_args()

    with open(args.queries, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()][: args.limit]
    if not texts:
        print("error: no queries", file=sys.stderr)
        return 1
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(args.socket)
    except OSError as e:
        print(f"error: cannot connect to {args.socket}: {e}", file=sys.stderr)
        return 1
    reader = sock.makefile("rb")

    def call(request_line):
        t0 = time.perf_counter()
        sock.sendall(request_line)
        body = json.loads(reader.readline())
        if not body.get("ok"):
            raise SystemExit(f"error: {body.get('error')}")
        return (time.perf_counter() - t0) * 1000, body

    vectors, model = [], None
    for t in texts:
        _, body = call((json.dumps({"op": "encode", "kind": "query", "texts": [t]}) + "\n").encode())
        model = body["model"]
        vectors.append(body["embeddings"][0]["vectors"])

    def widened(x):
        return struct.unpack("f", struct.pack("f", x))[0]

    forms = [("short (the server's own text)", lambda v: v),
             ("float32 as Python float (numpy tolist)", lambda v: [[widened(x) for x in row] for row in v])]
    for name, convert in forms:
        lines = [(json.dumps({"op": "search", "vectors": convert(v), "model": model, "k": 10}) + "\n").encode()
                 for v in vectors]
        overheads = []
        for _ in range(args.repeats):
            for line in lines:
                trip, body = call(line)
                overheads.append(trip - body["took_ms"])
        print(f"{name}: {len(lines[0])} bytes/request, overhead p50 {statistics.median(overheads):.3f} ms")
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
