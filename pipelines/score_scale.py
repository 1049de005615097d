#!/usr/bin/env python3
"""[CLS] norms and query-passage score scales of encoders before fine-tuning (issue 26 item 14).

  score_scale.py BIN TRAIN.jsonl OUTDIR NAME=MODEL_DIR [NAME=MODEL_DIR ...]

From Tevatron lines (TRAIN.jsonl, as fine-tuning reads them) takes every query and its first K
positives and first K negatives (K = 3, env SCALE_K), encodes them with each model through
`BIN encode` (queries at 32 tokens, passages at 128, as configs/demo-finetune.toml), and prints per
model: mean [CLS] norm of queries and passages, mean dot product of query-positive and
query-negative pairs and their gap, the mean cosines, the share of queries whose first positive
outscores all K negatives, and the expected first fine-tuning loss (cross-entropy at temperature 1
over batches of 8 queries x (1 positive + min(K, 3) negatives), every other query's passages as negatives,
200 random batches). Embeddings are cached as OUTDIR/NAME.{q,p}.parquet. Writes OUTDIR/scale.json.
Needs numpy and pyarrow (the repository's .venv).
"""
import json, os, subprocess, sys
import numpy as np
import pyarrow.parquet as pq


def clean(t):
    return " ".join(t.split())


def main():
    bin_, train, outdir = sys.argv[1:4]
    models = [a.split("=", 1) for a in sys.argv[4:]]
    k = int(os.environ.get("SCALE_K", "3"))
    os.makedirs(outdir, exist_ok=True)
    qs, pos, neg, texts = [], [], [], {}
    for line in open(train):
        d = json.loads(line)
        qs.append((d["query_id"], clean(d["query"])))
        ps = d["positive_passages"][:k]; ns = d["negative_passages"][:k]
        for p in ps + ns:
            texts[p["docid"]] = clean((p.get("title", "") + " " + p["text"]).strip())
        pos.append([p["docid"] for p in ps]); neg.append([p["docid"] for p in ns])
    qtsv, ptsv = f"{outdir}/queries.tsv", f"{outdir}/passages.tsv"
    with open(qtsv, "w") as f:
        f.writelines(f"{i}\t{t}\n" for i, t in qs)
    with open(ptsv, "w") as f:
        f.writelines(f"{i}\t{t}\n" for i, t in texts.items())
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(qs), 8, replace=False) for _ in range(200)]
    results = {}
    for name, model in models:
        emb = {}
        for kind, tsv, ml in (("q", qtsv, 32), ("p", ptsv, 128)):
            path = f"{outdir}/{name}.{kind}.parquet"
            if not os.path.exists(path):
                subprocess.run([bin_, "-q", "encode", tsv, "--model", model, "--out", path, "--max-len", str(ml),
                                "--format", "tsv", "--device", os.environ.get("DEVICE", "cpu")], check=True)
            t = pq.read_table(path)
            emb[kind] = {i: np.asarray(e, dtype=np.float32) for i, e in zip(t["id"].to_pylist(), t["embedding"].to_pylist())}
        Q = np.stack([emb["q"][i] for i, _ in qs])
        P = emb["p"]
        dp = [float(Q[j] @ P[d]) for j, ds in enumerate(pos) for d in ds]
        dn = [float(Q[j] @ P[d]) for j, ds in enumerate(neg) for d in ds]
        cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        cp = [cos(Q[j], P[d]) for j, ds in enumerate(pos) for d in ds]
        cn = [cos(Q[j], P[d]) for j, ds in enumerate(neg) for d in ds]
        win = np.mean([Q[j] @ P[pos[j][0]] > max(Q[j] @ P[d] for d in neg[j]) for j in range(len(qs)) if neg[j]])
        losses = []
        for b in batches:
            n = 1 + min(3, k)
            ps = [[pos[j][0]] + neg[j][:3] for j in b]
            if any(len(x) < n for x in ps):
                continue
            M = np.stack([P[d] for x in ps for d in x])  # 8n x H
            S = Q[b] @ M.T  # 8 x 8n
            tgt = np.arange(8) * n
            m = S.max(1, keepdims=True)
            lse = np.log(np.exp(S - m).sum(1)) + m[:, 0]
            losses.append(float(np.mean(lse - S[np.arange(8), tgt])))
        r = {"q_norm": float(np.linalg.norm(Q, axis=1).mean()),
             "p_norm": float(np.mean([np.linalg.norm(v) for v in P.values()])),
             "dot_pos": float(np.mean(dp)), "dot_neg": float(np.mean(dn)), "gap": float(np.mean(dp) - np.mean(dn)),
             "cos_pos": float(np.mean(cp)), "cos_neg": float(np.mean(cn)),
             "pos_beats_negs": float(win), "expected_first_loss": float(np.mean(losses))}
        results[name] = r
        print(name, " ".join(f"{a}={b:.3f}" for a, b in r.items()), flush=True)
    json.dump(results, open(f"{outdir}/scale.json", "w"), indent=1)


if __name__ == "__main__":
    main()
