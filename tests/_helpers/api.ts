/**
 * @module
 * Helpers for the API tests: an in-process server on a temp socket, `ovm
 * serve` as its own process (to SIGKILL and restart it), and a client that
 * checks every response it receives against spec/api/ovms-runtime.openapi.yaml.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type ApiServer,
  Controller,
  createHandler,
  listen,
  OvmsClient,
  ResponseValidator,
  socketLive,
} from "../../src/api/mod.ts";
import { ContentStore } from "../../src/store/mod.ts";

export const OPENAPI_FILE = new URL("../../spec/api/ovms-runtime.openapi.yaml", import.meta.url)
  .pathname;

let validator: ResponseValidator | undefined;
export async function specValidator(): Promise<ResponseValidator> {
  return validator ??= ResponseValidator.fromYaml(await Deno.readTextFile(OPENAPI_FILE));
}

/** A short socket path of its own (sun_path is 108 bytes; temp dirs can be long). */
export async function tempSocketDir(): Promise<string> {
  return await Deno.makeTempDir({ dir: "/tmp", prefix: "ovm-api-" });
}

export interface Exchange {
  status: number;
  type: string | null;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** A client whose every response is checked against the OpenAPI document. */
export class CheckedClient implements Disposable {
  readonly client: OvmsClient;
  readonly #v: ResponseValidator;

  constructor(socket: string, v: ResponseValidator) {
    this.client = new OvmsClient({ socket });
    this.#v = v;
  }

  async call(
    method: string,
    path: string,
    body?: unknown,
    init: { raw?: BodyInit; headers?: HeadersInit } = {},
  ): Promise<Exchange> {
    const res = await this.client.request(method, path, {
      body: init.raw ?? (body === undefined ? undefined : JSON.stringify(body)),
      headers: init.headers ??
        (body === undefined && init.raw === undefined
          ? undefined
          : { "content-type": "application/json" }),
    });
    const type = res.headers.get("content-type");
    const text = await res.text();
    const parsed = type?.startsWith("application/x-ndjson")
      ? text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l))
      : JSON.parse(text);
    assert.deepEqual(this.#v.check(method, path, res.status, type, parsed), []);
    return { status: res.status, type, body: parsed };
  }

  [Symbol.dispose](): void {
    this.client.close();
  }
}

/** An in-process server over a temp home's store. */
export interface TestServer extends AsyncDisposable {
  socket: string;
  server: ApiServer;
  controller: Controller;
}

export async function startServer(home: string, socket: string): Promise<TestServer> {
  const store = await ContentStore.open(home);
  const controller = new Controller(store);
  const server = await listen(createHandler(controller), { path: socket });
  return {
    socket,
    server,
    controller,
    async [Symbol.asyncDispose]() {
      controller.close();
      await server.shutdown();
    },
  };
}

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** `ovm serve` as its own process; disposing SIGKILLs it if it still runs. */
export interface ServeProcess extends AsyncDisposable {
  child: Deno.ChildProcess;
  stderr(): string;
  /** Sends a signal and waits for the exit code. */
  stop(signal: Deno.Signal): Promise<number>;
}

export async function serveProcess(
  home: string,
  socket: string,
  ...extra: string[]
): Promise<ServeProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "serve", "--home", home, "--socket", socket, ...extra],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let err = "";
  const reading = (async () => {
    const dec = new TextDecoder();
    for await (const c of child.stderr) err += dec.decode(c, { stream: true });
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const deadline = Date.now() + 30_000;
  while (!(await socketLive(socket))) {
    if (exited || Date.now() > deadline) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await status;
      await reading;
      throw new Error(`ovm serve did not come up: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    stderr: () => err,
    async stop(signal) {
      if (!exited) child.kill(signal);
      const s = await status;
      await reading;
      return s.code;
    },
    async [Symbol.asyncDispose]() {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await status;
      await reading.catch(() => {});
    },
  };
}

export function socketIn(dir: string): string {
  return join(dir, "ovm.sock");
}
