/**
 * @module
 * `POST /inject`: bytes written into an ivshmem region of a running instance.
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import type { InstanceState } from "../runtime/mod.ts";
import type { InjectResponse } from "./schemas.ts";

/** Writes `data` at `offset` of the instance's device `device` (its host file). */
export async function inject(
  state: InstanceState,
  a: { device: string; offset: number; data: Uint8Array },
): Promise<InjectResponse> {
  const dev = state.devices.find((d) => d.name === a.device);
  if (!dev || !dev.hostPath) {
    throw new NotFoundError(`Instance "${state.id}" has no device "${a.device}"`, {
      hint: `its devices: ${state.devices.map((d) => d.name).join(", ") || "none"}`,
    });
  }
  if (a.offset + a.data.byteLength > dev.size) {
    throw new ValidationError(
      `Writing ${a.data.byteLength} bytes at offset ${a.offset} overflows device "${a.device}" (${dev.size} bytes)`,
      { hint: "keep offset + length within the region" },
    );
  }
  await writeRegion(dev.hostPath, a.offset, a.data);
  return {
    instance_id: state.id,
    device: a.device,
    offset: a.offset,
    bytes_written: a.data.byteLength,
  };
}

/**
 * Writes into an ivshmem region's host file. The file lives in world-writable
 * /dev/shm and belongs to the VMM's uid, so the path is checked to be the same
 * regular file before and after opening (no symlink or swapped file), and
 * never created or truncated.
 */
async function writeRegion(path: string, offset: number, data: Uint8Array): Promise<void> {
  const before = await Deno.lstat(path).catch((e) => {
    throw new ConflictError(`The region file "${path}" is gone`, { cause: e });
  });
  if (!before.isFile) {
    throw new ConflictError(`The region file "${path}" is not a regular file`);
  }
  using f = await Deno.open(path, { write: true });
  const after = await f.stat();
  if (after.ino !== before.ino || after.dev !== before.dev || !after.isFile) {
    throw new ConflictError(`The region file "${path}" changed while opening it`);
  }
  if (offset + data.byteLength > after.size) {
    throw new ValidationError(`The region file "${path}" is smaller than the write`);
  }
  await f.seek(offset, Deno.SeekMode.Start);
  let off = 0;
  while (off < data.byteLength) off += await f.write(data.subarray(off));
}
