/**
 * @module
 * The persistent record of ovm's networks and address leases:
 * `$OVM_HOME/networks/state.json`, changed only under the exclusive lock
 * `$OVM_HOME/networks/lock`, written temp → fsync → rename → fsync(dir).
 * A lease is written before anything is created for it and removed after
 * everything made for it is gone, so an address is never handed out twice —
 * not even across a kill -9 — and every leftover has a record naming it.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { join } from "node:path";
import { z } from "zod";
import { ValidationError } from "../errors.ts";
import { homePaths } from "../store/mod.ts";
import { writeJsonAtomic } from "../util/fs.ts";

export const NETWORK_NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
/** Linux interface names: at most 15 bytes, no '/', ':' or whitespace. */
export const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

const PublishSchema = z.object({
  hostIp: z.string(),
  hostPort: z.number().int(),
  guestPort: z.number().int(),
  protocol: z.enum(["tcp", "udp"]),
});

export const NetworkRecordSchema = z.object({
  name: z.string().regex(NETWORK_NAME_RE),
  bridge: z.string().regex(IFNAME_RE),
  /** `a.b.c.d/N`. */
  subnet: z.string(),
  /** The bridge's own address: the guests' gateway. */
  gateway: z.string(),
  /** Guests on this network cannot reach each other (bridge port isolation). */
  isolate: z.boolean(),
  /** Outbound NAT through the host. */
  nat: z.boolean(),
  createdAt: z.string(),
});
export type NetworkRecord = z.infer<typeof NetworkRecordSchema>;

export const LeaseSchema = z.object({
  network: z.string(),
  address: z.string(),
  /** The instance that owns the address. */
  instance: z.string(),
  nic: z.number().int().nonnegative(),
  mac: z.string(),
  tap: z.string().regex(IFNAME_RE),
  publish: z.array(PublishSchema),
  createdAt: z.string(),
});
export type Lease = z.infer<typeof LeaseSchema>;

export const NetStateSchema = z.object({
  schemaVersion: z.literal(1),
  networks: z.array(NetworkRecordSchema),
  leases: z.array(LeaseSchema),
});
export type NetState = z.infer<typeof NetStateSchema>;

export function netPaths(home: string) {
  const dir = join(homePaths(home).home, "networks");
  return { dir, state: join(dir, "state.json"), lock: join(dir, "lock") };
}

async function readState(path: string): Promise<NetState> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { schemaVersion: 1, networks: [], leases: [] };
    throw e;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ValidationError(`The network state "${path}" is not JSON`, {
      cause: e,
      hint: "restore it from a backup, or remove it and run 'ovm network prune'",
    });
  }
  const parsed = NetStateSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ValidationError(`The network state "${path}" is invalid: ${parsed.error.message}`, {
      hint: "restore it from a backup, or remove it and run 'ovm network prune'",
    });
  }
  return parsed.data;
}

/** Reads the state without the lock (a consistent snapshot: the file is replaced atomically). */
export async function peekState(home: string): Promise<NetState> {
  return await readState(netPaths(home).state);
}

/** The lock this call chain holds, per state file: a nested {@linkcode withState} joins it. */
const held = new AsyncLocalStorage<
  Map<string, { state: NetState; save: () => Promise<void> }>
>();

/**
 * Runs `fn` with the state under the exclusive lock. `fn` gets a `save`
 * that makes the current value durable before it returns, so `fn` can
 * record intent before it touches the host and record the result after.
 *
 * Reentrant within one call chain: `ovm gc` asks, under the lock, whether
 * each leased instance still runs, and looking at an instance whose VM died
 * detaches it, which takes the lock again. A second `flock` on a new open
 * file description would wait for the first forever; the nested call
 * shares the held lock and the same in-memory state instead.
 */
export async function withState<T>(
  home: string,
  fn: (state: NetState, save: () => Promise<void>) => Promise<T>,
): Promise<T> {
  const p = netPaths(home);
  const outer = held.getStore()?.get(p.state);
  if (outer) return await fn(outer.state, outer.save);
  await Deno.mkdir(p.dir, { recursive: true, mode: 0o700 });
  using lock = await Deno.open(p.lock, { read: true, write: true, create: true });
  await lock.lock(true);
  const state = await readState(p.state);
  const save = () => writeJsonAtomic(p.state, state, { mode: 0o600 });
  const mine = new Map(held.getStore() ?? []).set(p.state, { state, save });
  return await held.run(mine, () => fn(state, save));
}
