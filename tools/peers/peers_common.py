"""Shared helpers for the peer benchmarks: BEIR loading, timing statistics, RSS, and IR metrics.

The IR metrics follow trec_eval (what BEIR and pytrec_eval report): ranking by score descending with
ties broken by document id descending, nDCG with linear gains (the qrel grade) and log2(rank + 1)
discounts over the ideal ordering of all judged-relevant documents, recall as the share of
relevant documents (grade > 0) retrieved within the cut-off, and MRR@10 as BEIR computes it
(reciprocal rank of the first relevant document within the top 10, 0 if none).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = TOOLS_DIR / ".cache" / "peers"


def load_corpus(path: str | os.PathLike, limit: int | None = None) -> tuple[list[str], list[str]]:
    """BEIR corpus.jsonl -> (ids, texts) with text = (title + " " + text).strip(), file order."""
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append((str(row.get("title") or "") + " " + str(row.get("text") or "")).strip())
            if limit is not None and len(ids) >= limit:
                break
    return ids, texts


def load_queries(path: str | os.PathLike) -> dict[str, str]:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[str(row["_id"])] = str(row["text"])
    return out


def load_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (query-id, corpus-id, score) with a header line."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            if i == 0 and not parts[2].lstrip("-").isdigit():
                continue  # header
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def file_sha256(path: str | os.PathLike, h=None) -> str:
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_key(model_dir: str | os.PathLike) -> str:
    """Hash of the files that decide the embeddings (weights, head, tokenizer, PyLate settings)."""
    h = hashlib.sha256()
    root = Path(model_dir)
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()):
        if rel.startswith("outputs/") or rel.endswith(".md"):
            continue
        h.update(rel.encode())
        file_sha256(root / rel, h)
    return h.hexdigest()[:16]


def percentiles(values_ms: list[float]) -> dict[str, float]:
    """Nearest-rank p50/p95/p99 plus mean, in milliseconds."""
    s = sorted(values_ms)
    if not s:
        return {}

    def rank(p: float) -> float:
        return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]

    return {"n": len(s), "p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99),
            "mean_ms": sum(s) / len(s), "min_ms": s[0], "max_ms": s[-1]}


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu,
            "cores": os.cpu_count(), "loadavg_1_5_15": load, "python": platform.python_version(),
            "host_uptime": _run(["uptime"])}


def versions() -> dict:
    import importlib.metadata as md
    out = {}
    for name in ("torch", "pylate", "sentence-transformers", "transformers", "tokenizers",
                 "fast-plaid", "numpy", "pytrec-eval-terrier"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        return ""


def as_float32_rows(x):
    """A PyLate output (torch tensor or numpy array) as a C-contiguous float32 numpy array."""
    import numpy as np
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


# ---------------------------------------------------------------- IR metrics (trec_eval semantics)

def _trec_order(run: dict[str, float]) -> list[str]:
    # trec_eval sorts by score descending, then by docno descending.
    return [d for d, _ in sorted(run.items(), key=lambda kv: (-kv[1], _neg_key(kv[0])))]


def _neg_key(doc_id: str):
    # Descending string order as a sort key usable in an ascending sort.
    return tuple(-ord(c) for c in doc_id) + (1,)


def own_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    per_query = {}
    for qid, rels in qrels.items():
        ranked = _trec_order(run.get(qid, {}))
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if rels.get(d, 0) > 0)
        ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        n_rel = sum(1 for g in rels.values() if g > 0)
        rec100 = sum(1 for d in ranked[:100] if rels.get(d, 0) > 0) / n_rel if n_rel else 0.0
        mrr = 0.0
        for i, d in enumerate(ranked[:10]):
            if rels.get(d, 0) > 0:
                mrr = 1.0 / (i + 1)
                break
        per_query[qid] = {"ndcg_cut_10": dcg / idcg if idcg > 0 else 0.0, "recall_100": rec100, "mrr_10": mrr}
    return per_query


def ir_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict:
    """Mean nDCG@10, Recall@100, MRR@10 over the queries in qrels (pytrec_eval when installed)."""
    own = own_metrics(qrels, run)
    result = {"n_queries": len(own), "backend": "own (trec_eval semantics)"}
    for m in ("ndcg_cut_10", "recall_100", "mrr_10"):
        result[m] = sum(v[m] for v in own.values()) / max(1, len(own))
    try:
        import pytrec_eval  # type: ignore
    except ImportError:
        return result
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    # pytrec_eval only scores queries that are in the run; give empty runs a dummy miss so the mean
    # is over all qrels queries, as trec_eval -c would.
    full_run = {q: (run.get(q) or {"__none__": 0.0}) for q in qrels}
    scored = ev.evaluate(full_run)
    result["backend"] = "pytrec_eval (nDCG@10, Recall@100) + own MRR@10"
    result["own_ndcg_cut_10"] = result["ndcg_cut_10"]
    result["own_recall_100"] = result["recall_100"]
    result["ndcg_cut_10"] = sum(v["ndcg_cut_10"] for v in scored.values()) / max(1, len(scored))
    result["recall_100"] = sum(v["recall_100"] for v in scored.values()) / max(1, len(scored))
    return result


def write_json(path: str | os.PathLike | None, obj) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
