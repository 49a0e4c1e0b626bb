#!/usr/bin/env python3
"""Import cycles between the crate's modules (one per file under src/).

A module uses another when its code names it: `crate::a::b`, `super::x`,
`self::x` paths in `use` items or in expressions. A module and the modules
it declares inside itself (`mod.rs` and its children) are one unit here only
for the children's `super::` paths to the parent's own items, which is how
Rust lays a module out; every other edge counts. Prints each cycle and exits
1 when there is one.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def modules():
    found = {}
    for d, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".rs"):
                p = os.path.join(d, f)
                found[module_of(p)] = p
    return found


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)::\{([^;]*?)\};", re.S)


def strip_tests(text):
    # Unit tests (`#[cfg(test)] mod tests { ... }` at the end of a file)
    # may use anything.
    i = text.find("#[cfg(test)]\nmod tests")
    return text if i < 0 else text[:i]


def resolve(mod, known, head, rest):
    if head == "crate":
        base = ()
    elif head == "super":
        base = mod[:-1]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    else:
        base = mod
    target = base
    for part in rest:
        if target + (part,) in known:
            target = target + (part,)
        else:
            break
    return target


def edges(known):
    out = {m: set() for m in known}
    for mod, path in known.items():
        text = strip_tests(open(path).read())
        paths = []
        for g in GROUP.finditer(text):
            for item in re.split(r",", g.group(2)):
                item = item.strip().split(" as ")[0].strip()
                if item and item != "self":
                    paths.append((g.group(1), item.replace("{", "").split("::")))
        for m in PATH.finditer(text):
            paths.append((m.group(1), m.group(2).split("::")[1:]))
        for head, rest in paths:
            target = resolve(mod, known, head, [r for r in rest if r])
            # A parent and its own children, and the crate root, are not edges.
            if target == mod or target == () or target[: len(mod)] == mod or mod[: len(target)] == target:
                continue
            out[mod].add(target)
    return out


def cycles(graph):
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main():
    known = modules()
    found = cycles(edges(known))
    for comp in found:
        print("cycle: " + " ↔ ".join("::".join(m) for m in comp))
    if found:
        return 1
    print(f"no import cycles among {len(known)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
