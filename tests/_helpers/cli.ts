/**
 * @module
 * Runs the ovm CLI in-process with captured output, and temp homes that are
 * removed even when a test fails.
 */
import { runCli } from "../../src/cli/app.ts";

class Capture {
  chunks: Uint8Array[] = [];
  writeSync(p: Uint8Array): number {
    this.chunks.push(p.slice());
    return p.byteLength;
  }
  isTerminal(): boolean {
    return false;
  }
  text(): string {
    return new TextDecoder().decode(
      this.chunks.reduce((a, b) => {
        const c = new Uint8Array(a.byteLength + b.byteLength);
        c.set(a);
        c.set(b, a.byteLength);
        return c;
      }, new Uint8Array()),
    );
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `ovm <args>` against `home`. */
export async function ovm(home: string, ...args: string[]): Promise<CliResult> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli([...args, "--home", home], { stdout, stderr });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

/** Runs the CLI without injecting --home (for help output and global flags). */
export async function ovmRaw(...args: string[]): Promise<CliResult> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runCli(args, { stdout, stderr });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

/** A temp directory removed on dispose: `await using tmp = await tempDir()`. */
export async function tempDir(prefix = "ovm-test-"): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Lists every file below `dir` (relative paths), sorted. */
export async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const rel = prefix ? `${prefix}/${e.name}` : e.name;
      if (e.isDirectory) out.push(...await listFiles(`${dir}/${e.name}`, rel));
      else out.push(rel);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

export function assertExit(r: CliResult, code: number): void {
  if (r.code !== code) {
    throw new Error(
      `expected exit ${code}, got ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`,
    );
  }
}
