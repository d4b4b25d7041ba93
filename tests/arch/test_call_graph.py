#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# test_call_graph.py: the self-test of call_graph.py. It compiles tiny C files
# with `cc -c` ($CC overrides) into a CMake-like tree
# (CMakeFiles/<target>.dir/src/<dir>/<file>.c.o) and checks the checker's exit
# status and report for a cycle, no cycle and layer violations.
import os
import shlex
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "call_graph.py")
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import call_graph  # noqa: E402  (for the unit checks of its helpers)


class Tree:
    """A temporary build tree of compiled C sources."""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="call-graph-")
        self.root = self._tmp.name
        self.cc = shlex.split(os.environ.get("CC", "cc"))

    def close(self):
        self._tmp.cleanup()

    def add(self, src, code, target="t"):
        """Compiles `code` as src (e.g. "src/util/a.c") in target; returns the object's path."""
        c = os.path.join(self.root, "source", src)
        os.makedirs(os.path.dirname(c), exist_ok=True)
        with open(c, "w", encoding="utf-8") as f:
            f.write(code)
        obj = os.path.join(self.root, "CMakeFiles", f"{target}.dir", src + ".o")
        os.makedirs(os.path.dirname(obj), exist_ok=True)
        subprocess.run(self.cc + ["-std=c11", "-O0", "-c", c, "-o", obj], check=True)
        return obj

    def layers(self, text):
        path = os.path.join(self.root, "layers.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path


def check(*args):
    r = subprocess.run([sys.executable, CHECKER, *args], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


class CallGraphTest(unittest.TestCase):
    def setUp(self):
        self.t = Tree()
        self.addCleanup(self.t.close)

    def test_two_files_calling_each_other_are_a_cycle(self):
        a = self.t.add("src/gw/a.c", "int b1(int);\nint a1(int x) { return x ? b1(x - 1) : 0; }\n")
        b = self.t.add("src/gw/b.c", "int a1(int);\nint b1(int x) { return a1(x); }\n")
        rc, out, err = check(a, b)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("cycle: src/gw/a.c -> src/gw/b.c -> src/gw/a.c", out)
        self.assertIn("src/gw/a.c -> src/gw/b.c: b1", out)
        self.assertIn("src/gw/b.c -> src/gw/a.c: a1", out)

    def test_a_longer_cycle_is_printed_whole(self):
        objs = [
            self.t.add("src/x/a.c", "void b(void);\nvoid a(void) { b(); }\n"),
            self.t.add("src/x/b.c", "void c(void);\nvoid b(void) { c(); }\n"),
            self.t.add("src/x/c.c", "void a(void);\nvoid c(void) { a(); }\n"),
            self.t.add("src/x/d.c", "void a(void);\nvoid d(void) { a(); }\n"),  # calls in, not part of it
        ]
        rc, out, err = check(*objs)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("cycle: src/x/a.c -> src/x/b.c -> src/x/c.c -> src/x/a.c", out)
        self.assertIn("cycle among 3 files: src/x/a.c src/x/b.c src/x/c.c\n", out)
        self.assertNotIn("d.c ->", out)

    def test_no_cycle_passes(self):
        # a calls b; b calls only libc, which no given object defines.
        a = self.t.add("src/gw/a.c", "int b1(int);\nint a1(int x) { return b1(x); }\n")
        b = self.t.add("src/gw/b.c", "#include <stdlib.h>\nint b1(int x) { return abs(x); }\n")
        rc, out, err = check(a, b)
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("cycle", out)

    def test_data_and_static_functions_are_not_calls(self):
        # b reads a's global variable, and each has a static function named
        # after a function of the other: no edge from b to a, so no cycle.
        a = self.t.add("src/m/a.c", "int shared = 1;\nint b1(void);\nstatic int b2(void) { return 2; }\n"
                       "int a1(void) { return b1() + b2(); }\n")
        b = self.t.add("src/m/b.c", "extern int shared;\nstatic int a1(void) { return 3; }\n"
                       "int b1(void) { return shared + a1(); }\nint b2(void) { return 4; }\n")
        rc, out, err = check(a, b)
        self.assertEqual(rc, 0, out + err)

    def test_the_same_source_in_two_targets_is_one_file(self):
        x1 = self.t.add("src/u/x.c", "int f(void) { return 1; }\n", target="lib")
        x2 = self.t.add("src/u/x.c", "int f(void) { return 1; }\n", target="test")
        y = self.t.add("src/u/y.c", "int f(void);\nint g(void) { return f(); }\n")
        rc, out, err = check(x1, x2, y)
        self.assertEqual(rc, 0, out + err)
        self.assertNotIn("warning", err)

    def test_a_lower_layer_calling_a_higher_one_fails(self):
        u = self.t.add("src/util/u.c", "int gw_get(void);\nint u_get(void) { return gw_get(); }\n")
        g = self.t.add("src/gateway/g.c", "int gw_get(void) { return 7; }\n")
        rc, out, err = check("--layers", self.t.layers("# lowest first\nutil\ngateway\n"), u, g)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("layer violation: src/util/u.c (util, layer 1) -> src/gateway/g.c (gateway, layer 2): gw_get", out)
        self.assertNotIn("cycle", out)
        # Without --layers the same objects pass: there is no cycle.
        self.assertEqual(check(u, g)[0], 0)

    def test_calling_down_or_within_a_layer_passes(self):
        u = self.t.add("src/util/u.c", "int u_get(void) { return 1; }\n")
        g = self.t.add("src/gateway/g.c", "int u_get(void);\nint gw_get(void) { return u_get(); }\n")
        h = self.t.add("src/http/h.c", "int gw_get(void);\nint h_get(void) { return gw_get(); }\n")
        main = self.t.add("src/main.c", "int h_get(void);\nint main(void) { return h_get(); }\n")
        layers = self.t.layers("src/util\nhttp  gateway/\n.\n")  # one line, two directories
        rc, out, err = check("--layers", layers, u, g, h, main)
        self.assertEqual(rc, 0, out + err)
        # Reversed, util sits on top: gateway calling it is now a violation.
        rc, out, err = check("--layers", self.t.layers("http gateway\nutil\n"), u, g, h, main)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("layer violation: src/gateway/g.c (gateway, layer 1) -> src/util/u.c (util, layer 2): u_get", out)
        self.assertNotIn("src/main.c (", out)  # "." is not listed there: main.c is not checked

    def test_a_nested_directory_takes_its_own_layer(self):
        low = self.t.add("src/store/kv/low.c", "int top(void);\nint low(void) { return top(); }\n")
        top = self.t.add("src/store/top.c", "int top(void) { return 1; }\n")
        rc, out, err = check("--layers", self.t.layers("store/kv\nstore\n"), low, top)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("src/store/kv/low.c (store/kv, layer 1) -> src/store/top.c (store, layer 2)", out)

    def test_usage_errors_exit_2(self):
        a = self.t.add("src/a/a.c", "int a(void) { return 0; }\n")
        self.assertEqual(check(os.path.join(self.t.root, "missing.o"))[0], 2)
        self.assertEqual(check("--layers", os.path.join(self.t.root, "none.txt"), a)[0], 2)
        self.assertEqual(check("--layers", self.t.layers("util\nutil\n"), a)[0], 2)
        self.assertEqual(check("--only", "tests/", a)[0], 2)  # nothing left
        self.assertEqual(check()[0], 2)

    def test_directories_and_only(self):
        self.t.add("src/gw/a.c", "int b1(void);\nint a1(void) { return b1(); }\n")
        self.t.add("src/gw/b.c", "int a1(void);\nint b1(void) { return a1(); }\n")
        self.t.add("tests/t.c", "int a1(void);\nint t(void) { return a1(); }\n")
        build = os.path.join(self.t.root, "CMakeFiles")
        rc, out, err = check("--only", "src/", build)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("cycle: src/gw/a.c -> src/gw/b.c -> src/gw/a.c", out)
        self.assertEqual(check("--only", "tests/", build)[0], 0)

    def test_source_of(self):
        self.assertEqual(call_graph.source_of("build/debug/CMakeFiles/ag_core.dir/src/gateway/cache.c.o"),
                         "src/gateway/cache.c")
        self.assertEqual(call_graph.source_of("CMakeFiles/x.dir/src/main.c.o"), "src/main.c")
        self.assertEqual(call_graph.source_of("obj/util.o"), "obj/util")


if __name__ == "__main__":
    unittest.main()
