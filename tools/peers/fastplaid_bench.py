#!/usr/bin/env python3
"""fast-plaid (PLAID on CPU) measured on PyLate embeddings, with exhaustive MaxSim as ground truth.

Steps:
 1. Encode the corpus (documents) and the test queries (those in the qrels) with PyLate, batch 32.
    Cached as .npy under tools/.cache/peers/<corpus>-<model hash>-<corpus hash>/, so reruns skip it;
    a fresh encode also reports PyLate's full-corpus throughput.
 2. Build a fast-plaid index in a subprocess (so its peak RSS is its own): build seconds, peak RSS,
    on-disk bytes per token.
 3. Search the pre-encoded queries: one at a time with torch.set_num_threads(1) (p50/p95/p99), then
    all at once with all threads (QPS), then top-100 for the metrics.
 4. Exhaustive MaxSim in numpy (float32; per document: sum over ALL query rows of the max over the
    document's rows) over every document. Writes its top-100 as JSON {query_id: [[doc_id, score], ...]}
    for cross-checking our engine (see compare_scores.py).
 5. recall@k of fast-plaid's top-k against exhaustive top-k; nDCG@10, Recall@100, MRR@10 for both.

Run with the peers venv:  tools/.venv-peers/bin/python tools/peers/fastplaid_bench.py --help
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers_common as pc  # noqa: E402

RESULT_MARK = "@@FASTPLAID_BUILD_RESULT@@ "


def vm_status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# ----------------------------------------------------------------------------- build worker

def build_worker(args) -> int:
    """Runs in its own process: load the cached embeddings, build the index, report time and RSS."""
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    from fast_plaid import search as fps

    cache = Path(args.cache_dir)
    emb = np.load(cache / "doc_emb.npy")
    offsets = np.load(cache / "doc_offsets.npy")
    docs = [torch.from_numpy(emb[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]
    rss_loaded = vm_status_mb("VmRSS")
    if os.path.exists(args.index):
        shutil.rmtree(args.index)
    t0 = time.perf_counter()
    index = fps.FastPlaid(index=args.index, device="cpu")
    index.create(documents_embeddings=docs, nbits=args.nbits)
    build_s = time.perf_counter() - t0
    print(RESULT_MARK + json.dumps({
        "build_s": build_s, "peak_rss_mb": pc.peak_rss_mb(), "rss_before_create_mb": rss_loaded,
        "n_docs": len(docs), "n_tokens": int(offsets[-1]),
    }), flush=True)
    return 0


# ----------------------------------------------------------------------------- encoding + cache

def encode_all(args, cache: Path, qcache_prefix: Path, doc_ids, doc_texts, q_ids, q_texts, info: dict):
    import numpy as np
    doc_ready = all((cache / n).exists() for n in ("doc_emb.npy", "doc_offsets.npy", "doc_ids.json"))
    q_ready = Path(str(qcache_prefix) + "_emb.npy").exists() and Path(str(qcache_prefix) + "_ids.json").exists()
    if doc_ready and q_ready:
        info["encoding"] = json.loads((cache / "encode_meta.json").read_text()) if (cache / "encode_meta.json").exists() else {}
        info["encoding"]["cached"] = True
        return
    import torch
    from pylate import models
    torch.set_num_threads(args.threads)
    model = models.ColBERT(args.model, device="cpu")
    model.eval()
    cache.mkdir(parents=True, exist_ok=True)
    meta = json.loads((cache / "encode_meta.json").read_text()) if (cache / "encode_meta.json").exists() else {}
    with torch.inference_mode():
        if not doc_ready:
            print(f"encoding {len(doc_texts)} documents with PyLate ({args.threads} threads) ...", flush=True)
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            out = model.encode(doc_texts, batch_size=32, is_query=False, show_progress_bar=False)
            secs = time.perf_counter() - t0
            rows = [pc.as_float32_rows(d) for d in out]
            del out
            offsets = np.zeros(len(rows) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([r.shape[0] for r in rows])
            emb = np.concatenate(rows, axis=0)
            del rows
            np.save(cache / "doc_emb.npy", emb)
            np.save(cache / "doc_offsets.npy", offsets)
            (cache / "doc_ids.json").write_text(json.dumps(doc_ids))
            meta.update({"docs_seconds": secs, "n_docs": len(doc_texts), "kept_tokens": int(offsets[-1]),
                         "docs_per_s": len(doc_texts) / secs, "kept_tokens_per_s": int(offsets[-1]) / secs,
                         "threads": args.threads, "batch_size": 32, "loadavg_at_start": list(load0),
                         "loadavg_at_end": list(os.getloadavg()), "encoder_peak_rss_mb": pc.peak_rss_mb(),
                         "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            print(f"  {secs:.1f} s: {meta['docs_per_s']:.1f} docs/s, {meta['kept_tokens_per_s']:.0f} kept tokens/s", flush=True)
        if not q_ready:
            t0 = time.perf_counter()
            out = model.encode(q_texts, batch_size=32, is_query=True, show_progress_bar=False)
            qs = np.stack([pc.as_float32_rows(q) for q in out])
            meta["queries_seconds_batched"] = time.perf_counter() - t0
            np.save(str(qcache_prefix) + "_emb.npy", qs)
            Path(str(qcache_prefix) + "_ids.json").write_text(json.dumps(q_ids))
    (cache / "encode_meta.json").write_text(json.dumps(meta, indent=2))
    info["encoding"] = dict(meta, cached=False)
    del model


# ----------------------------------------------------------------------------- exhaustive MaxSim

def exhaustive(emb, offsets, qs, top: int):
    """Per query: scores of every document (sum over query rows of max over doc rows), float32."""
    import numpy as np
    n_docs = len(offsets) - 1
    lengths = np.diff(offsets)
    nonempty = np.nonzero(lengths > 0)[0]
    starts = offsets[:-1][nonempty]
    tops, times = [], []
    for q in qs:
        t0 = time.perf_counter()
        sim = emb @ q.T                                   # [tokens, query rows]
        per_doc = np.maximum.reduceat(sim, starts, axis=0)  # [non-empty docs, query rows]
        scores = np.zeros(n_docs, dtype=np.float32)       # a document with no rows scores 0
        scores[nonempty] = per_doc.sum(axis=1, dtype=np.float32)
        k = min(top, n_docs)
        part = np.argpartition(-scores, k - 1)[:k]
        order = part[np.lexsort((part, -scores[part]))]
        times.append((time.perf_counter() - t0) * 1000.0)
        tops.append([(int(i), float(scores[i])) for i in order])
    return tops, times


# ----------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="PyLate checkpoint folder (e.g. models/minilm-colbert)")
    ap.add_argument("--corpus", help="BEIR corpus.jsonl")
    ap.add_argument("--queries", help="BEIR queries.jsonl")
    ap.add_argument("--qrels", help="BEIR qrels TSV (test split); only these queries are searched")
    ap.add_argument("--nbits", type=int, default=2, help="fast-plaid residual bits (default 2)")
    ap.add_argument("--k", type=int, default=10, help="top-k for latency and recall vs exhaustive (default 10)")
    ap.add_argument("--threads", type=int, default=2, help="threads for encoding, build and batched search")
    ap.add_argument("--n-ivf-probe", type=int, default=8, help="fast-plaid default 8")
    ap.add_argument("--n-full-scores", type=int, default=4096, help="fast-plaid default 4096")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--cache", default=None, help=f"cache root (default {pc.DEFAULT_CACHE})")
    ap.add_argument("--exhaustive-out", default=None,
                    help="exhaustive top-100 JSON (default <cache dir>/exhaustive_top100.json)")
    ap.add_argument("--skip-build", action="store_true", help="reuse the index already in the cache dir")
    ap.add_argument("--_build-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    # The model is a local folder: keep huggingface_hub from probing the network (and retrying) for it.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args._build_worker:
        return build_worker(args)

    for name in ("model", "corpus", "queries", "qrels"):
        if not getattr(args, name):
            ap.error(f"--{name} is required")
    if not os.path.isdir(args.model):
        print(f"error: model folder {args.model} not found (run tools/fetch-default-model)", file=sys.stderr)
        return 2
    for p in (args.corpus, args.queries, args.qrels):
        if not os.path.isfile(p):
            print(f"error: {p} not found", file=sys.stderr)
            return 2

    info: dict = {"tool": "fastplaid_bench", "machine": pc.machine_info(), "versions": pc.versions(),
                  "threads": args.threads, "nbits": args.nbits, "k": args.k,
                  "n_ivf_probe": args.n_ivf_probe, "n_full_scores": args.n_full_scores,
                  "model": os.path.abspath(args.model), "corpus": os.path.abspath(args.corpus)}
    print(f"{info['machine']['cpu']}, {info['machine']['cores']} cores, load {info['machine']['loadavg_1_5_15']}", flush=True)

    doc_ids, doc_texts = pc.load_corpus(args.corpus)
    queries = pc.load_queries(args.queries)
    qrels = pc.load_qrels(args.qrels)
    missing = [q for q in qrels if q not in queries]
    if missing:
        print(f"warning: {len(missing)} qrels queries have no text and are skipped", file=sys.stderr)
    q_ids = [q for q in qrels if q in queries]
    q_texts = [queries[q] for q in q_ids]
    qrels = {q: qrels[q] for q in q_ids}
    if not doc_ids or not q_ids:
        print("error: empty corpus or no query of the qrels in the queries file", file=sys.stderr)
        return 2

    corpus_name = Path(args.corpus).resolve().parent.name
    key = f"{corpus_name}-{pc.model_key(args.model)}-{pc.file_sha256(args.corpus)[:16]}"
    cache = Path(args.cache or pc.DEFAULT_CACHE) / key
    qh = hashlib.sha256((pc.file_sha256(args.queries) + pc.file_sha256(args.qrels)).encode()).hexdigest()[:16]
    qprefix = cache / f"queries_{qh}"
    info["cache_dir"] = str(cache)
    encode_all(args, cache, qprefix, doc_ids, doc_texts, q_ids, q_texts, info)

    import numpy as np
    cached_ids = json.loads((cache / "doc_ids.json").read_text())
    if cached_ids != doc_ids:
        print(f"error: cache {cache} holds other document ids; delete it", file=sys.stderr)
        return 2
    qs = np.load(str(qprefix) + "_emb.npy")
    if json.loads(Path(str(qprefix) + "_ids.json").read_text()) != q_ids:
        print(f"error: cache {qprefix}_ids.json holds other query ids; delete it", file=sys.stderr)
        return 2
    offsets = np.load(cache / "doc_offsets.npy")
    n_tokens = int(offsets[-1])
    info["corpus_stats"] = {"n_docs": len(doc_ids), "kept_tokens": n_tokens, "n_queries": len(q_ids),
                            "query_shape": list(qs.shape[1:])}

    # --- build (subprocess)
    index_dir = cache / f"fastplaid-nbits{args.nbits}"
    if not (args.skip_build and index_dir.exists()):
        print(f"building fast-plaid index (nbits={args.nbits}, {args.threads} threads) in a subprocess ...", flush=True)
        load0 = os.getloadavg()
        cmd = [sys.executable, os.path.abspath(__file__), "--_build-worker", "--index", str(index_dir),
               "--cache-dir", str(cache), "--nbits", str(args.nbits), "--threads", str(args.threads)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARK)]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            print("error: the fast-plaid build failed", file=sys.stderr)
            return 1
        build = json.loads(lines[-1][len(RESULT_MARK):])
        build["process_wall_s"] = wall
        build["children_maxrss_mb"] = pc.peak_rss_mb(__import__("resource").RUSAGE_CHILDREN)
        build["loadavg_at_start"] = list(load0)
        build["loadavg_at_end"] = list(os.getloadavg())
    else:
        build = {"reused": True}
    disk = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
    build.update({"index_bytes": disk, "bytes_per_token": disk / n_tokens, "index_dir": str(index_dir)})
    info["build"] = build
    if "build_s" in build:
        print(f"  build {build['build_s']:.1f} s, peak RSS {build['peak_rss_mb']:.0f} MB "
              f"(embeddings loaded: {build['rss_before_create_mb']:.0f} MB), "
              f"{disk / 1e6:.1f} MB on disk = {build['bytes_per_token']:.1f} B/token", flush=True)

    # --- search
    import torch
    from fast_plaid import search as fps
    torch.set_num_threads(1)
    rss0 = vm_status_mb("VmRSS")
    t0 = time.perf_counter()
    fp = fps.FastPlaid(index=str(index_dir), device="cpu")
    load_s = time.perf_counter() - t0
    rss_loaded = vm_status_mb("VmRSS")
    qt = torch.from_numpy(qs)
    sp = dict(top_k=args.k, n_ivf_probe=args.n_ivf_probe, n_full_scores=args.n_full_scores, show_progress=False)
    for i in range(min(args.warmup, len(q_ids))):
        fp.search(qt[i:i + 1], n_processes=1, **sp)
    lat, fp_topk = [], []
    load0 = os.getloadavg()
    for i in range(len(q_ids)):
        t0 = time.perf_counter()
        res = fp.search(qt[i:i + 1], n_processes=1, **sp)
        lat.append((time.perf_counter() - t0) * 1000.0)
        fp_topk.append(res[0])
    single = {"threads": 1, **pc.percentiles(lat), "loadavg_at_start": list(load0), "loadavg_at_end": list(os.getloadavg())}
    print(f"  search 1 thread ({len(lat)} queries, k={args.k}): p50 {single['p50_ms']:.1f} ms, "
          f"p95 {single['p95_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms", flush=True)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    fp.search(qt, **sp)
    batched_s = time.perf_counter() - t0
    batched = {"threads": args.threads, "seconds": batched_s, "qps": len(q_ids) / batched_s,
               "note": "one search() call with all queries; fast-plaid splits them over joblib threads"}
    print(f"  batched, {args.threads} threads: {batched['qps']:.2f} QPS", flush=True)
    fp100 = fp.search(qt, **dict(sp, top_k=100))
    search_rss = {"rss_before_index_load_mb": rss0, "rss_after_index_load_mb": rss_loaded,
                  "rss_after_search_mb": vm_status_mb("VmRSS"), "index_load_s": load_s}
    info["search"] = {"single_query": single, "batched": batched, **search_rss}
    del fp

    # --- exhaustive ground truth
    emb = np.load(cache / "doc_emb.npy")
    print(f"exhaustive MaxSim over {len(doc_ids)} docs / {n_tokens} tokens ...", flush=True)
    ex_tops, ex_ms = exhaustive(emb, offsets, qs, 100)
    del emb
    info["exhaustive"] = {"ms_per_query": pc.percentiles(ex_ms), "threads": "numpy/BLAS default",
                          "note": "float32 numpy; includes the full score vector and top-100 selection"}
    ex_json = {q_ids[i]: [[doc_ids[d], s] for d, s in ex_tops[i]] for i in range(len(q_ids))}
    ex_path = Path(args.exhaustive_out or cache / "exhaustive_top100.json")
    pc.write_json(ex_path, ex_json)
    info["exhaustive"]["top100_json"] = str(ex_path)

    # --- quality
    k = args.k
    overlaps = []
    for i in range(len(q_ids)):
        got = {pid for pid, _ in fp_topk[i][:k]}
        want = {d for d, _ in ex_tops[i][:k]}
        overlaps.append(len(got & want) / max(1, len(want)))
    fp_run = {q_ids[i]: {doc_ids[pid]: float(s) for pid, s in fp100[i]} for i in range(len(q_ids))}
    ex_run = {q_ids[i]: {doc_ids[d]: s for d, s in ex_tops[i]} for i in range(len(q_ids))}
    info["quality"] = {
        f"recall_at_{k}_vs_exhaustive": sum(overlaps) / len(overlaps),
        "fastplaid": pc.ir_metrics(qrels, fp_run),
        "exhaustive": pc.ir_metrics(qrels, ex_run),
    }
    qf, qe = info["quality"]["fastplaid"], info["quality"]["exhaustive"]
    print(f"  fast-plaid top-{k} holds {info['quality'][f'recall_at_{k}_vs_exhaustive']:.3f} of exhaustive top-{k}")
    print(f"  nDCG@10 fast-plaid {qf['ndcg_cut_10']:.4f} / exhaustive {qe['ndcg_cut_10']:.4f}; "
          f"Recall@100 {qf['recall_100']:.4f} / {qe['recall_100']:.4f}; MRR@10 {qf['mrr_10']:.4f} / {qe['mrr_10']:.4f} "
          f"[{qe['backend']}]")
    info["loadavg_at_end"] = list(os.getloadavg())
    pc.write_json(args.json, info)
    print(f"exhaustive top-100: {ex_path}" + (f"; figures: {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
