#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# call_graph.py: an architecture check over compiled objects. From `nm` it
# builds the graph "source A calls (or takes the address of) a function defined
# in source B", then fails on circles between source files and, with --layers,
# on a lower layer reaching up into a higher one. Standard library only.
"""Check the file-level call graph of a set of object files.

usage: call_graph.py [--layers FILE] [--only PREFIX]... [-v] OBJECT_OR_DIR...

Each object file (a directory stands for every *.o under it) is mapped back to
its source: a CMake object build/debug/CMakeFiles/<target>.dir/src/util/buf.c.o
is src/util/buf.c; any other path just loses its .o suffix. The same source
built into several targets is one node.

Edges come from `nm -P` (the NM environment variable overrides the program):
a source that has an undefined reference to a global function (T, W, V or i)
defined by another given source calls it. Symbols no given object defines
(libc, libuv, ...) are ignored, and so are data symbols.

Checks:
  cycles  every strongly connected component of two or more sources fails;
          each is printed as "cycle: a.c -> b.c -> a.c", with the symbols
          behind each edge.
  layers  with --layers FILE: the file lists src/ directories, lowest layer
          first, one layer per line; a line may name several directories of
          the same layer, separated by spaces; '#' starts a comment. A source
          in a lower layer that references a function defined in a higher
          layer fails. A directory matches itself and everything below it;
          "util" and "src/util" are the same entry, and "." names the files
          directly in src/ (main.c). Sources in no listed directory are not
          layer-checked (-v lists them).

Exit status: 0 when clean, 1 when a check failed, 2 on a usage or nm error.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys

DEFINED_TEXT = {"T", "W", "V", "i"}  # global code: text, weak, weak object-like, GNU ifunc
UNDEFINED = {"U", "w", "v"}
CMAKE_OBJECT = re.compile(r"(?:^|/)CMakeFiles/[^/]+\.dir/(.+)\.o$")


def die(msg):
    """Usage and tool errors: exit status 2."""
    print(f"call_graph: {msg}", file=sys.stderr)
    raise SystemExit(2)


def source_of(obj):
    """The source path an object was compiled from."""
    path = obj.replace(os.sep, "/")
    m = CMAKE_OBJECT.search(path)
    if m:
        return m.group(1)
    return path[:-2] if path.endswith(".o") else path


def expand(paths):
    """Object files named on the command line; directories are walked for *.o."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                out.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".o"))
        else:
            out.append(p)
    return out


def read_symbols(obj, nm):
    """(defined global functions, undefined references) of one object."""
    try:
        r = subprocess.run(nm + ["-P", obj], capture_output=True, text=True, check=False)
    except OSError as e:
        die(f"cannot run {nm[0]}: {e}")
    if r.returncode != 0:
        die(f"{' '.join(nm)} -P {obj} failed: {r.stderr.strip()}")
    defined, undefined = set(), set()
    for line in r.stdout.splitlines():
        parts = line.split()
        # "name type [value size]"; an archive member header ends with ':'.
        if len(parts) < 2 or parts[0].endswith(":"):
            continue
        name, kind = parts[0], parts[1]
        if kind in DEFINED_TEXT:
            defined.add(name)
        elif kind in UNDEFINED:
            undefined.add(name)
    return defined, undefined


def build_graph(objects, nm):
    """Returns (sources, edges, ambiguous).

    edges: {caller: {callee: set of symbols}}, without self edges.
    ambiguous: {symbol: set of sources} for functions defined by more than one
    source (the caller gets an edge to each of them).
    """
    defs = {}  # symbol -> set of sources
    refs = {}  # source -> set of symbols
    for obj in objects:
        src = source_of(obj)
        d, u = read_symbols(obj, nm)
        refs.setdefault(src, set()).update(u)
        for s in d:
            defs.setdefault(s, set()).add(src)
    edges = {src: {} for src in refs}
    for src, syms in refs.items():
        for s in syms:
            for callee in defs.get(s, ()):
                if callee != src:
                    edges[src].setdefault(callee, set()).add(s)
    ambiguous = {s: srcs for s, srcs in defs.items() if len(srcs) > 1}
    return sorted(refs), edges, ambiguous


def strongly_connected(nodes, edges):
    """Tarjan's algorithm, iterative. Returns the components, each sorted."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, {}))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(sorted(comp))
    return comps


def shortest_cycle(start, members, edges):
    """The shortest cycle from start back to itself inside one component."""
    prev = {start: None}
    queue = [start]
    for v in queue:
        for w in sorted(edges.get(v, {})):
            if w not in members:
                continue
            if w == start:
                path = [v]  # v, prev(v), ..., start
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return path[::-1] + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return None


def cycles_covering(comp, edges):
    """Shortest cycles, one through each member not yet on a printed cycle."""
    members, covered, out = set(comp), set(), []
    for v in comp:
        if v in covered:
            continue
        cyc = shortest_cycle(v, members, edges)
        if cyc:
            out.append(cyc)
            covered.update(cyc)
    return out


def read_layers(path):
    """[[dir, ...], ...], lowest layer first; dirs relative to src/."""
    layers = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            dirs = []
            for w in words:
                d = w.strip("/")
                if d.startswith("src/"):
                    d = d[4:]
                if not d or d == "src":
                    die(f"{path}:{lineno}: name a directory under src/, not {w!r}")
                dirs.append(d)
            layers.append(dirs)
    seen = {}
    for i, dirs in enumerate(layers):
        for d in dirs:
            if d in seen:
                die(f"{path}: {d} is listed twice")
            seen[d] = i
    return layers


def layer_of(src, layers):
    """(layer index, directory) of a source, by the longest matching directory; None if unlisted."""
    rel = src[4:] if src.startswith("src/") else None
    if rel is None:
        m = re.search(r"(?:^|/)src/(.+)$", src)  # sources given by an absolute or prefixed path
        rel = m.group(1) if m else None
    if rel is None:
        return None
    best = None
    for i, dirs in enumerate(layers):
        for d in dirs:
            hit = "/" not in rel if d == "." else rel.startswith(d + "/")
            if hit and (best is None or len(d) > len(best[1])):
                best = (i, d)
    return best


def symbols_text(syms, limit=4):
    s = sorted(syms)
    more = f", +{len(s) - limit} more" if len(s) > limit else ""
    return ", ".join(s[:limit]) + more


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Fail on call cycles between source files and on layer violations, from nm.",
        epilog="Example: tests/arch/call_graph.py --layers tests/arch/layers.txt "
        "$(find build/debug/CMakeFiles -path '*/src/*.o')",
    )
    ap.add_argument("objects", nargs="+", metavar="OBJECT_OR_DIR", help="object files, or directories of them")
    ap.add_argument("--layers", metavar="FILE", help="src/ directories, lowest layer first, one layer per line")
    ap.add_argument("--only", action="append", default=[], metavar="PREFIX",
                    help="keep only sources whose path starts with PREFIX (repeatable), e.g. src/")
    ap.add_argument("-v", "--verbose", action="store_true", help="also print the graph's size and unlayered sources")
    args = ap.parse_args(argv)

    nm = shlex.split(os.environ.get("NM", "nm"))
    objects = expand(args.objects)
    if args.only:
        objects = [o for o in objects if any(source_of(o).startswith(p) for p in args.only)]
    if not objects:
        die("no object files")
    for o in objects:
        if not os.path.isfile(o):
            die(f"{o}: no such file")
    try:
        layers = read_layers(args.layers) if args.layers else None
    except OSError as e:
        die(f"cannot read the layers file: {e}")

    nodes, edges, ambiguous = build_graph(objects, nm)
    for s, srcs in sorted(ambiguous.items()):
        print(f"call_graph: warning: {s} is defined by {', '.join(sorted(srcs))}; "
              "its callers get an edge to each", file=sys.stderr)
    if args.verbose:
        n_edges = sum(len(v) for v in edges.values())
        print(f"{len(objects)} objects, {len(nodes)} sources, {n_edges} edges")

    failed = False
    for comp in strongly_connected(nodes, edges):
        if len(comp) < 2:
            continue
        failed = True
        print(f"cycle among {len(comp)} files: {' '.join(comp)}")
        for cyc in cycles_covering(comp, edges):
            print("cycle: " + " -> ".join(cyc))
            for a, b in zip(cyc, cyc[1:]):
                print(f"    {a} -> {b}: {symbols_text(edges[a][b])}")

    if layers is not None:
        unlayered = []
        for a in nodes:
            la = layer_of(a, layers)
            if la is None:
                unlayered.append(a)
                continue
            for b, syms in sorted(edges[a].items()):
                lb = layer_of(b, layers)
                if lb is not None and lb[0] > la[0]:
                    failed = True
                    print(f"layer violation: {a} ({la[1]}, layer {la[0] + 1}) -> {b} ({lb[1]}, layer {lb[0] + 1}): "
                          f"{symbols_text(syms)}")
        if args.verbose and unlayered:
            print("not layer-checked (in no listed directory): " + " ".join(unlayered))

    if not failed and args.verbose:
        print("ok: no cycles" + (", no layer violations" if layers is not None else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
