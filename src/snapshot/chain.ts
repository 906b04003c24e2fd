/**
 * @module
 * Chains of RAM layers: a full ramsnap (the base) and diff layers on it, base
 * first, as a snapshot of a restored VM lists them. {@linkcode checkRamChain}
 * reads every layer's header and range list and refuses a chain that cannot
 * be applied — a layer missing, a diff on another base, a loop, another
 * guest memory size or machine, a truncated or corrupt layer — naming the
 * layer, before anything is written. {@linkcode buildRamChain} then decodes
 * the base (or starts from an already built prefix) and overlays the diffs
 * in order: the result is one memory file and the top layer's device state,
 * which a restore maps exactly like the template of a flat snapshot.
 *
 * Spec: `spec/ovms-v0.1.md` section 8.6.
 */
import { NotFoundError, ValidationError } from "../errors.ts";
import { decodeRamsnap, type RamsnapHeader, readRamsnapLayout } from "./ramsnap.ts";
import { applyRamDiff, type RamDiffLayout, readRamDiff } from "./ramdiff.ts";
import { sparseCopy } from "./sparse_copy.ts";

/** Most layers a chain may have; a snapshot that would exceed it is flattened (spec 8.6). */
export const MAX_RAM_LAYERS = 8;

/** Longest chain a reader accepts (chains written by others may be deeper than ovm writes). */
const MAX_READ_LAYERS = 64;

/** One layer of a chain: its digest and the blob file. */
export interface RamLayerFile {
  digest: string;
  path: string;
}

export interface CheckedRamChain {
  layers: RamLayerFile[];
  base: RamsnapHeader;
  diffs: RamDiffLayout[];
  memoryBytes: number;
}

function layerError(i: number, n: number, digest: string, e: unknown): never {
  const what = `RAM layer ${i + 1} of ${n} (${digest})`;
  if (e instanceof NotFoundError) {
    throw new NotFoundError(`${what} is not in the store`, { cause: e, hint: e.hint });
  }
  const err = e as Error & { hint?: string };
  throw new ValidationError(`${what}: ${err.message}`, { cause: e, hint: err.hint });
}

/**
 * Checks that `layers` form one chain for a guest of `expect.memoryBytes`
 * (and, when given, machine `expect.machine`, as the layers' restore records
 * name it). Writes nothing.
 */
export async function checkRamChain(
  layers: RamLayerFile[],
  expect: { memoryBytes: number; machine?: string; deviceStateLimit: number },
): Promise<CheckedRamChain> {
  const n = layers.length;
  if (n === 0) throw new ValidationError("The RAM layer chain is empty");
  if (n > MAX_READ_LAYERS) {
    throw new ValidationError(`The RAM layer chain has ${n} layers, more than ${MAX_READ_LAYERS}`);
  }
  const seen = new Map<string, number>();
  for (const [i, l] of layers.entries()) {
    const j = seen.get(l.digest);
    if (j !== undefined) {
      throw new ValidationError(
        `The RAM layer chain has a loop: layer ${i + 1} (${l.digest}) is also layer ${j + 1}`,
        { hint: "a layer cannot be its own base; pull or create the snapshot again" },
      );
    }
    seen.set(l.digest, i);
  }
  for (const [i, l] of layers.entries()) {
    try {
      await Deno.stat(l.path);
    } catch (e) {
      layerError(i, n, l.digest, new NotFoundError(`"${l.path}" is missing`, { cause: e }));
    }
  }
  let base: RamsnapHeader;
  try {
    base = (await readRamsnapLayout(layers[0].path)).header;
    const mem = base.sections.find((s) => s.name === "memory");
    if (!mem || mem.size !== expect.memoryBytes) {
      throw new ValidationError(
        `its memory section is ${mem?.size ?? "missing"} bytes, the snapshot declares ` +
          `${expect.memoryBytes}`,
        { hint: "the layers belong to different snapshots; pull the snapshot again" },
      );
    }
    const ds = base.sections.find((s) => s.name === "device-state");
    if ((ds?.size ?? 0) > expect.deviceStateLimit) {
      throw new ValidationError(`its device state declares ${ds?.size} bytes`);
    }
    checkMachine(base, expect.machine);
  } catch (e) {
    return layerError(0, n, layers[0].digest, e);
  }
  const diffs: RamDiffLayout[] = [];
  for (let i = 1; i < n; i++) {
    try {
      const d = await readRamDiff(layers[i].path, {
        memoryBytes: expect.memoryBytes,
        base: layers[i - 1].digest,
      });
      checkMachine(d.header, expect.machine);
      diffs.push(d);
    } catch (e) {
      layerError(i, n, layers[i].digest, e);
    }
  }
  return { layers, base, diffs, memoryBytes: expect.memoryBytes };
}

function checkMachine(h: RamsnapHeader, machine?: string): void {
  const rec = (h.metadata?.restore ?? {}) as { machine?: unknown };
  if (machine !== undefined && rec.machine !== undefined && rec.machine !== machine) {
    throw new ValidationError(
      `it was taken on machine type "${rec.machine}", the snapshot is for "${machine}"`,
      { hint: "the layers belong to different snapshots; pull the snapshot again" },
    );
  }
}

/**
 * Builds the memory file and device state of a checked chain into
 * `targets` (new files). `from` starts from the built memory of a prefix of
 * the chain (`from.layers` layers, e.g. a cached template) instead of
 * decoding the base. Leaves no output when it fails.
 */
export async function buildRamChain(
  chain: CheckedRamChain,
  targets: { memory: string; deviceState: string; work: string },
  options: {
    from?: { layers: number; memory: string; deviceState: string };
    deviceStateLimit: number;
    signal?: AbortSignal;
  },
): Promise<void> {
  const n = chain.layers.length;
  try {
    let next = 1;
    const from = options.from;
    if (from && from.layers >= 1 && from.layers <= n) {
      await sparseCopy(from.memory, targets.memory, chain.memoryBytes, { signal: options.signal });
      await Deno.copyFile(from.deviceState, targets.deviceState);
      next = from.layers;
    } else {
      try {
        await decodeRamsnap(chain.layers[0].path, {
          memory: targets.memory,
          "device-state": targets.deviceState,
        }, {
          limits: { memory: chain.memoryBytes, "device-state": options.deviceStateLimit },
          signal: options.signal,
        });
      } catch (e) {
        layerError(0, n, chain.layers[0].digest, e);
      }
    }
    for (let i = next; i < n; i++) {
      try {
        await applyRamDiff(chain.layers[i].path, chain.diffs[i - 1], targets, {
          signal: options.signal,
        });
      } catch (e) {
        layerError(i, n, chain.layers[i].digest, e);
      }
    }
  } catch (e) {
    await Deno.remove(targets.memory).catch(() => {});
    await Deno.remove(targets.deviceState).catch(() => {});
    throw e;
  }
}
