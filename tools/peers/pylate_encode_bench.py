#!/usr/bin/env python3
"""PyLate encoding speed on this machine: document throughput and single-query latency.

Documents: BEIR corpus texts (title + " " + text).strip(), encode(..., batch_size=32, is_query=False),
reported as documents/s and kept tokens/s (rows PyLate returns, i.e. after the skiplist mask).
Queries: encode([q], is_query=True) one at a time after a warm-up, p50/p95/p99 in ms.
Peak RSS is the process's ru_maxrss (model + activations + outputs).

Run with the peers venv:  tools/.venv-peers/bin/python tools/peers/pylate_encode_bench.py --help
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="PyLate checkpoint folder (e.g. models/minilm-colbert)")
    ap.add_argument("--corpus", required=True, help="BEIR corpus.jsonl")
    ap.add_argument("--limit", type=int, default=None, help="encode only the first N documents")
    ap.add_argument("--queries", default=None, help="BEIR queries.jsonl for the latency run")
    ap.add_argument("--n-queries", type=int, default=200, help="queries timed one at a time (default 200)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed queries first (default 10)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    # The model is a local folder: keep huggingface_hub from probing the network (and retrying) for it.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peers_common as pc

    if not os.path.isdir(args.model):
        print(f"error: model folder {args.model} not found (run tools/fetch-default-model)", file=sys.stderr)
        return 2
    for p in (args.corpus, args.queries):
        if p and not os.path.isfile(p):
            print(f"error: {p} not found", file=sys.stderr)
            return 2

    machine = pc.machine_info()
    import torch
    from pylate import models

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = models.ColBERT(args.model, device="cpu")
    model.eval()
    load_s = time.perf_counter() - t0
    rss_after_load = pc.peak_rss_mb()

    ids, texts = pc.load_corpus(args.corpus, args.limit)
    if not texts:
        print("error: the corpus is empty", file=sys.stderr)
        return 2
    # Warm-up (first-call allocations, lazy kernels) on a separate small batch.
    with torch.inference_mode():
        model.encode(texts[: args.batch_size], batch_size=args.batch_size, is_query=False, show_progress_bar=False)
        t0 = time.perf_counter()
        docs = model.encode(texts, batch_size=args.batch_size, is_query=False, show_progress_bar=False)
        doc_s = time.perf_counter() - t0
    kept = [int(pc.as_float32_rows(d).shape[0]) for d in docs]
    dim = int(pc.as_float32_rows(docs[0]).shape[1])
    del docs
    rss_after_docs = pc.peak_rss_mb()
    documents = {
        "n_docs": len(texts), "kept_tokens": sum(kept), "mean_kept_per_doc": sum(kept) / len(kept),
        "max_kept_per_doc": max(kept), "dim": dim, "seconds": doc_s,
        "docs_per_s": len(texts) / doc_s, "kept_tokens_per_s": sum(kept) / doc_s,
        "batch_size": args.batch_size,
    }

    queries = None
    if args.queries:
        qtexts = list(pc.load_queries(args.queries).values())
        if not qtexts:
            print("error: no queries", file=sys.stderr)
            return 2
        n = min(args.n_queries, len(qtexts))
        lat = []
        with torch.inference_mode():
            for q in qtexts[: args.warmup]:
                model.encode([q], is_query=True, show_progress_bar=False)
            for q in qtexts[:n]:
                t0 = time.perf_counter()
                out = model.encode([q], is_query=True, show_progress_bar=False)
                lat.append((time.perf_counter() - t0) * 1000.0)
        qshape = list(pc.as_float32_rows(out[0]).shape)
        queries = {"warmup": args.warmup, "shape": qshape, **pc.percentiles(lat)}

    result = {
        "tool": "pylate_encode_bench", "model": os.path.abspath(args.model), "corpus": os.path.abspath(args.corpus),
        "threads": args.threads, "machine": machine, "loadavg_at_end": list(os.getloadavg()),
        "versions": pc.versions(), "model_load_s": load_s,
        "documents": documents, "query_latency": queries,
        "peak_rss_mb": pc.peak_rss_mb(), "rss_after_model_load_mb": rss_after_load,
        "peak_rss_after_docs_mb": rss_after_docs,
    }
    d = documents
    print(f"PyLate {result['versions'].get('pylate')} / torch {result['versions'].get('torch')}, "
          f"{args.threads} threads, {machine['cpu']}, load {machine['loadavg_1_5_15']}")
    print(f"documents: {d['n_docs']} docs, {d['kept_tokens']} kept tokens in {d['seconds']:.1f} s -> "
          f"{d['docs_per_s']:.1f} docs/s, {d['kept_tokens_per_s']:.0f} kept tokens/s")
    if queries:
        print(f"single-query encode ({queries['n']} queries): p50 {queries['p50_ms']:.2f} ms, "
              f"p95 {queries['p95_ms']:.2f} ms, p99 {queries['p99_ms']:.2f} ms")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB (after model load {rss_after_load:.0f} MB)")
    pc.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
