/**
 * @module
 * Bounds the wall time of every test of the suite: preloaded by
 * `deno task test` (`--preload`), it gives each `Deno.test` that sets no
 * `timeout` of its own a default one, so a hang fails that test with
 * "Test timed out after N ms" (the next test of the file still runs) instead
 * of blocking CI. `OVM_TEST_TIMEOUT_MS` overrides the default; a test that
 * is slow by nature sets its own `timeout`.
 */

/** Default bound: well above the slowest test seen on a busy 2-core host (TCG boots). */
export const DEFAULT_TEST_TIMEOUT_MS = Number(Deno.env.get("OVM_TEST_TIMEOUT_MS") ?? 600_000);

type TestArgs =
  | [Deno.TestDefinition]
  | [string, (t: Deno.TestContext) => void | Promise<void>]
  | [(t: Deno.TestContext) => void | Promise<void>]
  | [
    string,
    Omit<Deno.TestDefinition, "fn" | "name">,
    (t: Deno.TestContext) => void | Promise<void>,
  ]
  | [Omit<Deno.TestDefinition, "fn">, (t: Deno.TestContext) => void | Promise<void>];

/** Any call form of `Deno.test` as one definition. */
function definition(args: TestArgs): Deno.TestDefinition {
  const [a, b, c] = args as unknown[];
  if (typeof a === "function") {
    return { name: a.name, fn: a as Deno.TestDefinition["fn"] };
  }
  if (typeof a === "string") {
    return typeof b === "function"
      ? { name: a, fn: b as Deno.TestDefinition["fn"] }
      : { ...(b as object), name: a, fn: c as Deno.TestDefinition["fn"] };
  }
  return typeof b === "function"
    ? { ...(a as Omit<Deno.TestDefinition, "fn">), fn: b as Deno.TestDefinition["fn"] }
    : a as Deno.TestDefinition;
}

if (DEFAULT_TEST_TIMEOUT_MS > 0) {
  const original = Deno.test;
  const bounded = (...args: TestArgs): void => {
    const def = definition(args);
    original({ ...def, timeout: def.timeout ?? DEFAULT_TEST_TIMEOUT_MS });
  };
  Object.assign(bounded, { ignore: original.ignore, only: original.only });
  (Deno as { test: unknown }).test = bounded;
}
