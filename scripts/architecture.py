#!/usr/bin/env python3
"""Architecture figures of src/: the module dependency graph (which top-level
module imports which, cycles, domain -> http edges), lines per file, and the
places that build storage keys. Used to check the layout rules of
docs/architecture.md; run from the repository root:

    scripts/architecture.py [--check]

With --check it exits 1 when a rule is broken (a cycle between modules, a
domain module importing axum, utoipa, `http` or the app state, or a key built
outside the key modules).
"""
import os
import re
import sys
from collections import defaultdict

SRC = "src"
# The HTTP side and the wiring above it; everything else is the domain.
UPPER = {"http", "state", "startup", "server", "main", "lib", "client", "shutdown", "metrics"}
# Modules allowed to build object keys from parts.
KEY_MODULES = {"storage/keys.rs", "assets/mod.rs"}
# Building a key from parts (parsing a key a client or a listing gave is not).
KEY_BUILDERS = re.compile(
    r"(ObjectKey|KeyPrefix)::parse\((format!|&?format!|stem|prefix)|VariantKey::(key|prefix)\(|"
    r"\bvariant\.key\(|\.original\(&|\.before_ext\("
)


def top_module(path):
    rel = os.path.relpath(path, SRC)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def files():
    for root, _, names in os.walk(SRC):
        for n in sorted(names):
            if n.endswith(".rs"):
                yield os.path.join(root, n)


def strip_tests(text):
    # Unit tests may import anything, and doc links are not imports: only the
    # code proper counts.
    i = text.find("#[cfg(test)]")
    code = text if i < 0 else text[:i]
    return "\n".join("" if l.lstrip().startswith("//") else l for l in code.splitlines())


def main():
    check = "--check" in sys.argv
    edges = defaultdict(set)
    lines = {}
    key_sites = []
    domain_http = []
    for path in files():
        text = open(path, encoding="utf-8").read()
        lines[os.path.relpath(path, SRC)] = text.count("\n")
        code = strip_tests(text)
        me = top_module(path)
        for m in re.finditer(r"crate::([a-z_]+)", code):
            other = m.group(1)
            if other != me:
                edges[me].add(other)
        if me not in UPPER:
            for bad in ("axum", "utoipa", "crate::http", "crate::state", "AppState"):
                if re.search(r"\b" + re.escape(bad) + r"\b", code):
                    domain_http.append(f"{os.path.relpath(path, SRC)} uses {bad}")
        rel = os.path.relpath(path, SRC)
        if rel not in KEY_MODULES:
            for n, line in enumerate(code.splitlines(), 1):
                if KEY_BUILDERS.search(line) and not line.strip().startswith("//"):
                    key_sites.append(f"{rel}:{n}: {line.strip()[:100]}")

    # Cycles between top-level modules (Tarjan's strongly connected components).
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)

    print("module imports (top-level, tests excluded):")
    for v in sorted(edges):
        print(f"  {v:<10} -> {', '.join(sorted(edges[v]))}")
    print(f"cycles: {comps if comps else 'none'}")
    print(f"domain modules using HTTP types or the app state: {len(domain_http)}")
    for d in domain_http:
        print(f"  {d}")
    print(f"places that build a storage key outside {sorted(KEY_MODULES)}: {len(key_sites)}")
    for k in key_sites:
        print(f"  {k}")
    total = sum(lines.values())
    big = sorted(lines.items(), key=lambda kv: -kv[1])[:10]
    print(f"lines: {total} in {len(lines)} files; largest: " + ", ".join(f"{f} {n}" for f, n in big))
    if check and (comps or domain_http or key_sites):
        sys.exit(1)


if __name__ == "__main__":
    main()
