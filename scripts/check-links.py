#!/usr/bin/env python3
"""Checks the documentation's links; run from anywhere:

    scripts/check-links.py [FILE.md ...]

Default files: README.md, docs/*.md and bench/README.md. For each relative
link (inline `[text](target)`, images, reference definitions `[ref]: target`)
it checks that the target file or folder exists and, for a `#anchor` into a
Markdown file (or into the same file), that the anchor is one of its
headings, by GitHub's rules: lowercase, formatting and punctuation dropped,
spaces turned into '-', a repeated heading suffixed -1, -2, …; explicit
`<a id="…">` / `<a name="…">` anchors count too. Links inside code blocks and
code spans are not links. Absolute URLs (http:, https:, mailto:) are not
fetched.

It also checks that docs/architecture.md links every source file under src/,
so its layout table stays the tree's.

Exits 1 and lists every broken link (file:line: target: why), 0 otherwise.
Standard library only.
"""
import os
import re
import sys
import unicodedata

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target may be wrapped in <…> and
# followed by a "title".
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def default_files():
    files = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "bench", "README.md")]
    docs = os.path.join(ROOT, "docs")
    if os.path.isdir(docs):
        files += sorted(os.path.join(docs, n) for n in os.listdir(docs) if n.endswith(".md"))
    return [f for f in files if os.path.exists(f)]


def prose_lines(text):
    """(line number, line) outside fenced code blocks, code spans blanked."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = None
            continue
        if fence is None:
            yield n, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    out = []
    for ch in text:
        if ch in " -_" or unicodedata.category(ch)[0] in "LN":
            out.append("-" if ch == " " else ch)
    return "".join(out)


anchor_cache = {}


def anchors(path):
    if path not in anchor_cache:
        found, seen = set(), {}
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for _, line in prose_lines(text):
            found.update(HTML_ANCHOR.findall(line))
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        anchor_cache[path] = found
    return anchor_cache[path]


def targets(text):
    for n, line in prose_lines(text):
        if REF_DEF.match(line):
            yield n, REF_DEF.match(line).group(1)
            continue
        for m in INLINE_LINK.finditer(INLINE_CODE.sub(lambda c: " " * len(c.group(0)), line)):
            yield n, m.group(1)


def check_file(path):
    broken = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    rel = os.path.relpath(path)
    for n, target in targets(text):
        if not target or EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        file_part = file_part.split("?")[0]
        if file_part.startswith("/"):
            dest = os.path.join(ROOT, file_part.lstrip("/"))
        elif file_part:
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
        else:
            dest = path
        dest = dest.replace("%20", " ")
        if not os.path.exists(dest):
            broken.append(f"{rel}:{n}: {target}: no such file")
            continue
        if anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append(f"{rel}:{n}: {target}: no heading '#{anchor}' in {os.path.relpath(dest)}")
    return broken


def layout_gaps():
    """Source files that docs/architecture.md does not link."""
    arch = os.path.join(ROOT, "docs", "architecture.md")
    src = os.path.join(ROOT, "src")
    if not (os.path.exists(arch) and os.path.isdir(src)):
        return []
    with open(arch, encoding="utf-8") as f:
        text = f.read()
    linked = set()
    for _, target in targets(text):
        if not EXTERNAL.match(target):
            linked.add(os.path.normpath(os.path.join(os.path.dirname(arch), target.partition("#")[0])))
    gaps = []
    for root, _, names in os.walk(src):
        for name in sorted(names):
            p = os.path.normpath(os.path.join(root, name))
            if name.endswith(".rs") and p not in linked:
                gaps.append(f"docs/architecture.md: the layout table does not link {os.path.relpath(p, ROOT)}")
    return sorted(gaps)


def main():
    files = [os.path.abspath(a) for a in sys.argv[1:]] or default_files()
    broken = [b for f in files for b in check_file(f)]
    if not sys.argv[1:]:
        broken += layout_gaps()
    for b in broken:
        print(b)
    if broken:
        print(f"check-links: {len(broken)} broken link(s) in {len(files)} file(s)", file=sys.stderr)
        sys.exit(1)
    print(f"check-links: {len(files)} file(s), every relative link and anchor resolves")


if __name__ == "__main__":
    main()
