// Tries to lock 1 MiB; prints the error as JSON (run without CAP_IPC_LOCK and a 0 memlock limit).
import { type ErrnoError, lockFileInMemory } from "../../../ffi/mod.ts";
const path = Deno.args[0];
try {
  using _m = lockFileInMemory(path, 1 << 20);
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  const err = e as ErrnoError;
  console.log(
    JSON.stringify({ ok: false, errno: err.errnoName, message: err.message, hint: err.hint }),
  );
}
