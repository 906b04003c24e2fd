/**
 * @module
 * Snapshot chains in the runtime (spec 8.6): the RAM of a snapshot of a
 * restored VM becomes a diff layer over the RAM layers of the snapshot it
 * was restored from, and a restore of such a chain builds its memory
 * template from the layers (decode the base, overlay the diffs) once, cached
 * under the top layer's digest — which pins the whole chain, since every
 * diff layer names its base by digest — so a restore of a cached chain costs
 * what a flat one does.
 */
import { join } from "node:path";
import { NotFoundError, ValidationError } from "../errors.ts";
import type { Digest } from "../manifest/mod.ts";
import { type Artifact, type ContentStore, ramLayers } from "../store/mod.ts";
import {
  buildRamChain,
  type CheckedRamChain,
  checkRamChain,
  encodeRamDiff,
  encodeRamsnap,
  MAX_RAM_LAYERS,
  sparseCopy,
  writeRanges,
} from "../snapshot/mod.ts";
import { MAX_DEVICE_STATE, type SnapshotFiles } from "../vmm/mod.ts";
import { exists } from "../util/fs.ts";

export { MAX_RAM_LAYERS };

/** OCI manifest annotation naming the snapshot a chained snapshot was taken from. */
export const PARENT_ANNOTATION = "ovms.snapshot.parent";

const CHECKED = new Map<string, CheckedRamChain>();

/**
 * Checks every RAM layer of a chained snapshot artifact (present, one chain,
 * this memory size and machine), naming the bad layer; writes nothing.
 */
export async function checkArtifactChain(
  store: ContentStore,
  artifact: Artifact,
  expect: { memoryBytes: number; machine: string },
): Promise<CheckedRamChain> {
  const layers = ramLayers(artifact.manifest);
  const key = `${store.root}\0${layers.join(",")}\0${expect.memoryBytes}\0${expect.machine}`;
  const known = CHECKED.get(key);
  if (known) return known;
  for (const [i, d] of layers.entries()) {
    if (!(await store.has(d))) {
      throw new NotFoundError(
        `RAM layer ${i + 1} of ${layers.length} (${d}) is not in the store`,
        { hint: "pull the snapshot again with 'ovm pull' (it fetches every layer)" },
      );
    }
  }
  const checked = await checkRamChain(
    layers.map((d) => ({ digest: d, path: store.blobPath(d as Digest) })),
    { ...expect, deviceStateLimit: MAX_DEVICE_STATE },
  );
  CHECKED.set(key, checked);
  if (CHECKED.size > 64) CHECKED.delete(CHECKED.keys().next().value!);
  return checked;
}

/**
 * Builds the template of a checked chain into `tmp` (a fresh directory in
 * the cache): from the longest prefix whose template is already cached, else
 * from the base.
 */
export async function buildChainTemplate(
  chain: CheckedRamChain,
  tmp: string,
  options: { cache: string; signal?: AbortSignal },
): Promise<void> {
  let from: { layers: number; memory: string; deviceState: string } | undefined;
  for (let k = chain.layers.length - 1; k >= 1 && !from; k--) {
    const dir = join(options.cache, chain.layers[k - 1].digest.slice(7));
    const memory = join(dir, "memory");
    const deviceState = join(dir, "device-state");
    if (await exists(memory) && await exists(deviceState)) {
      from = { layers: k, memory, deviceState };
    }
  }
  await buildRamChain(chain, {
    memory: join(tmp, "memory"),
    deviceState: join(tmp, "device-state"),
    work: tmp,
  }, { from, deviceStateLimit: MAX_DEVICE_STATE, signal: options.signal });
}

/** What a chained snapshot's RAM became: the new layer's blob stream and the layer list. */
export interface ChainedRam {
  /** The layers the new snapshot lists, base first, without the new one (empty: flattened). */
  below: string[];
  /** Whether the new layer is a full ramsnap (the chain would exceed {@linkcode MAX_RAM_LAYERS}). */
  flattened: boolean;
  stream: ReadableStream<Uint8Array>;
}

/**
 * Turns what the adapter captured of a restored VM (`files.diff`) into the new
 * snapshot's template in `template` (the parent's memory with the changed
 * pages written over it, and the new device state) and the new RAM layer: a
 * diff over `parent`'s layers, or — when that would make the chain longer
 * than {@linkcode MAX_RAM_LAYERS} — a full ramsnap of the new template.
 */
export async function chainedRam(
  parent: Artifact,
  files: SnapshotFiles & { diff: NonNullable<SnapshotFiles["diff"]> },
  options: {
    template: string;
    work: string;
    memoryBytes: number;
    metadata: Record<string, unknown>;
    signal?: AbortSignal;
  },
): Promise<ChainedRam> {
  const below = ramLayers(parent.manifest);
  const parentTop = parent.manifest.ramSnapshot?.ref;
  if (!parentTop) {
    throw new ValidationError("The instance's artifact has no RAM snapshot to chain onto");
  }
  const parentMemory = files.memory;
  if (!(await exists(parentMemory))) {
    throw new NotFoundError(`The template "${parentMemory}" the VM was restored from is gone`, {
      hint: "restore the snapshot again (its template is rebuilt) and snapshot that VM",
    });
  }
  const memory = join(options.template, "memory");
  await sparseCopy(parentMemory, memory, options.memoryBytes, { signal: options.signal });
  await writeRanges(files.diff.pages, files.diff.ranges, memory, { signal: options.signal });
  await Deno.copyFile(files.deviceState, join(options.template, "device-state"));
  if (below.length + 1 > MAX_RAM_LAYERS) {
    const deviceStateBytes = (await Deno.stat(files.deviceState)).size;
    return {
      below: [],
      flattened: true,
      stream: encodeRamsnap([
        { name: "memory", path: memory, size: options.memoryBytes },
        {
          name: "device-state",
          path: join(options.template, "device-state"),
          size: deviceStateBytes,
        },
      ], { metadata: options.metadata, signal: options.signal }),
    };
  }
  return {
    below,
    flattened: false,
    stream: await encodeRamDiff({
      ranges: files.diff.ranges,
      pages: files.diff.pages,
      deviceState: files.deviceState,
      work: options.work,
    }, {
      base: parentTop,
      memoryBytes: options.memoryBytes,
      metadata: options.metadata,
      signal: options.signal,
    }),
  };
}
