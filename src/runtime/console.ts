/**
 * @module
 * The guest's serial console log as the runtime reads it: followed for
 * `ovm logs -f` and the API's log stream, and read for how the guest ended
 * (`OVMS-EXIT: <code>` from ovms-init, the kernel's power-down line).
 */
import { tailLines } from "../util/fs.ts";

/** The workload's exit code from the console (`OVMS-EXIT: <code>`), if it printed one. */
export async function consoleExitCode(consoleLog: string): Promise<number | undefined> {
  const text = await tailLines(consoleLog, 50);
  const all = [...text.matchAll(/^OVMS-EXIT: (\d+)\s*$/gm)];
  return all.length ? Number(all[all.length - 1][1]) : undefined;
}

/** True when the console shows the guest powering off (or rebooting, which ends the VM). */
export async function guestPoweredOff(consoleLog: string): Promise<boolean> {
  const text = await tailLines(consoleLog, 30);
  return /OVMS-EXIT: \d+|reboot: Power down|reboot: Restarting system/.test(text);
}

/** Streams the console log from `offset`, calling `write` with new bytes until `until()` says stop. */
export async function followConsole(
  path: string,
  write: (chunk: Uint8Array) => void,
  options: { offset?: number; until: () => Promise<boolean> | boolean; signal?: AbortSignal },
): Promise<number> {
  let offset = options.offset ?? 0;
  const buf = new Uint8Array(64 * 1024);
  const drain = async () => {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(path, { read: true });
    } catch {
      return;
    }
    try {
      await f.seek(offset, Deno.SeekMode.Start);
      while (true) {
        const n = await f.read(buf);
        if (n === null || n === 0) break;
        write(buf.slice(0, n));
        offset += n;
      }
    } finally {
      f.close();
    }
  };
  while (true) {
    await drain();
    if (options.signal?.aborted || (await options.until())) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await drain();
  return offset;
}
