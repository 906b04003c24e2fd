/**
 * ovms-init's `resolve_user`, cut out of `initrd/ovms-init.sh` and run by the
 * same busybox sh the initrd runs, against an image root's /etc/passwd and
 * /etc/group: the uid, gid, HOME and supplementary groups it picks are the
 * ones runc gives a podman or docker container of that image.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../_helpers/cli.ts";

const INIT = new URL("../../initrd/ovms-init.sh", import.meta.url);

/** The text of `resolve_user() { ... }` in ovms-init.sh. */
async function resolveUserFunction(): Promise<string> {
  const text = await Deno.readTextFile(INIT);
  const m = /^resolve_user\(\) \{\n[\s\S]*?^\}\n/m.exec(text);
  if (!m) throw new Error("ovms-init.sh has no resolve_user() function");
  return m[0];
}

async function resolveUser(root: string, spec: string): Promise<string> {
  const script = `${await resolveUserFunction()}
ROOT=$1
if resolve_user "$2"; then echo "$UID_:$GID_:$HOMEDIR:$SUPP_USER"; else echo "error: $RU_ERR"; fi
`;
  const out = await new Deno.Command("busybox", {
    args: ["sh", "-c", script, "sh", root, spec],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.ok(out.success, dec.decode(out.stderr));
  return dec.decode(out.stdout).trim();
}

Deno.test("ovms-init resolves a user as runc does: names from /etc/passwd, a uid without a line gets gid 0, supplementary groups only without an explicit group", async () => {
  await using tmp = await tempDir();
  await Deno.mkdir(join(tmp.path, "etc"));
  await Deno.writeTextFile(
    join(tmp.path, "etc/passwd"),
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\nnohome:x:1002:1002::::\n",
  );
  await Deno.writeTextFile(
    join(tmp.path, "etc/group"),
    "root:x:0:\napp:x:1001:\nstaff:x:50:\nextra:x:3000:other,app\nnot:x:3001:apple\n",
  );
  const cases: [string, string][] = [
    // uid:gid:HOME:the passwd name whose supplementary groups apply (none: empty)
    ["app", "1000:1001:/home/app:app"],
    ["app:staff", "1000:50:/home/app:"],
    ["app:7", "1000:7:/home/app:"],
    ["1000", "1000:1001:/home/app:app"],
    ["1000:50", "1000:50:/home/app:"],
    // Not in /etc/passwd: gid 0 and HOME=/ (runc's defaults), not gid = uid.
    ["4321", "4321:0:/:"],
    ["4321:4321", "4321:4321:/:"],
    ["4321:staff", "4321:50:/:"],
    ["0", "0:0:/root:"],
    ["nohome", "1002:1002:/:"],
    ["ghost", `error: user "ghost" not found in the image's /etc/passwd`],
    ["app:ghosts", `error: group "ghosts" not found in the image's /etc/group`],
  ];
  for (const [spec, want] of cases) {
    assert.equal(await resolveUser(tmp.path, spec), want, `user "${spec}"`);
  }
});
