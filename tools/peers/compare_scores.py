#!/usr/bin/env python3
"""Cross-check our engine's search results against the numpy exhaustive MaxSim of fastplaid_bench.py.

--reference: JSON {query_id: [[doc_id, score], ...]} (exhaustive top-100, best first).
--ours:      JSON lines from `colbert search --json`: {"query_id": ..., "results": [{"id": ..., "score": ...}, ...]}.

For each query in both: the overlap of our top-k with the reference top-k, and the largest absolute
score difference over the documents both list. A document of ours outside the reference top-k is
not counted as a miss when, by its reference score, it ties the reference's k-th score within --score-tol (ties may be cut
either way). Exits 1 when a query's overlap is below --min-overlap or a score differs by more than
--score-tol (defaults fit exact mode: overlap 1.0, scores 1e-3), 2 on unusable input.
Needs only the Python standard library.
"""
from __future__ import annotations

import argparse
import json
import sys


def load_ours(path: str) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid = str(row["query_id"])
                out[qid] = [(str(r["id"]), float(r["score"])) for r in row["results"]]
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"error: {path}:{n}: not a search result line ({e})")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="exhaustive top-100 JSON from fastplaid_bench.py")
    ap.add_argument("--ours", required=True, help="JSON lines from `colbert search --json`")
    ap.add_argument("--k", type=int, default=10, help="top-k compared (default 10)")
    ap.add_argument("--score-tol", type=float, default=1e-3, help="max |score difference| (default 1e-3)")
    ap.add_argument("--min-overlap", type=float, default=1.0,
                    help="min per-query top-k overlap, 0..1 (default 1.0 = exact; e.g. 0.9 for pruned search)")
    ap.add_argument("--min-mean-overlap", type=float, default=None, help="optional bound on the mean overlap")
    ap.add_argument("--no-score-check", action="store_true", help="report score differences without failing on them")
    ap.add_argument("--verbose", action="store_true", help="print every failing query")
    args = ap.parse_args()

    try:
        with open(args.reference, encoding="utf-8") as f:
            raw = json.load(f)
        ref = {str(q): [(str(d), float(s)) for d, s in rows] for q, rows in raw.items()}
    except (OSError, ValueError, TypeError) as e:
        print(f"error: cannot read reference {args.reference}: {e}", file=sys.stderr)
        return 2
    try:
        ours = load_ours(args.ours)
    except OSError as e:
        print(f"error: cannot read {args.ours}: {e}", file=sys.stderr)
        return 2
    common = [q for q in ours if q in ref]
    if not common:
        print("error: no query id is in both files", file=sys.stderr)
        return 2

    k = args.k
    overlaps, max_diff, worst = [], 0.0, None
    low_overlap, n_compared_scores = [], 0
    for q in common:
        r, o = ref[q], ours[q]
        ref_scores = dict(r)
        rk = {d for d, _ in r[:k]}
        kth = r[min(k, len(r)) - 1][1] if r else float("-inf")
        hits = 0
        for d, s in o[:k]:
            if d in rk:
                hits += 1
            elif d in ref_scores and ref_scores[d] >= kth - args.score_tol:
                hits += 1  # ties the reference's k-th score: the cut may fall either way
            # a document missing from the reference top-100 is a miss
        denom = min(k, len(r))
        ov = hits / denom if denom else 1.0
        overlaps.append(ov)
        if ov < args.min_overlap:
            low_overlap.append((q, ov))
        for d, s in o:
            if d in ref_scores:
                n_compared_scores += 1
                diff = abs(s - ref_scores[d])
                if diff > max_diff:
                    max_diff, worst = diff, (q, d, s, ref_scores[d])

    mean_ov = sum(overlaps) / len(overlaps)
    print(f"queries compared: {len(common)} (ours {len(ours)}, reference {len(ref)})")
    print(f"top-{k} overlap: mean {mean_ov:.4f}, min {min(overlaps):.4f}; "
          f"{len(low_overlap)} queries below {args.min_overlap}")
    print(f"scores compared: {n_compared_scores}; max |diff| {max_diff:.3g}"
          + (f" (query {worst[0]}, doc {worst[1]}: ours {worst[2]:.6f}, reference {worst[3]:.6f})" if worst else ""))
    if args.verbose:
        for q, ov in low_overlap:
            print(f"  query {q}: overlap {ov:.2f}; ours {[d for d, _ in ours[q][:k]]} vs reference {[d for d, _ in ref[q][:k]]}")

    failed = False
    if low_overlap:
        failed = True
    if args.min_mean_overlap is not None and mean_ov < args.min_mean_overlap:
        print(f"FAIL: mean overlap {mean_ov:.4f} < {args.min_mean_overlap}")
        failed = True
    if not args.no_score_check and max_diff > args.score_tol:
        print(f"FAIL: max score difference {max_diff:.3g} > {args.score_tol}")
        failed = True
    if low_overlap:
        print(f"FAIL: {len(low_overlap)} queries with top-{k} overlap below {args.min_overlap}")
    print("FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
