#!/usr/bin/env python3
"""Splits the RAG 2024 SILVER set (pipelines/rag24_silver.py) by query into training and test parts for
the fine-tuning experiment: a query is a test query when a seeded hash of its id falls in the last third
(about a third of the 301 queries). Writes queries.{train,test}.tsv and qrels.{train,test}.txt.
    python3 pipelines/silver_split.py data/rag24-silver OUTDIR [SEED]
"""
import hashlib
import os
import sys

src, out = sys.argv[1], sys.argv[2]
seed = sys.argv[3] if len(sys.argv) > 3 else "42"
os.makedirs(out, exist_ok=True)


def part(qid):
    h = int.from_bytes(hashlib.sha256(f"{seed}/{qid}".encode()).digest()[:8], "little")
    return "test" if h % 3 == 2 else "train"


with open(os.path.join(src, "queries.tsv"), encoding="utf-8") as f:
    queries = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
with open(os.path.join(src, "qrels.silver.txt"), encoding="utf-8") as f:
    qrels = [line.split() for line in f if line.strip()]
counts = {}
for name in ("train", "test"):
    with open(os.path.join(out, f"queries.{name}.tsv"), "w", encoding="utf-8") as f:
        for qid, text in queries:
            if part(qid) == name:
                f.write(f"{qid}\t{text}\n")
                counts[name] = counts.get(name, 0) + 1
    with open(os.path.join(out, f"qrels.{name}.txt"), "w", encoding="utf-8") as f:
        for qid, it, pid, rel in qrels:
            if part(qid) == name:
                f.write(f"{qid} {it} {pid} {rel}\n")
print(f"{counts.get('train', 0)} training and {counts.get('test', 0)} test queries", file=sys.stderr)
