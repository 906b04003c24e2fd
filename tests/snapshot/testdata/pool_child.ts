// Fills a warm pool of one VM for a snapshot, says so, and waits to be killed
// (the test SIGKILLs it to leave an orphaned pooled QEMU behind).
import { WarmPool } from "../../../src/runtime/mod.ts";

const [home, ref] = Deno.args;
const pool = new WarmPool(home, { size: 1 });
await pool.fill(ref);
console.log("ready");
await new Promise(() => {});
