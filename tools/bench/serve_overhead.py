#!/usr/bin/env python3
"""Server overhead as a plain blocking client sees it.

Sends `search` requests one at a time over the Unix socket of a running `colbert serve`, first as
query text, then as pre-encoded vectors (from the server's own `encode` op, once as the server
writes them, once widened to 17-digit doubles as numpy's tolist() gives them, and once as
`vectors_b64`, the float32 bytes in base64), and reports per
request the round trip and the round trip minus the server's `took_ms` (the time it spent
encoding and searching). That difference is what the socket, JSON framing and the server's thread
hand-offs add over calling the search in process. Standard library only; no virtual environment.

  python3 tools/bench/serve_overhead.py --socket /tmp/s.sock --queries index/queries.jsonl
"""
import argparse
import base64
import json
import socket
import struct
import sys
import time


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))] if v else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True, help="path of the server's Unix domain socket")
    ap.add_argument("--queries", required=True, help="BEIR queries.jsonl (uses 'text') or one query per line")
    ap.add_argument("--limit", type=int, default=60, help="distinct queries (default 60)")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the queries (default 3)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--spin", action="store_true",
                    help="busy-poll the socket instead of sleeping in recv, so that the client's own wake-up "
                         "after a long wait (large on VMs) is not counted")
    ap.add_argument("--idle-ms", type=float, default=20.0,
                    help="pause before each of 100 extra pings (default 20, about a search's length): a ping "
                         "that finds the server's thread parked since then pays its wake-up")
    args = ap.parse_args()

    texts = []
    with open(args.queries, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                texts.append(json.loads(line)["text"])
            except (ValueError, KeyError, TypeError):
                texts.append(line)
    texts = texts[: args.limit]
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
    pending = bytearray()

    def read_line():
        if not args.spin:
            return reader.readline()
        nonlocal pending
        while True:
            cut = pending.find(b"\n")
            if cut >= 0:
                line = bytes(pending[: cut + 1])
                del pending[: cut + 1]
                return line
            try:
                chunk = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return b""
            pending += chunk

    def call(request):
        line = (json.dumps(request) + "\n").encode()
        t0 = time.perf_counter()
        sock.sendall(line)
        response = read_line()
        elapsed = (time.perf_counter() - t0) * 1000
        if not response:
            raise SystemExit("error: the server closed the connection")
        body = json.loads(response)
        if not body.get("ok"):
            raise SystemExit(f"error: {body.get('error')}")
        return elapsed, body

    if args.spin:
        sock.setblocking(False)
    pings = [call({"op": "ping"})[0] for _ in range(500)]
    idle_pings = []
    for _ in range(100):
        # Busy-waits with --spin (this client stays awake), else sleeps.
        if args.spin:
            until = time.perf_counter() + args.idle_ms / 1000
            while time.perf_counter() < until:
                pass
        else:
            time.sleep(args.idle_ms / 1000)
        idle_pings.append(call({"op": "ping"})[0])
    model = None
    vectors = []
    for t in texts:
        _, body = call({"op": "encode", "kind": "query", "texts": [t]})
        model = body["model"]
        vectors.append(body["embeddings"][0]["vectors"])

    results = {"ping_p50_ms": percentile(pings, 50), "ping_after_idle_p50_ms": percentile(idle_pings, 50)}
    # A client holding float32 arrays sends them through tolist(): each value widened to a Python
    # float and printed with up to 17 digits, not the ~9 the server itself writes.
    widened = [[[struct.unpack("f", struct.pack("f", x))[0] for x in row] for row in v] for v in vectors]
    # What a numpy client sends with base64.b64encode(q.astype("<f4").tobytes()).
    packed = [base64.b64encode(struct.pack(f"<{len(v) * len(v[0])}f", *(x for row in v for x in row))).decode()
              for v in vectors]
    kinds = [
        ("text", lambda i: {"op": "search", "query": texts[i], "k": args.k}),
        ("vectors", lambda i: {"op": "search", "vectors": vectors[i], "model": model, "k": args.k}),
        ("vectors_tolist", lambda i: {"op": "search", "vectors": widened[i], "model": model, "k": args.k}),
        ("vectors_b64", lambda i: {"op": "search", "vectors_b64": packed[i], "model": model, "k": args.k}),
    ]
    for name, make in kinds:
        requests = [json.dumps(make(i)) for i in range(len(texts))]  # serialised before timing
        trips, overheads = [], []
        for _ in range(args.repeats):
            for line in requests:
                t0 = time.perf_counter()
                sock.sendall((line + "\n").encode())
                body = json.loads(read_line())
                trip = (time.perf_counter() - t0) * 1000
                if not body.get("ok"):
                    raise SystemExit(f"error: {body.get('error')}")
                trips.append(trip)
                overheads.append(trip - body["took_ms"])
        for p in (50, 95, 99):
            results[f"{name}_p{p}_ms"] = percentile(trips, p)
            results[f"{name}_overhead_p{p}_ms"] = percentile(overheads, p)
    sock.close()
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in results.items()}))
    else:
        print(f"ping round trip p50 {results['ping_p50_ms']:.3f} ms back to back, "
              f"{results['ping_after_idle_p50_ms']:.3f} ms after {args.idle_ms:g} ms idle")
        for name, _ in kinds:
            print(f"search ({name}): round trip p50 {results[f'{name}_p50_ms']:.3f} ms; overhead (round trip - took_ms) "
                  f"p50 {results[f'{name}_overhead_p50_ms']:.3f}  p95 {results[f'{name}_overhead_p95_ms']:.3f}  "
                  f"p99 {results[f'{name}_overhead_p99_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
