/**
 * ttrpc framing against spec/vendor/containerd/ttrpc/PROTOCOL.md (header,
 * limits, stream ids, types, flags) and protobuf round trips of real task API
 * messages, over a real UNIX socket.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  Code,
  encodeFrame,
  Flags,
  FrameDecoder,
  FrameError,
  type Handler,
  HEADER_LENGTH,
  MAX_DATA_LENGTH,
  MessageType,
  serveTtrpc,
  TtrpcClient,
  TtrpcError,
} from "../../src/shim/ttrpc.ts";
import { decodeMessage, encodeMessage, packAny, timestamp } from "../../src/shim/proto/mod.ts";
import { compileShimProtos } from "../../src/shim/proto/compile.ts";

const assertEquals = (a: unknown, b: unknown, msg?: string) => assert.deepEqual(a, b, msg);

function assertThrows(fn: () => unknown, cls: new (...a: never[]) => Error, msg: string): void {
  assert.throws(fn, (e: unknown) => e instanceof cls && e.message.includes(msg));
}

async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  cls: new (...a: never[]) => E,
  msg: string,
): Promise<E> {
  let caught: unknown;
  try {
    await fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof cls, `expected ${cls.name}, got ${caught}`);
  assert.ok((caught as E).message.includes(msg), (caught as E).message);
  return caught as E;
}

Deno.test("a frame has the 10-byte big-endian header of PROTOCOL.md, then its data", () => {
  const f = encodeFrame({
    streamId: 0x01020305,
    type: MessageType.request,
    flags: Flags.remoteClosed,
    data: new Uint8Array([0xaa, 0xbb, 0xcc]),
  });
  assertEquals(f.byteLength, HEADER_LENGTH + 3);
  assertEquals([...f], [0, 0, 0, 3, 1, 2, 3, 5, 0x01, 0x01, 0xaa, 0xbb, 0xcc]);
  // The reserved first byte is always zero (data is at most 4 MB).
  assertEquals(f[0], 0);
});

Deno.test("frames over 4 MB are refused on both sides", () => {
  assertThrows(
    () =>
      encodeFrame({
        streamId: 1,
        type: MessageType.request,
        flags: 0,
        data: new Uint8Array(MAX_DATA_LENGTH + 1),
      }),
    FrameError,
    "limit",
  );
  const header = new Uint8Array(HEADER_LENGTH);
  new DataView(header.buffer).setUint32(0, MAX_DATA_LENGTH + 1);
  assertThrows(() => new FrameDecoder().push(header), FrameError, "over the");
  assertThrows(
    () => encodeFrame({ streamId: -1, type: 1, flags: 0, data: new Uint8Array() }),
    FrameError,
    "uint32",
  );
});

Deno.test("the decoder reassembles frames split at any byte and several in one chunk", () => {
  const a = encodeFrame({ streamId: 1, type: 1, flags: 0, data: new Uint8Array([1, 2, 3, 4]) });
  const b = encodeFrame({ streamId: 3, type: 3, flags: Flags.noData | 1, data: new Uint8Array() });
  const all = new Uint8Array([...a, ...b]);
  for (let cut = 0; cut <= all.byteLength; cut++) {
    const d = new FrameDecoder();
    const frames = [...d.push(all.slice(0, cut)), ...d.push(all.slice(cut))];
    assertEquals(frames.map((f) => [f.streamId, f.type, f.flags, [...f.data]]), [
      [1, 1, 0, [1, 2, 3, 4]],
      [3, 3, 5, []],
    ]);
    assertEquals(d.pending, 0);
  }
});

Deno.test("task API messages round-trip through protobuf", () => {
  const req = {
    id: "task-1",
    bundle: "/run/b",
    rootfs: [{
      type: "overlay",
      source: "overlay",
      target: "",
      options: ["lowerdir=/a:/b", "upperdir=/u", "workdir=/w"],
    }],
    terminal: false,
    stdin: "",
    stdout: "/fifo/out",
    stderr: "/fifo/err",
    checkpoint: "",
    parent_checkpoint: "",
    options: packAny("containerd.events.TaskOOM", { container_id: "x" }),
  };
  const bytes = encodeMessage("containerd.task.v2.CreateTaskRequest", req);
  const back = decodeMessage("containerd.task.v2.CreateTaskRequest", bytes);
  assertEquals(back.rootfs, req.rootfs);
  assertEquals(back.stdout, "/fifo/out");
  assertEquals(back.options.type_url, "containerd.events.TaskOOM");
  assertEquals(decodeMessage("containerd.events.TaskOOM", back.options.value), {
    container_id: "x",
  });
  const when = new Date("2026-01-02T03:04:05.678Z");
  const state = decodeMessage(
    "containerd.task.v2.StateResponse",
    encodeMessage("containerd.task.v2.StateResponse", {
      id: "t",
      status: 3,
      exit_status: 137,
      exited_at: timestamp(when),
    }),
  );
  assertEquals(state.status, 3);
  assertEquals(state.exit_status, 137);
  assertEquals(state.exited_at, { seconds: 1767323045, nanos: 678000000 });
});

Deno.test("a message with a wrongly typed field is refused, naming the field", () => {
  assertThrows(
    () => encodeMessage("containerd.task.v2.KillRequest", { signal: "TERM" }),
    Error,
    "signal",
  );
});

Deno.test("the generated descriptor matches the vendored .proto files", async () => {
  const text = JSON.stringify(compileShimProtos(), null, 1) + "\n";
  const file = new URL("../../src/shim/proto/descriptors.json", import.meta.url);
  assertEquals(await Deno.readTextFile(file), text, "run 'deno task shim-proto'");
});

async function withServer(
  handlers: Map<string, Handler>,
  fn: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ovm-ttrpc-" });
  const path = join(dir, "s.sock");
  const listener = Deno.listen({ transport: "unix", path });
  const ac = new AbortController();
  const served = serveTtrpc(listener, handlers, { signal: ac.signal });
  try {
    await fn(path);
  } finally {
    ac.abort();
    await served;
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("unary calls run concurrently on odd stream ids and errors carry their gRPC status", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const handlers = new Map<string, Handler>([
    ["containerd.task.v2.Task/Wait", async (p) => {
      const req = decodeMessage("containerd.task.v2.WaitRequest", p);
      await gate;
      return encodeMessage("containerd.task.v2.WaitResponse", {
        exit_status: req.id === "a" ? 7 : 0,
      });
    }],
    ["containerd.task.v2.Task/Kill", (p) => {
      release();
      const req = decodeMessage("containerd.task.v2.KillRequest", p);
      if (req.signal === 0) throw new TtrpcError(Code.invalidArgument, "signal 0");
      return Promise.resolve(encodeMessage("google.protobuf.Empty", {}));
    }],
  ]);
  await withServer(handlers, async (path) => {
    using c = await TtrpcClient.connect(`unix://${path}`);
    const wait = c.call(
      "containerd.task.v2.Task",
      "Wait",
      encodeMessage("containerd.task.v2.WaitRequest", { id: "a" }),
    );
    // Wait is still blocked: Kill must get through on the same connection.
    await c.call(
      "containerd.task.v2.Task",
      "Kill",
      encodeMessage("containerd.task.v2.KillRequest", { id: "a", signal: 9 }),
    );
    const res = decodeMessage("containerd.task.v2.WaitResponse", await wait);
    assertEquals(res.exit_status, 7);
    const err = await assertRejects(
      () =>
        c.call(
          "containerd.task.v2.Task",
          "Kill",
          encodeMessage("containerd.task.v2.KillRequest", { id: "a", signal: 0 }),
        ),
      TtrpcError,
      "signal 0",
    );
    assertEquals(err.status, Code.invalidArgument);
    const un = await assertRejects(
      () => c.call("containerd.task.v2.Task", "Exec", new Uint8Array()),
      TtrpcError,
      "not implemented",
    );
    assertEquals(un.status, Code.unimplemented);
  });
});

Deno.test("a server drops a connection that uses an even (server-side) stream id", async () => {
  await withServer(new Map(), async (path) => {
    const conn = await Deno.connect({ transport: "unix", path });
    const data = encodeMessage("ttrpc.Request", { service: "s", method: "m" });
    await conn.write(encodeFrame({ streamId: 2, type: MessageType.request, flags: 0, data }));
    const n = await conn.read(new Uint8Array(64));
    assertEquals(n, null);
    conn.close();
  });
});

Deno.test("data frames on a unary server get an unimplemented response on their stream", async () => {
  await withServer(new Map(), async (path) => {
    const conn = await Deno.connect({ transport: "unix", path });
    await conn.write(
      encodeFrame({
        streamId: 5,
        type: MessageType.data,
        flags: Flags.remoteClosed,
        data: new Uint8Array(),
      }),
    );
    const d = new FrameDecoder();
    const buf = new Uint8Array(1024);
    let frames: ReturnType<FrameDecoder["push"]> = [];
    while (!frames.length) {
      const n = await conn.read(buf);
      assert(n !== null);
      frames = d.push(buf.subarray(0, n));
    }
    assertEquals(frames[0].streamId, 5);
    assertEquals(frames[0].type, MessageType.response);
    assertEquals(decodeMessage("ttrpc.Response", frames[0].data).status.code, Code.unimplemented);
    conn.close();
  });
});
