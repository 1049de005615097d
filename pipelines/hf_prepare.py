#!/usr/bin/env python3
"""What a Python user runs instead of `condenser prepare` (issue 25's comparison row).

Hugging Face `datasets` reads a JSON Lines file, `map` (num_proc processes, batched) splits each
document into sentences with a regex and tokenizes them with `tokenizers` (1.0.0rc3 in
pipelines/bench-prepare.sh: one `encode_batch` per document, no special tokens, no padding, no
truncation), and the result (each document's sentence ids) is written as Parquet. No span packing:
the row is cheaper than what prepare does. Every run uses a fresh datasets cache, so reading JSON
and the map are both paid.

    python pipelines/hf_prepare.py INPUT.jsonl TOKENIZER.json OUT_DIR [--num-proc 2]
    python pipelines/hf_prepare.py INPUT.jsonl TOKENIZER.json --bare [--repeat 3]

Prints one line: documents, tokens, seconds inside the script (the whole command is what
bench-prepare.sh times). `--bare` is the floor instead: the documents' texts through one
`encode_batch` (tokenizers' own threads: every core), best of --repeat, timed in the script around
the call alone.
"""
import argparse
import os
import re
import shutil
import tempfile
import time

t0 = time.perf_counter()
import datasets  # noqa: E402
import tokenizers  # noqa: E402

# A sentence ends at . ! ? followed by whitespace and a capital, digit, quote or bracket; a newline
# always ends one (close to condenser's rules, without the abbreviation list).
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n")

# Loaded in each worker process on first use: `map` hashes (pickles) the function it is given, and a
# closure holding a tokenizers 1.0.0rc3 Tokenizer never came back from that here (the run hung).
_TOKENIZER = {}


def tokenizer(path):
    if path not in _TOKENIZER:
        _TOKENIZER[path] = tokenizers.Tokenizer.from_file(path)
    return _TOKENIZER[path]


def tokenize(batch, field, path):
    tok = tokenizer(path)
    out, ntok = [], []
    for text in batch[field]:
        sents = [s for s in SENTENCE_END.split(text) if s.strip()]
        encs = tok.encode_batch(sents, add_special_tokens=False, padding=None, truncation=None)
        ids = [e.ids for e in encs]
        out.append(ids)
        ntok.append(sum(len(i) for i in ids))
    return {"sentences": out, "num_tokens": ntok}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("tokenizer")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--bare", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--text-field", default="text")
    args = ap.parse_args()
    if args.bare:
        return bare(args)
    if not args.out:
        ap.error("OUT_DIR is needed (or --bare)")
    datasets.disable_progress_bars()
    cache = tempfile.mkdtemp(prefix="hf-prepare-cache-")
    try:
        ds = datasets.load_dataset("json", data_files=args.input, split="train", cache_dir=cache)
        ds = ds.map(
            tokenize,
            batched=True,
            num_proc=args.num_proc,
            remove_columns=ds.column_names,
            fn_kwargs={"field": args.text_field, "path": args.tokenizer},
        )
        os.makedirs(args.out, exist_ok=True)
        ds.to_parquet(os.path.join(args.out, "data.parquet"))
        tokens = sum(ds["num_tokens"])
        print(f"{len(ds)} documents, {tokens} tokens, {time.perf_counter() - t0:.2f} s")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def bare(args):
    import json

    with open(args.input, encoding="utf-8") as f:
        texts = [json.loads(line)[args.text_field] for line in f if line.strip()]
    tok = tokenizers.Tokenizer.from_file(args.tokenizer)
    best, tokens = float("inf"), 0
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        encs = tok.encode_batch(texts, add_special_tokens=False, padding=None, truncation=None)
        best = min(best, time.perf_counter() - t)
        tokens = sum(len(e.ids) for e in encs)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"bare tokenizers {tokenizers.__version__} encode_batch: {len(texts)} documents, {mb:.1f} MB, {tokens} tokens, {best:.3f} s (best of {args.repeat})")


if __name__ == "__main__":
    main()
