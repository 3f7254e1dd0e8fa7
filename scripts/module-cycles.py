"""List import circles between the modules of a crate.

    python3 scripts/module-cycles.py core/src      # or cli/src

A module is a top-level folder or file of the crate (`model`, `train`, ...); inside one,
its sub-modules (`model::kernels`, `model::store`) count on their own. An edge A -> B is
a `crate::`, `super::` or grouped `use crate::{..}` path into B in A's code (comments and `#[cfg(test)] mod tests` left out). Prints
every circle found and exits 1 if there is one.
"""

import os
import re
import sys


def exists(root, parts):
    p = os.path.join(root, *parts)
    return os.path.exists(p + ".rs") or os.path.isdir(p)


def node_of(root, parts):
    """The module node (at most two levels) an absolute path inside the crate names."""
    node = []
    for part in parts[:2]:
        if not exists(root, node + [part]):
            break
        node.append(part)
    return node


def expand(tail):
    """`::a::b` -> [[a, b]]; `::{a::b, c}` -> [[a, b], [c]] (one level of braces)."""
    tail = tail.lstrip(":")
    if not tail.startswith("{"):
        return [re.findall(r"\w+", tail)]
    depth, item, items = 0, "", []
    for ch in tail[1:]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += ch
    items.append(item)
    return [re.findall(r"\w+", i.split("{")[0]) for i in items if i.strip()]


def paths_in(src, here):
    """Absolute paths (lists of names) of every `crate::`/`super::` path in `src`."""
    for m in re.finditer(r"\b(crate|(?:super::)*super)(::\{[^;]*|(?:::\w+)+)", src):
        head = m.group(1)
        base = [] if head == "crate" else here[: len(here) - head.count("super")]
        for rest in expand(m.group(2)):
            yield base + [p for p in rest if p not in ("self",)]


def edges_of(root):
    edges = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(folder, f)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            here = parts[:-1] if parts[-1] in ("mod", "lib", "main") else parts
            if not here:
                continue
            src = open(path).read()
            src = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", src, flags=re.S)
            src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("//"))
            a = here[:2]
            for p in paths_in(src, here):
                b = node_of(root, p)
                if not b:
                    continue
                if a[0] != b[0]:
                    edges.setdefault(a[0], set()).add(b[0])
                elif a != b and len(a) == 2 and len(b) == 2:
                    edges.setdefault("::".join(a), set()).add("::".join(b))
    return edges


def circles(edges):
    found, seen = [], set()
    for start in sorted(edges):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start and frozenset(path) not in seen:
                    seen.add(frozenset(path))
                    found.append(path + [start])
                elif nxt not in path:
                    stack.append((nxt, path + [nxt]))
    return found


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        print("usage: python3 scripts/module-cycles.py CRATE_SRC_FOLDER (e.g. core/src)", file=sys.stderr)
        sys.exit(2)
    found = circles(edges_of(sys.argv[1]))
    for c in found:
        print(" -> ".join(c))
    print(f"{len(found)} import circle(s) in {sys.argv[1]}")
    sys.exit(1 if found else 0)
