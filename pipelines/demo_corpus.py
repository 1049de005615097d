#!/usr/bin/env python3
"""Derive the demo's MS MARCO passage file from the pinned ir-axioms data (DATA.md).

data/rag24/study1_retrieval.jsonl.gz holds 301 TREC RAG 2024 queries, each with the track's top-20
MS MARCO v2.1 passages (ids and texts). This writes the 6,011 unique passages, in first-seen order, as
data/demo/msmarco-passages.tsv (`pid<TAB>text`, the MS MARCO collection.tsv layout). Tabs and newlines
inside a text become spaces. Idempotent and atomic (temporary file, then rename).
"""
import gzip
import json
import os
import sys

root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
data = os.environ.get("CONDENSER_DATA", os.path.join(root, "data"))
src = os.path.join(data, "rag24", "study1_retrieval.jsonl.gz")
out_dir = os.path.join(data, "demo")
out = os.path.join(out_dir, "msmarco-passages.tsv")

if os.path.exists(out):
    sys.exit(0)
if not os.path.exists(src):
    sys.exit(f"demo_corpus: error: {src} is missing; run pipelines/fetch_data.py first")
os.makedirs(out_dir, exist_ok=True)
seen = set()
tmp = out + ".tmp"
with gzip.open(src, "rt", encoding="utf-8") as f, open(tmp, "w", encoding="utf-8") as w:
    for line_no, line in enumerate(f, 1):
        rec = json.loads(line)
        ids, texts = rec["references_ids"], rec["references_texts"]
        if len(ids) != len(texts):
            sys.exit(f"demo_corpus: error: {src}:{line_no}: {len(ids)} ids but {len(texts)} texts")
        for pid, text in zip(ids, texts):
            if pid in seen:
                continue
            seen.add(pid)
            w.write(pid + "\t" + " ".join(text.split()) + "\n")
os.replace(tmp, out)
print(f"demo_corpus: {len(seen)} passages -> {out}", file=sys.stderr)
