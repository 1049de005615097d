#!/usr/bin/env python3
"""Builds a multi-stream bzip2 MediaWiki dump the way Wikipedia builds `pages-articles-multistream`:
the header (<mediawiki> and <siteinfo>) is its own bzip2 stream, then the pages in groups of 100, each
group one stream, then the footer (</mediawiki>) as the last stream; beside it the
`-index.txt.bz2` whose lines are `offset:page_id:title` (offset: the byte where the page's stream
starts in the .bz2 file).

The pages come from a (single-stream) dump, repeated COPIES times to reach benchmark size; each copy's
page ids are shifted by 100,000,000 x copy so that ids stay unique.

    python3 pipelines/make_multistream.py SRC.xml.bz2 OUT.xml.bz2 [--copies 8] [--pages-per-stream 100]
"""
import argparse
import bz2
import re
import sys

PAGE_ID = re.compile(rb"(<page>.*?<id>)(\d+)(</id>)", re.S)
TITLE = re.compile(rb"<title>(.*?)</title>", re.S)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--pages-per-stream", type=int, default=100)
    args = ap.parse_args()

    xml = bz2.open(args.src).read()
    first = xml.find(b"<page>")
    last = xml.rfind(b"</page>") + len(b"</page>")
    if first < 0 or last < first:
        sys.exit(f"{args.src}: no <page> elements")
    header, body, footer = xml[:first], xml[first:last], xml[last:]
    pages = []
    at = 0
    while True:
        s = body.find(b"<page>", at)
        if s < 0:
            break
        e = body.find(b"</page>", s) + len(b"</page>")
        pages.append(body[s:e])
        at = e

    index = []
    written = 0
    with open(args.out, "wb") as out:
        def stream(data):
            nonlocal written
            z = bz2.compress(data, 9)
            out.write(z)
            written += len(z)

        # Wikipedia's header stream ends with the whitespace before the first <page>.
        stream(header)
        group = []
        for copy in range(args.copies):
            for page in pages:
                shifted = PAGE_ID.sub(lambda m: m.group(1) + str(int(m.group(2)) + 100_000_000 * copy).encode() + m.group(3),
                                      page, count=1)
                group.append(shifted)
                if len(group) == args.pages_per_stream:
                    flush(group, stream, index, lambda: written)
                    group = []
        if group:
            flush(group, stream, index, lambda: written)
        stream(footer)
    with bz2.open(args.out.removesuffix(".xml.bz2") + "-index.txt.bz2", "wb") as f:
        f.write(b"".join(b"%d:%s:%s\n" % entry for entry in index))
    print(f"{args.out}: {len(pages) * args.copies} pages, {len(index)} index lines, {written} bytes", file=sys.stderr)


def flush(group, stream, index, offset):
    start = offset()
    for page in group:
        m = PAGE_ID.search(page)
        t = TITLE.search(page)
        index.append((start, m.group(2) if m else b"0", t.group(1) if t else b""))
    stream(b"    " + b"\n    ".join(group) + b"\n")


if __name__ == "__main__":
    main()
