/**
 * RAM snapshots through the API under QEMU TCG: a counting guest without
 * devices (the snapshot tests' artifact) boots once through `POST /start`, is
 * snapshotted through `POST /snapshot`, and the snapshot is started again
 * through the API — cold, then from the warm pool `ovm serve --warm-snapshot`
 * hosts — and goes on counting. Responses are checked against the OpenAPI file.
 */
import assert from "node:assert/strict";
import { counterHome } from "../_helpers/snapshot.ts";
import { isVmProcess, ovmIn, waitFor } from "../_helpers/runtime.ts";
import {
  CheckedClient,
  serveProcess,
  socketIn,
  specValidator,
  tempSocketDir,
} from "../_helpers/api.ts";

const VM = { memory: "256M", accel: "tcg", cpus: 1 };

async function counts(c: CheckedClient, id: string): Promise<number[]> {
  const logs = await c.call("GET", `/logs/${id}`);
  return (logs.body as { line: string }[])
    .map((r) => /^count (\d+)$/.exec(r.line.trim())?.[1])
    .filter((x): x is string => x !== undefined)
    .map(Number);
}

async function countsPast(c: CheckedClient, id: string, n: number): Promise<number[]> {
  return await waitFor(async () => {
    const all = await counts(c, id);
    return all.length && all[all.length - 1] > n ? all : undefined;
  }, { what: `${id} to count past ${n}`, timeoutMs: 90_000 });
}

Deno.test({
  name:
    "a snapshot taken through the API restores through the API, cold and from the warm pool; the server stops what runs when told to",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using h = await counterHome();
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    const v = await specValidator();
    let serve = await serveProcess(h.home, socket);
    try {
      using c = new CheckedClient(socket, v);
      // The snapshot moment lies between the last count seen before POST /snapshot
      // and the last count seen after it (the source resumes before the reply).
      let lowAt = 0;
      let snapAt = 0;

      await t.step("POST /snapshot of a running guest gives a digest and it resumes", async () => {
        const start = await c.call("POST", "/start?wait=true", {
          manifest: h.ref,
          overrides: { ...VM, name: "src" },
        });
        assert.equal(start.status, 200, JSON.stringify(start.body));
        assert.deepEqual(start.body, {
          instance_id: "src",
          status: "ok",
          state: "running",
          runtime_state: "running",
        });
        const seen = await countsPast(c, "src", 5);
        lowAt = seen[seen.length - 1];
        const snap = await c.call("POST", "/snapshot", {
          instance_id: "src",
          tag: "api/counter:snap",
        });
        assert.equal(snap.status, 200, JSON.stringify(snap.body));
        assert.match(snap.body.snapshot_ref, /^sha256:[0-9a-f]{64}$/);
        assert.equal(snap.body.tag, "api/counter:snap");
        assert.equal((await h.store.resolve("api/counter:snap")).digest, snap.body.snapshot_ref);
        const before = await counts(c, "src");
        snapAt = before[before.length - 1];
        // The source resumed: it keeps counting.
        await countsPast(c, "src", snapAt + 2);
        const st = await c.call("GET", "/status/src");
        assert.equal(st.body.state, "running");
        assert.equal(st.body.metrics.restore_ms, null);
      });

      await t.step("POST /start of the snapshot restores it and it counts on", async () => {
        const start = await c.call("POST", "/start?wait=true", {
          manifest: "api/counter:snap",
          overrides: { ...VM, name: "cold" },
        });
        assert.equal(start.status, 200, JSON.stringify(start.body));
        const all = await countsPast(c, "cold", snapAt + 1);
        // It went on from the snapshot, it did not boot again.
        assert.ok(
          all[0] >= lowAt && all[0] <= snapAt + 1,
          `first count ${all[0]}, snapshot between ${lowAt} and ${snapAt}`,
        );
        const st = await c.call("GET", "/status/cold");
        assert.equal(st.body.state, "running");
        assert.ok(st.body.metrics.restore_ms > 0);
        assert.equal((await c.call("POST", "/stop", { instance_id: "cold" })).status, 200);
      });

      await t.step(
        "POST /snapshot with stop puts it on standby; POST /resume brings it back under its id",
        async () => {
          const before = await countsPast(c, "src", snapAt + 1);
          const last = before[before.length - 1];
          const snap = await c.call("POST", "/snapshot", { instance_id: "src", stop: true });
          assert.equal(snap.status, 200, JSON.stringify(snap.body));
          assert.equal(snap.body.standby, true);
          assert.equal(snap.body.tag, "standby/src:latest");
          const st = await c.call("GET", "/status/src");
          assert.equal(st.body.state, "stopped");
          const bad = await c.call("POST", "/resume", { instance_id: "nope" });
          assert.equal(bad.status, 404, JSON.stringify(bad.body));
          const res = await c.call("POST", "/resume", { instance_id: "src" });
          assert.equal(res.status, 200, JSON.stringify(res.body));
          assert.equal(res.body.state, "running");
          const again = await c.call("POST", "/resume", { instance_id: "src" });
          assert.equal(again.status, 409, JSON.stringify(again.body));
          // The console log went on: the old counts, then the guest counting on from there.
          const all = await countsPast(c, "src", last + 2);
          assert.deepEqual(all.slice(0, before.length), before);
          const next = all[before.length];
          assert.ok(next >= last - 1 && next <= last + 3, `resumed at ${next} after ${last}`);
          // The CLI goes through the server when one runs.
          const sb = await ovmIn(h.home, "standby", "--socket", socket, "src");
          assert.equal(sb.code, 0, sb.stderr);
          assert.match(sb.stdout, /^src on standby: standby\/src:latest sha256:/);
          assert.equal((await c.call("GET", "/status/src")).body.state, "stopped");
          const rs = await ovmIn(h.home, "resume", "--socket", socket, "src");
          assert.equal(rs.code, 0, rs.stderr);
          assert.match(rs.stdout, /^src running/);
          await countsPast(c, "src", all[all.length - 1] + 2);
        },
      );

      await t.step("ovm serve --warm-snapshot starts it from a prepared VM", async () => {
        assert.equal(await serve.stop("SIGTERM"), 0, serve.stderr());
        serve = await serveProcess(
          h.home,
          socket,
          "--warm-snapshot",
          "api/counter:snap",
          "--warm-pool",
          "1",
          "--stop-instances-on-exit",
        );
        await waitFor(() => /warm pool of 1 ready/.test(serve.stderr()) ? true : undefined, {
          what: "the warm pool",
          timeoutMs: 90_000,
        });
        const start = await c.call("POST", "/start?wait=true", {
          manifest: "api/counter:snap",
          overrides: { ...VM, name: "warm" },
        });
        assert.equal(start.status, 200, JSON.stringify(start.body));
        const all = await countsPast(c, "warm", snapAt + 1);
        assert.ok(
          all[0] >= lowAt && all[0] <= snapAt + 1,
          `first count ${all[0]}, snapshot between ${lowAt} and ${snapAt}`,
        );
        const r = await c.call("POST", "/stop", { instance_id: "warm", force: true });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        // --stop-instances-on-exit: SIGTERM stops what still runs ("src").
        const pid = (await c.call("GET", "/status/src")).body.pid;
        assert.equal(await serve.stop("SIGTERM"), 0, serve.stderr());
        assert.equal(await isVmProcess(pid), false);
        const src = JSON.parse(await Deno.readTextFile(`${h.home}/instances/src/state.json`));
        assert.equal(src.state, "stopped");
        assert.match(src.reason, /--stop-instances-on-exit/);
        // The pool's waiting QEMU went with the server: no pool directory is left.
        const left = await Array.fromAsync(Deno.readDir(`${h.home}/pool`)).catch(() => []);
        assert.deepEqual(left, []);
      });
    } finally {
      await serve[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
