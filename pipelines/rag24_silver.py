#!/usr/bin/env python3
"""The RAG 2024 SILVER evaluation set from the pinned ir-axioms data (DATA.md).

- corpus:  the 6,011 unique MS MARCO v2.1 passages retrieved for the 301 TREC RAG 2024 queries
           (collection.tsv, `pid<TAB>text`, the MS MARCO layout);
- queries: the 301 queries (queries.tsv, `qid<TAB>text`);
- qrels:   SILVER labels (qrels.silver.txt, TREC `qid 0 pid rel`): for each query, every passage of its
           top-20 pool is judged; rel = the number of distinct written answers (responses.jsonl.gz) with
           a statement citing the passage, capped at 3; 0 = pooled but never cited.
These are citation counts from answers, not human relevance judgements: call them silver everywhere.
Idempotent (skips when the files exist) and atomic (temporary files, then renames).
"""
import ast
import gzip
import json
import os
import sys
from collections import defaultdict

root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
data = os.environ.get("CONDENSER_DATA", os.path.join(root, "data"))
src = os.path.join(data, "rag24")
out = os.path.join(data, "rag24-silver")
files = ["collection.tsv", "queries.tsv", "qrels.silver.txt"]
if all(os.path.exists(os.path.join(out, f)) for f in files):
    sys.exit(0)
os.makedirs(out, exist_ok=True)

queries, pools, passages = {}, defaultdict(list), {}
with gzip.open(os.path.join(src, "study1_retrieval.jsonl.gz"), "rt", encoding="utf-8") as f:
    for line in f:
        r = json.loads(line)
        queries[r["topic"]] = " ".join(r["query"].split())
        for pid, text in zip(r["references_ids"], r["references_texts"]):
            pools[r["topic"]].append(pid)
            passages.setdefault(pid, " ".join(text.split()))

cited = defaultdict(set)  # (topic, pid) -> responses citing it
with gzip.open(os.path.join(src, "responses.jsonl.gz"), "rt", encoding="utf-8") as f:
    for line in f:
        r = json.loads(line)
        statements = r["statements"]
        if isinstance(statements, str):
            statements = ast.literal_eval(statements)
        for s in statements:
            for pid in s.get("citations") or []:
                cited[(r["topic"], pid)].add(r["response"])


def write(name, lines):
    tmp = os.path.join(out, name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as w:
        w.writelines(lines)
    os.replace(tmp, os.path.join(out, name))


qrels = []
for topic in sorted(pools):
    for pid in dict.fromkeys(pools[topic]):
        qrels.append(f"{topic} 0 {pid} {min(3, len(cited[(topic, pid)]))}\n")
write("collection.tsv", (f"{pid}\t{text}\n" for pid, text in passages.items()))
write("queries.tsv", (f"{t}\t{q}\n" for t, q in sorted(queries.items())))
write("qrels.silver.txt", qrels)
relevant = sum(1 for l in qrels if not l.endswith(" 0\n"))
print(f"rag24_silver: {len(queries)} queries, {len(passages)} passages, {len(qrels)} judged pairs, "
      f"{relevant} cited (silver relevant, {relevant / len(queries):.1f} per query) -> {out}", file=sys.stderr)
