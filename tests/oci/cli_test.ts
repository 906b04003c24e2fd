/** The registry verbs through the CLI frame, in-process, against docker-registry. */
import assert from "node:assert/strict";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";
import { join } from "node:path";
import {
  assertStoreConsistent,
  packDummy,
  startProxy,
  startRegistry,
} from "../_helpers/registry.ts";

Deno.test("ovm push and ovm pull print JSON results and NDJSON progress on stderr", async () => {
  await using reg = await startRegistry();
  await using a = await tempDir("ovm-home-");
  await using b = await tempDir("ovm-home-");
  const packed = await packDummy(a.path, "demo/vm:1.0");
  const push = await ovm(a.path, "push", "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, "--json");
  assertExit(push, 0);
  const pushed = JSON.parse(push.stdout);
  assert.equal(pushed.digest, packed.digest);
  const events = push.stderr.trim().split("\n").map((l) => JSON.parse(l));
  assert(events.some((e) => e.type === "blob-done" && e.status === "pushed"));
  assert(events.some((e) => e.type === "manifest-done" && e.reference === "1.0"));

  const pull = await ovm(b.path, "pull", `${reg.host}/vms/demo:1.0`, "--progress=plain");
  assertExit(pull, 0);
  assert.match(pull.stdout, new RegExp(`pulled ${reg.host}/vms/demo:1.0 ${packed.digest}`));
  assert.match(pull.stderr, /^fetched /m);
  assert.match(pull.stderr, /^manifest /m);
  const ls = await ovm(b.path, "ls", "--json");
  assertExit(ls, 0);
  assert(ls.stdout.includes(packed.digest));

  const refs = await ovm(b.path, "referrers", `${reg.host}/vms/demo:1.0`, "--json");
  assertExit(refs, 0);
  const r = JSON.parse(refs.stdout);
  assert.equal(r.subject.digest, packed.digest);
  assert.deepEqual(r.referrers, []);
  assert.equal(r.via, "tag schema");

  const copy = await ovm(
    b.path,
    "copy",
    `${reg.host}/vms/demo:1.0`,
    `${reg.host}/vms/copy:1.0`,
    "-q",
  );
  assertExit(copy, 0);
  assert.match(copy.stdout, /copied/);
  assert.equal(copy.stderr, "");
});

Deno.test("ovm pull refuses a bad reference with exit code 2 before any network call", async () => {
  await using h = await tempDir("ovm-home-");
  const r = await ovm(h.path, "pull", "localhost:5000/Bad/Name:1");
  assertExit(r, 2);
  assert.match(r.stderr, /Invalid reference "localhost:5000\/Bad\/Name:1"/);
  const p = await ovm(h.path, "pull", "127.0.0.1:1/x:1", "--progress=fancy");
  assertExit(p, 2);
  assert.match(p.stderr, /--progress "fancy"/);
});

Deno.test("ovm pull of a missing tag exits 1 with a not-found message", async () => {
  await using reg = await startRegistry();
  await using h = await tempDir("ovm-home-");
  const r = await ovm(h.path, "pull", `${reg.host}/nothing/here:1.0`);
  assertExit(r, 1);
  assert.match(r.stderr, /"1.0" was not found in ".*\/nothing\/here"/);
});

Deno.test("ovm login checks and stores credentials 0600, logout removes them", async () => {
  await using reg = await startRegistry({ kind: "htpasswd", username: "carol", password: "pw1" });
  await using h = await tempDir("ovm-home-");
  const bad = await ovm(h.path, "login", reg.host, "-u", "carol", "-p", "nope");
  assertExit(bad, 1);
  assert.match(bad.stderr, /refused the credentials/);
  const ok = await ovm(h.path, "login", reg.host, "-u", "carol", "-p", "pw1", "--json");
  assertExit(ok, 0);
  const { path } = JSON.parse(ok.stdout);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  const file = JSON.parse(await Deno.readTextFile(path));
  assert.equal(atob(file.auths[reg.host].auth), "carol:pw1");
  await packDummy(h.path, "demo/vm:1.0");
  assertExit(await ovm(h.path, "push", "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, "-q"), 0);
  const out = await ovm(h.path, "logout", reg.host);
  assertExit(out, 0);
  const denied = await ovm(h.path, "pull", `${reg.host}/vms/demo:1.0`);
  assertExit(denied, 1);
  assert.match(denied.stderr, /ovm login/);
});

Deno.test("Ctrl-C during ovm pull exits 130 and the next pull resumes the partial blob", async () => {
  await using reg = await startRegistry();
  await using src = await tempDir("ovm-home-");
  await using h = await tempDir("ovm-home-");
  await packDummy(src.path, "demo/vm:1.0", { diskBytes: 4 << 20 });
  assertExit(await ovm(src.path, "push", "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, "-q"), 0);
  let slow = true;
  let served = 0;
  await using proxy = startProxy(reg.host, async (req, forward) => {
    const res = await forward(req);
    const isBigBlob = req.method === "GET" && /\/blobs\//.test(new URL(req.url).pathname) &&
      Number(res.headers.get("content-length")) > 1 << 20;
    if (!slow || !isBigBlob) return res;
    const bytes = new Uint8Array(await res.arrayBuffer());
    let off = 0;
    return new Response(
      new ReadableStream({
        async pull(ctl) {
          if (off >= bytes.length) return ctl.close();
          await new Promise((r) => setTimeout(r, 50));
          ctl.enqueue(bytes.slice(off, off + (64 << 10)));
          off += 64 << 10;
          served = off;
        },
      }),
      { headers: { "content-length": String(bytes.length) } },
    );
  });
  const main = new URL("../../main.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "pull", `${proxy.host}/vms/demo:1.0`, "--home", h.path, "-q"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const ingest = join(h.path, "ingest");
  // Interrupt once the proxy has sent 512 KiB of the big blob.
  for (let i = 0; i < 400 && served < 512 << 10; i++) {
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill("SIGINT");
  const status = await child.status;
  const stderr = await new Response(child.stderr).text();
  assert.equal(status.code, 130, stderr);
  assert.match(stderr, /interrupted/);
  await assertStoreConsistent(h.path);
  const kept = await Array.fromAsync(Deno.readDir(ingest));
  assert.equal(kept.length, 1);
  const keptBytes = (await Deno.stat(join(ingest, kept[0].name))).size;
  assert(keptBytes > 0);
  slow = false;
  const again = await ovm(h.path, "pull", `${proxy.host}/vms/demo:1.0`, "--json");
  assertExit(again, 0);
  const ranged = proxy.log.filter((l) => l.range);
  assert.equal(ranged.at(-1)!.range, `bytes=${keptBytes}-`);
  await assertStoreConsistent(h.path);
});
