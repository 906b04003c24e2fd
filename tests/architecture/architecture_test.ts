/**
 * The shape of `src/` (issue 13), checked on the source itself:
 * - the import graph (every relative `import`/`export ... from`, type-only
 *   ones too) has no cycle;
 * - outside `src/vmm/`, nothing names a backend or its adapter class: the
 *   runtime, the API and the CLI reach backends only through the registry
 *   (`src/vmm/mod.ts`) and the `VmmAdapter` interface;
 * - nothing outside `src/runtime/` imports a file of it other than `mod.ts`.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(new URL("../../", import.meta.url).pathname);
const SRC = join(ROOT, "src");

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) out.push(...await sourceFiles(p));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out.sort();
}

const IMPORT_RE = /^\s*(?:import|export)\s[^"';]*?["']([^"']+)["']/gm;

/** Relative specifiers of a file's static imports and re-exports. */
function specifiers(text: string): string[] {
  return [...text.matchAll(IMPORT_RE)].map((m) => m[1]).filter((s) => s.startsWith("."));
}

async function importGraph(files: string[]): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const deps = specifiers(await Deno.readTextFile(f))
      .map((s) => resolve(dirname(f), s))
      .filter((p) => p.startsWith(SRC + "/"));
    graph.set(f, deps);
  }
  return graph;
}

/** Every cycle's files (strongly connected components of more than one file, or a self-import). */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(scc);
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out;
}

Deno.test("the cycle finder finds a cycle, and none in a chain", () => {
  const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]]);
  assert.deepEqual(cycles(g).map((c) => c.sort()), [["a", "b", "c"]]);
  assert.deepEqual(cycles(new Map([["a", ["b"]], ["b", []]])), []);
  assert.deepEqual(specifiers(`import type { X } from "./x.ts";\nexport * from "../y.ts";`), [
    "./x.ts",
    "../y.ts",
  ]);
});

Deno.test("src/ has no import cycle", async () => {
  const graph = await importGraph(await sourceFiles(SRC));
  assert.ok(graph.size > 100, `only ${graph.size} files found under ${SRC}`);
  const found = cycles(graph).map((c) => c.map((f) => relative(SRC, f)).sort().join(" <-> "));
  assert.deepEqual(found, [], `import cycles under src/:\n${found.join("\n")}`);
});

/** What names a backend: its registry name as a string, its class, or its module path. */
const BACKEND_RE = new RegExp(
  [
    String.raw`(["'\x60])(qemu|cloud-hypervisor|firecracker|cherrybomb)\1`,
    String.raw`\b(QemuAdapter|CloudHypervisorAdapter|FirecrackerAdapter|CliRuntimeAdapter)\b`,
    String.raw`vmm/(qemu|cloud_hypervisor|firecracker|descriptor)/`,
  ].join("|"),
);

Deno.test("src/runtime, src/api and src/cli name no backend: only the registry maps names to adapters", async () => {
  const hits: string[] = [];
  for (const dir of ["runtime", "api", "cli"]) {
    for (const f of await sourceFiles(join(SRC, dir))) {
      const lines = (await Deno.readTextFile(f)).split("\n");
      for (const [i, line] of lines.entries()) {
        if (/^\s*(\*|\/\/)/.test(line)) continue; // comments may name what they describe
        if (BACKEND_RE.test(line)) hits.push(`${relative(ROOT, f)}:${i + 1}: ${line.trim()}`);
      }
    }
  }
  assert.deepEqual(hits, [], `backend names outside src/vmm/:\n${hits.join("\n")}`);
  // The check itself sees what it must refuse.
  for (
    const bad of [`a.name === "qemu"`, `x instanceof QemuAdapter`, `from "../vmm/qemu/mod.ts"`]
  ) {
    assert.ok(BACKEND_RE.test(bad), bad);
  }
  assert.ok(!BACKEND_RE.test(`install QEMU (apt-get install qemu-system-x86)`));
});

Deno.test("nothing outside src/runtime/ imports past its mod.ts", async () => {
  const runtime = join(SRC, "runtime");
  const hits: string[] = [];
  const files = [
    ...await sourceFiles(SRC),
    ...await sourceFiles(join(ROOT, "tests")),
    ...await sourceFiles(join(ROOT, "bench")),
  ].filter((f) => !f.startsWith(runtime + "/"));
  for (const f of files) {
    for (const s of specifiers(await Deno.readTextFile(f))) {
      const p = resolve(dirname(f), s);
      if (p.startsWith(runtime + "/") && p !== join(runtime, "mod.ts")) {
        hits.push(`${relative(ROOT, f)}: ${s}`);
      }
    }
  }
  assert.deepEqual(hits, [], `imports past src/runtime/mod.ts:\n${hits.join("\n")}`);
});
