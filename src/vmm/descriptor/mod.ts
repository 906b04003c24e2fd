/**
 * @module
 * Runtime descriptors: the built-in ones (Cherrybomb) and the user's
 * `$OVM_HOME/runtimes/*.json`, each becoming a {@linkcode CliRuntimeAdapter}.
 */
import { join } from "node:path";
import { ValidationError } from "../../errors.ts";
import cherrybomb from "../cherrybomb.json" with { type: "json" };
import { parseRuntimeDescriptor, type RuntimeDescriptor } from "./schema.ts";

export * from "./schema.ts";
export * from "./cli_adapter.ts";
export * from "./chain_files.ts";

/** Descriptors shipped with ovm. */
export function builtinDescriptors(): RuntimeDescriptor[] {
  return [parseRuntimeDescriptor(cherrybomb, "(built-in cherrybomb)")];
}

/** Reads and validates one descriptor file. */
export async function loadDescriptorFile(path: string): Promise<RuntimeDescriptor> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new ValidationError(`Runtime descriptor "${path}" is not readable JSON`, {
      cause: e,
      hint: "fix or remove the file",
    });
  }
  return parseRuntimeDescriptor(json, `"${path}"`);
}

/**
 * The user's descriptors in `<home>/runtimes/*.json`, sorted by file name. A
 * file's descriptor replaces a built-in of the same name (to change its flags).
 */
export async function loadUserDescriptors(home: string): Promise<RuntimeDescriptor[]> {
  const dir = join(home, "runtimes");
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".json")) names.push(e.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  names.sort();
  const out: RuntimeDescriptor[] = [];
  for (const n of names) out.push(await loadDescriptorFile(join(dir, n)));
  return out;
}

/** {@linkcode loadUserDescriptors} for synchronous callers; files that fail to parse are skipped. */
export function loadUserDescriptorsSync(home: string): RuntimeDescriptor[] {
  const dir = join(home, "runtimes");
  const out: RuntimeDescriptor[] = [];
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].filter((e) => e.isFile && e.name.endsWith(".json"))
      .map((e) => e.name).sort();
  } catch {
    return [];
  }
  for (const n of names) {
    try {
      out.push(parseRuntimeDescriptor(JSON.parse(Deno.readTextFileSync(join(dir, n))), n));
    } catch { /* reported by the async loader (ovm run, ovm runtimes) */ }
  }
  return out;
}
