import assert from "node:assert/strict";
import { join } from "node:path";
import { Progress } from "../../src/util/progress.ts";
import { fileCredentials, removeCredential, saveCredential } from "../../src/oci/mod.ts";

function sink(tty: boolean) {
  const out: string[] = [];
  return { out, raw: (s: string) => void out.push(s), stderrIsTerminal: tty };
}

const D = `sha256:${"ab".repeat(32)}`;

Deno.test("progress draws per-blob and overall bars on a terminal", () => {
  const s = sink(true);
  let now = 0;
  const p = new Progress(s, "auto", { now: () => now });
  assert.equal(p.mode, "tty");
  p.event({ type: "plan", digest: "m", size: 2048 });
  p.event({ type: "blob-start", digest: D, size: 2048, offset: 0 });
  now = 1000;
  p.event({ type: "blob-progress", digest: D, size: 2048, bytes: 1024 });
  p.finish();
  const text = s.out.join("");
  assert.match(text, /abababababab \[=+ +\] {2}50% 1\.00 KiB\/2\.00 KiB/);
  assert.match(text, /total \[=+ +\] {2}50% .*\/s ETA 1s/);
  assert.match(text, new RegExp(String.raw`\u001b\[\d+A`), "redraws in place");
});

Deno.test("progress prints one line per blob when stderr is not a terminal", () => {
  const s = sink(false);
  const p = new Progress(s, "auto");
  assert.equal(p.mode, "plain");
  p.event({ type: "blob-start", digest: D, size: 10, offset: 4 });
  p.event({ type: "blob-progress", digest: D, size: 10, bytes: 8 });
  p.event({ type: "blob-done", digest: D, size: 10, status: "fetched" });
  assert.deepEqual(s.out, ["resuming abababababab at 4 B\n", "fetched abababababab 10 B\n"]);
});

Deno.test("progress in json mode prints NDJSON events and throttles byte counts", () => {
  const s = sink(true);
  let now = 0;
  const p = new Progress(s, "json", { now: () => now });
  p.event({ type: "blob-start", digest: D, size: 10, offset: 0 });
  now = 300;
  p.event({ type: "blob-progress", digest: D, size: 10, bytes: 1 });
  now = 310;
  p.event({ type: "blob-progress", digest: D, size: 10, bytes: 2 });
  p.event({ type: "blob-progress", digest: D, size: 10, bytes: 10 });
  const events = s.out.map((l) => JSON.parse(l));
  assert.deepEqual(events.map((e) => e.bytes ?? null), [null, 1, 10]);
  assert(events.every((e) => typeof e.time === "string"));
});

Deno.test("credentials come from auth.json first, then Docker's config.json", async () => {
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  const docker = await Deno.makeTempDir({ prefix: "ovm-docker-" });
  try {
    await Deno.writeTextFile(
      join(docker, "config.json"),
      JSON.stringify({
        auths: {
          "https://reg.example": { auth: btoa("dock:er") },
          "other.example": { username: "u2", password: "p2" },
        },
      }),
    );
    const env = { get: (k: string) => (k === "DOCKER_CONFIG" ? docker : undefined) };
    const creds = fileCredentials(home, { env });
    assert.deepEqual(await creds("reg.example"), {
      username: "dock",
      password: "er",
      identityToken: undefined,
    });
    assert.equal((await creds("other.example"))?.password, "p2");
    assert.equal(await creds("none.example"), undefined);
    await saveCredential(home, "reg.example", { username: "mine", password: "pw:with:colons" });
    assert.equal((await creds("reg.example"))?.username, "mine");
    assert.equal((await creds("reg.example"))?.password, "pw:with:colons");
    assert.equal(await removeCredential(home, "reg.example"), true);
    assert.equal((await creds("reg.example"))?.username, "dock");
  } finally {
    await Deno.remove(home, { recursive: true });
    await Deno.remove(docker, { recursive: true });
  }
});
