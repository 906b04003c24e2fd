/**
 * @module
 * A guest for the bridge-networking tests and benches: busybox httpd on
 * port 80 (`/` says hello, `/cgi-bin/id` answers "hostname MAC address"),
 * plus a probe loop that fetches every `host[:port]` in `$TARGETS` once a
 * second and prints `reach <target> ok` for each that says hello.
 */
import { join } from "node:path";
import { pack } from "../../src/cli/pack.ts";
import { buildDemoDisks } from "../../examples/demo/build.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { ensureSystem, initCmdline } from "../../src/system/mod.ts";
import { killAll } from "./runtime.ts";
import { dropTemplates } from "./snapshot.ts";
import { TEST_CACHE } from "./vm.ts";

export const WEB_TAG = "test/web:1";

/** `/cgi-bin/id`: asked at request time, so a restored clone answers with its new identity. */
const ID_CGI = [
  "#!/bin/sh",
  'echo "Content-Type: text/plain"',
  "echo",
  `echo "$(hostname) $(cat /sys/class/net/eth0/address) $(ip -4 -o addr show dev eth0 | awk '{print $4}')"`,
  "",
].join("\n");

export const WEB_SCRIPT = [
  "#!/bin/sh",
  'echo "hello from the guest" >/www/index.html',
  "httpd -p 80 -h /www",
  `echo "guest eth0: $(ip -4 -o addr show dev eth0 | awk '{print $4}') $(cat /sys/class/net/eth0/address)"`,
  // busybox wget crashes in this static build; nc speaks HTTP/1.0 well enough.
  "while true; do",
  "  for t in $TARGETS; do",
  "    h=${t%:*} p=${t##*:}",
  '    [ "$p" = "$t" ] && p=80',
  `    printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 "$h" "$p" 2>/dev/null | grep -q '^hello' && echo "reach $t ok"`,
  "  done",
  "  sleep 1",
  "done",
  "",
].join("\n");

export interface WebHome extends AsyncDisposable {
  home: string;
  ref: string;
  store: ContentStore;
}

/** A temp home with the web artifact; dispose kills its VMs and removes it. */
export async function webHome(): Promise<WebHome> {
  const home = await Deno.makeTempDir({ prefix: "ovm-net-test-" });
  const work = await Deno.makeTempDir({ prefix: "ovm-net-build-" });
  try {
    const system = await ensureSystem(home, { cacheDir: TEST_CACHE });
    const disks = await buildDemoDisks(work, {
      diffFiles: { "web.sh": WEB_SCRIPT, "www/cgi-bin/id": ID_CGI, "www/index.html": "" },
    });
    const bootstrap = join(work, "bootstrap.json");
    await Deno.writeTextFile(bootstrap, JSON.stringify({ cmd: ["/bin/sh", "/web.sh"] }));
    const store = await ContentStore.open(home);
    const res = await pack(store, {
      kernel: system.kernel.path,
      initrd: system.initrd.path,
      disks: [{ path: disks.base, format: "qcow2" }, { path: disks.diff, format: "qcow2" }],
      args: initCmdline({ root: "/dev/vda", rootFs: "ext4", rootMode: "rw", mode: "exec" }),
      devices: [],
      bootstrap,
      tag: WEB_TAG,
      preferredRuntime: ["qemu"],
    });
    return {
      home,
      ref: res.ref,
      store,
      async [Symbol.asyncDispose]() {
        await killAll(home);
        await dropTemplates(store);
        await Deno.remove(home, { recursive: true }).catch(() => {});
      },
    };
  } catch (e) {
    await Deno.remove(home, { recursive: true }).catch(() => {});
    throw e;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
