/**
 * The image config → bootstrap config mapping and the `ovm run` override
 * rules (Docker's): a new entrypoint drops cmd, trailing args replace cmd,
 * --env adds, replaces or unsets one variable.
 */
import nodeAssert from "node:assert/strict";
import { ValidationError } from "../../src/errors.ts";
import {
  applyOverrides,
  bootstrapFromImage,
  parseEntrypointFlag,
  parseLayoutRef,
  renderUserData,
  renderWrapper,
} from "../../src/convert/mod.ts";

const eq = (a: unknown, b: unknown) => nodeAssert.deepEqual(a, b);

const image = {
  architecture: "amd64",
  os: "linux",
  config: {
    Entrypoint: ["/entry"],
    Cmd: ["a", "b"],
    Env: ["PATH=/bin", "X=1", "BROKEN"],
    WorkingDir: "srv",
    User: "app:staff",
    ExposedPorts: { "80/tcp": {}, "53/udp": {}, "bogus": {} },
    StopSignal: "term",
  },
};

Deno.test("bootstrapFromImage maps Entrypoint, Cmd, Env, WorkingDir, User, ports and stop signal", () => {
  const warnings: string[] = [];
  const c = bootstrapFromImage(image, { warn: (m) => warnings.push(m) });
  eq(c.entrypoint, ["/entry"]);
  eq(c.cmd, ["a", "b"]);
  eq(c.env, ["PATH=/bin", "X=1"]);
  eq(c.workdir, "/srv");
  eq(c.user, "app:staff");
  eq(c.exposedPorts, ["53/udp", "80/tcp"]);
  eq(c.stopSignal, "SIGTERM");
  eq(warnings.length, 2);
});

Deno.test("bootstrapFromImage refuses an image with neither Entrypoint nor Cmd unless allowed", () => {
  nodeAssert.throws(() => bootstrapFromImage({ config: { Env: ["A=1"] } }), ValidationError);
  const c = bootstrapFromImage({ config: null }, { requireCommand: false });
  eq(c.entrypoint, undefined);
  eq(c.cmd, undefined);
});

Deno.test("applyOverrides follows docker run: entrypoint drops cmd, args replace cmd", () => {
  const base = bootstrapFromImage(image, { warn: () => {} });
  eq(applyOverrides(base, { args: ["x"] }).cmd, ["x"]);
  eq(applyOverrides(base, { args: ["x"] }).entrypoint, ["/entry"]);
  const e = applyOverrides(base, { entrypoint: ["/bin/sh", "-c"] });
  eq(e.entrypoint, ["/bin/sh", "-c"]);
  eq(e.cmd, undefined);
  const both = applyOverrides(base, { entrypoint: ["/bin/echo"], args: ["hi"] });
  eq([both.entrypoint, both.cmd], [["/bin/echo"], ["hi"]]);
  const cleared = applyOverrides(base, { entrypoint: [], args: ["/bin/true"] });
  eq([cleared.entrypoint, cleared.cmd], [undefined, ["/bin/true"]]);
  // The input is not changed.
  eq(base.cmd, ["a", "b"]);
});

Deno.test("applyOverrides adds, replaces and unsets environment variables", () => {
  const base = bootstrapFromImage(image, { warn: () => {} });
  const c = applyOverrides(base, { env: ["X=2", "NEW=a=b", "PATH"] });
  eq(c.env, ["X=2", "NEW=a=b"]);
  nodeAssert.throws(() => applyOverrides(base, { env: ["=oops"] }), ValidationError);
});

Deno.test("parseEntrypointFlag takes a JSON array or one program", () => {
  eq(parseEntrypointFlag('["/bin/sh","-c"]'), ["/bin/sh", "-c"]);
  eq(parseEntrypointFlag("/bin/my prog"), ["/bin/my prog"]);
  eq(parseEntrypointFlag(""), []);
  nodeAssert.throws(() => parseEntrypointFlag("[1,2]"), ValidationError);
});

Deno.test("parseLayoutRef splits oci:DIR[:TAG]", () => {
  eq(parseLayoutRef("oci:/a/b:1.0"), { dir: "/a/b", tag: "1.0" });
  eq(parseLayoutRef("oci:./layout"), { dir: "./layout" });
  eq(parseLayoutRef("docker.io/library/alpine:3"), undefined);
});

Deno.test("the cloud-init wrapper quotes every value for sh", () => {
  const c = bootstrapFromImage({
    config: { Cmd: ["/run", "it's"], Env: ["Q=a'b $c"], WorkingDir: "/w", User: "1000" },
  });
  const w = renderWrapper(c);
  nodeAssert.ok(w.includes(`export Q='a'\\''b $c'`), w);
  nodeAssert.ok(w.includes(`runuser -u '1000' -- env "$@" '/run' 'it'\\''s'`), w);
  const ud = renderUserData(c);
  nodeAssert.ok(ud.startsWith("#cloud-config\n"));
});

Deno.test("the cloud-init wrapper runs the workload with its env, workdir and argv", async () => {
  const wd = await Deno.makeTempDir({ prefix: "ovm-wrapper-" });
  try {
    const c = bootstrapFromImage({
      config: {
        Entrypoint: ["/bin/sh", "-c", 'printf "%s|%s|%s|%s\\n" "$1" "$GREETING" "$ODD" "$(pwd)"'],
        Cmd: ["argv0", "it's $HOME"],
        Env: ["GREETING=hi there", "ODD=a'b\nc"],
        WorkingDir: `${wd}/sub dir`,
      },
    });
    const out = await new Deno.Command("sh", {
      args: ["-c", renderWrapper(c)],
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    eq(out.success, true);
    eq(text, `it's $HOME|hi there|a'b\nc|${wd}/sub dir\n`);
  } finally {
    await Deno.remove(wd, { recursive: true });
  }
});
