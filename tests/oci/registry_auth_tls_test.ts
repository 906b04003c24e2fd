/**
 * Registries as users run them, each a real docker-registry started here:
 * TLS with a private CA made by openssl (trusted through --ca-file,
 * SSL_CERT_FILE, certs.d/HOST:PORT/ca.crt), htpasswd basic auth, bearer
 * tokens from a token server whose JWTs the registry verifies (scopes
 * enforced by the registry), and credentials from docker's config.json,
 * $DOCKER_CONFIG, $REGISTRY_AUTH_FILE and docker-credential-<name> helpers
 * (small scripts of the test's own, on PATH for that test only). skopeo reads
 * the same CA directory and auth file.
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { ContentStore } from "../../src/store/mod.ts";
import { digestOf } from "../../src/manifest/mod.ts";
import { NotFoundError, OvmError } from "../../src/errors.ts";
import {
  AuthError,
  copyBetween,
  NetworkError,
  pullToStore,
  pushFromStore,
  type RemoteOptions,
  saveCredential,
} from "../../src/oci/mod.ts";
import { assertStoreConsistent, packDummy, startRegistry } from "../_helpers/registry.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";

type Vars = Record<string, string | undefined>;

/** An environment for the library: only these variables, plus the real PATH unless given. */
function envOf(vars: Vars): NonNullable<RemoteOptions["env"]> {
  const all: Vars = { PATH: Deno.env.get("PATH"), ...vars };
  return { get: (k) => all[k] };
}

function basic(user: string, password: string): string {
  return btoa(`${user}:${password}`);
}

async function writeJson(path: string, doc: unknown): Promise<string> {
  await Deno.mkdir(dirname(path), { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(doc));
  return path;
}

async function run(cmd: string, args: string[], env?: Record<string, string>): Promise<string> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

/**
 * Writes `docker-credential-<name>` into `bin`: `get` logs the server URL it
 * read on stdin to `log` and answers from `answers`, else "not found".
 */
async function credentialHelper(
  bin: string,
  name: string,
  answers: Record<string, { Username: string; Secret: string }>,
): Promise<{ log: string }> {
  await Deno.mkdir(bin, { recursive: true });
  const log = join(bin, `${name}.log`);
  const cases = Object.entries(answers).map(([url, a]) =>
    `  '${url}') printf '%s' '${JSON.stringify({ ServerURL: url, ...a })}' ;;`
  ).join("\n");
  const script = `#!/bin/bash
[ "$1" = get ] || { echo "unsupported: $1" >&2; exit 2; }
read -r url
echo "$url" >> '${log}'
case "$url" in
${cases}
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`;
  const path = join(bin, `docker-credential-${name}`);
  await Deno.writeTextFile(path, script, { mode: 0o755 });
  return { log };
}

async function lines(path: string): Promise<string[]> {
  return (await Deno.readTextFile(path)).split("\n").filter(Boolean);
}

Deno.test("a registry behind a private CA is refused with a hint to --ca-file and certs.d, then trusted through --ca-file and SSL_CERT_FILE", async () => {
  await using reg = await startRegistry({ kind: "htpasswd", username: "al", password: "pw" }, {
    tls: true,
  });
  await using home = await tempDir("ovm-home-");
  await using home2 = await tempDir("ovm-home-");
  const packed = await packDummy(home.path, "demo/vm:1.0");
  await saveCredential(home.path, reg.host, { username: "al", password: "pw" });
  const store = await ContentStore.open(home.path);
  const env = envOf({ HOME: home.path });
  // plainHttp: false is HTTPS for this loopback registry, as a remote one gets by default.
  await assert.rejects(
    () =>
      pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, {
        home: home.path,
        env,
        plainHttp: false,
      }),
    (e) => {
      assert(e instanceof NetworkError && e.tls, String(e));
      assert.match(e.message, new RegExp(`"${reg.host}".*unknown authority`));
      assert.match(e.hint ?? "", /--ca-file/);
      assert.match(e.hint ?? "", /SSL_CERT_FILE/);
      assert(e.hint?.includes(`/etc/docker/certs.d/${reg.host}/ca.crt`), e.hint);
      return true;
    },
  );
  const pushed = await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, {
    home: home.path,
    env,
    caFile: reg.caFile,
  });
  assert.equal(pushed.digest, packed.digest);
  await saveCredential(home2.path, reg.host, { username: "al", password: "pw" });
  const pulled = await pullToStore(
    await ContentStore.open(home2.path),
    `${reg.host}/vms/demo:1.0`,
    {
      home: home2.path,
      env: envOf({ HOME: home2.path, SSL_CERT_FILE: reg.caFile }),
      plainHttp: false,
    },
  );
  assert.equal(pulled.descriptor.digest, packed.digest);
  await assertStoreConsistent(home2.path);
  // A CA file that is not one is named.
  await assert.rejects(
    () =>
      pullToStore(store, `${reg.host}/vms/demo:1.0`, {
        home: home.path,
        env,
        caFile: join(home.path, "auth.json"),
      }),
    (e) => e instanceof OvmError && /auth\.json.*--ca-file.*no PEM certificate/.test(e.message),
  );
});

Deno.test("certs.d/HOST:PORT/ca.crt is trusted under $OVM_CERTS_D and in /etc/docker/certs.d, and skopeo reads the same directory and auth file", async () => {
  await using reg = await startRegistry({ kind: "htpasswd", username: "al", password: "pw" }, {
    tls: true,
  });
  await using home = await tempDir("ovm-home-");
  await using tmp = await tempDir("ovm-certs-");
  const packed = await packDummy(home.path, "demo/vm:1.0");
  const authFile = await writeJson(join(tmp.path, "auth.json"), {
    auths: { [reg.host]: { auth: basic("al", "pw") } },
  });
  const hostDir = join(tmp.path, "certs.d", reg.host);
  await Deno.mkdir(hostDir, { recursive: true });
  await Deno.copyFile(reg.caFile!, join(hostDir, "ca.crt"));
  const store = await ContentStore.open(home.path);
  await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, {
    home: home.path,
    env: envOf({ HOME: tmp.path, OVM_CERTS_D: join(tmp.path, "certs.d") }),
    authFile,
  });
  // skopeo, given the same CA directory and auth file, sees the same digest
  // and copies the artifact within the registry; ovm pulls skopeo's copy.
  const raw = await run("skopeo", [
    "inspect",
    "--raw",
    "--cert-dir",
    hostDir,
    "--authfile",
    authFile,
    `docker://${reg.host}/vms/demo:1.0`,
  ]);
  assert.equal(digestOf(new TextEncoder().encode(raw)), packed.digest);
  await run("skopeo", [
    "copy",
    "--src-cert-dir",
    hostDir,
    "--dest-cert-dir",
    hostDir,
    `docker://${reg.host}/vms/demo:1.0`,
    `docker://${reg.host}/vms/by-skopeo:1.0`,
  ], { REGISTRY_AUTH_FILE: authFile, PATH: Deno.env.get("PATH")!, HOME: tmp.path });

  // The real /etc/docker/certs.d, as docker and skopeo read it: a directory
  // named for this test's unique HOST:PORT, always removed.
  const etc = `/etc/docker/certs.d/${reg.host}`;
  const created: string[] = [];
  for (const d of ["/etc/docker", "/etc/docker/certs.d", etc]) {
    if (!(await Deno.stat(d).then(() => true, () => false))) created.unshift(d);
  }
  try {
    await Deno.mkdir(etc, { recursive: true });
    await Deno.copyFile(reg.caFile!, join(etc, "ca.crt"));
    await using home2 = await tempDir("ovm-home-");
    const pulled = await pullToStore(
      await ContentStore.open(home2.path),
      `${reg.host}/vms/by-skopeo:1.0`,
      { home: home2.path, env: envOf({ HOME: tmp.path, REGISTRY_AUTH_FILE: authFile }) },
    );
    assert.equal(pulled.descriptor.digest, packed.digest);
  } finally {
    await Deno.remove(etc, { recursive: true }).catch(() => {});
    for (const d of created.slice(1)) await Deno.remove(d).catch(() => {});
  }
});

Deno.test("credentials come from $DOCKER_CONFIG/config.json, ~/.docker/config.json, $REGISTRY_AUTH_FILE and podman's default auth.json places", async () => {
  await using reg = await startRegistry({ kind: "htpasswd", username: "al", password: "pw" });
  await using home = await tempDir("ovm-home-");
  await using tmp = await tempDir("ovm-creds-");
  await packDummy(home.path, "demo/vm:1.0");
  const store = await ContentStore.open(home.path);
  const ref = `${reg.host}/vms/demo:1.0`;
  // Nothing anywhere: a clear refusal naming the registry and `ovm login`.
  await assert.rejects(
    () =>
      pushFromStore(store, "demo/vm:1.0", ref, { home: home.path, env: envOf({ HOME: tmp.path }) }),
    (e) => e instanceof AuthError && e.message.includes(reg.host) && /ovm login/.test(e.hint ?? ""),
  );
  const dockerConfig = join(tmp.path, "dockerconfig");
  await writeJson(join(dockerConfig, "config.json"), {
    auths: { [`https://${reg.host}`]: { auth: basic("al", "pw") } },
  });
  await pushFromStore(store, "demo/vm:1.0", ref, {
    home: home.path,
    env: envOf({ HOME: tmp.path, DOCKER_CONFIG: dockerConfig }),
  });
  const fakeHome = join(tmp.path, "home");
  await writeJson(join(fakeHome, ".docker", "config.json"), {
    auths: { [reg.host]: { username: "al", password: "pw" } },
  });
  await pullToStore(store, ref, { home: home.path, env: envOf({ HOME: fakeHome }) });
  // containers-auth.json wins over docker's file (here with a wrong password).
  await writeJson(join(fakeHome, ".docker", "config.json"), {
    auths: { [reg.host]: { auth: basic("al", "wrong") } },
  });
  const authFile = await writeJson(join(tmp.path, "containers-auth.json"), {
    auths: { [reg.host]: { auth: basic("al", "pw") } },
  });
  await copyBetween(ref, `${reg.host}/vms/copy:1.0`, {
    home: home.path,
    env: envOf({ HOME: fakeHome, REGISTRY_AUTH_FILE: authFile }),
  });
  await assert.rejects(
    () => pullToStore(store, ref, { home: home.path, env: envOf({ HOME: fakeHome }) }),
    (e) => e instanceof AuthError && e.status === 401,
  );
  // podman's default places: $XDG_RUNTIME_DIR/containers/auth.json, then ~/.config/containers.
  const runtimeDir = join(tmp.path, "run");
  await writeJson(join(runtimeDir, "containers", "auth.json"), {
    auths: { [reg.host]: { auth: basic("al", "pw") } },
  });
  await pullToStore(store, ref, {
    home: home.path,
    env: envOf({ HOME: fakeHome, XDG_RUNTIME_DIR: runtimeDir }),
  });
  await writeJson(join(fakeHome, ".config", "containers", "auth.json"), {
    auths: { [reg.host]: { auth: basic("al", "pw") } },
  });
  await pullToStore(store, ref, { home: home.path, env: envOf({ HOME: fakeHome }) });
  // An --authfile that is not there is named, not silently skipped.
  await assert.rejects(
    () =>
      pullToStore(store, ref, {
        home: home.path,
        env: envOf({ HOME: fakeHome }),
        authFile: join(tmp.path, "missing.json"),
      }),
    (e) => e instanceof OvmError && /missing\.json" \(--authfile\) does not exist/.test(e.message),
  );
  await assertStoreConsistent(home.path);
});

Deno.test("credHelpers and credsStore run docker-credential-<name> with the server URL on stdin", async () => {
  await using reg = await startRegistry({ kind: "htpasswd", username: "al", password: "pw" });
  await using home = await tempDir("ovm-home-");
  await using tmp = await tempDir("ovm-helpers-");
  const packed = await packDummy(home.path, "demo/vm:1.0");
  const store = await ContentStore.open(home.path);
  const bin = join(tmp.path, "bin");
  const perHost = await credentialHelper(bin, "ovmtest", {
    [reg.host]: { Username: "al", Secret: "pw" },
  });
  const store2 = await credentialHelper(bin, "ovmstore", {
    [reg.host]: { Username: "al", Secret: "pw" },
  });
  const empty = await credentialHelper(bin, "ovmempty", {});
  const path = `${bin}:${Deno.env.get("PATH")}`;
  const dockerConfig = join(tmp.path, "docker");
  const configFile = join(dockerConfig, "config.json");
  const env = envOf({ HOME: tmp.path, DOCKER_CONFIG: dockerConfig, PATH: path });
  const ref = `${reg.host}/vms/demo:1.0`;

  await writeJson(configFile, { auths: {}, credHelpers: { [reg.host]: "ovmtest" } });
  const pushed = await pushFromStore(store, "demo/vm:1.0", ref, { home: home.path, env });
  assert.equal(pushed.digest, packed.digest);
  const asked = await lines(perHost.log);
  assert.deepEqual([...new Set(asked)], [reg.host]);
  assert.equal(asked.length, 1, "one transfer runs the helper once per registry");

  await writeJson(configFile, { auths: { [reg.host]: {} }, credsStore: "ovmstore" });
  await using home2 = await tempDir("ovm-home-");
  const pulled = await pullToStore(await ContentStore.open(home2.path), ref, {
    home: home2.path,
    env,
  });
  assert.equal(pulled.descriptor.digest, packed.digest);
  assert.deepEqual(await lines(store2.log), [reg.host]);

  // A helper with nothing for the registry: no credentials, a plain auth error.
  await writeJson(configFile, { credsStore: "ovmempty" });
  await assert.rejects(
    () => pullToStore(store, ref, { home: home.path, env }),
    (e) => e instanceof AuthError && /requires a user name/.test(e.message),
  );
  assert.deepEqual(await lines(empty.log), [reg.host]);
  // A helper that is not installed is named, with the file that names it.
  await writeJson(configFile, { credHelpers: { [reg.host]: "missing" } });
  await assert.rejects(
    () => pullToStore(store, ref, { home: home.path, env }),
    (e) =>
      e instanceof NotFoundError && e.message.includes("docker-credential-missing") &&
      e.message.includes(configFile),
  );
  // Outside this test's env the helpers are not on PATH.
  assert.equal(Deno.env.get("PATH")?.includes(bin), false);
  await assertStoreConsistent(home.path);
});

Deno.test("a bearer token's scopes are enforced: a pull-only repository is readable and a push to it is denied, naming the scope (TLS token flow)", async () => {
  await using reg = await startRegistry({
    kind: "token",
    username: "bob",
    password: "pw",
    access: { "vms/rw": ["pull", "push"], "vms/ro": ["pull"] },
  }, { tls: true });
  await using home = await tempDir("ovm-home-");
  const packed = await packDummy(home.path, "demo/vm:1.0");
  await saveCredential(home.path, reg.host, { username: "bob", password: "pw" });
  const store = await ContentStore.open(home.path);
  const opts = { home: home.path, env: envOf({ HOME: home.path }), caFile: reg.caFile };
  await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/rw:1.0`, opts);
  assert(
    reg.tokenRequests.some((u) =>
      u.searchParams.getAll("scope").includes("repository:vms/rw:pull,push") &&
      u.searchParams.get("service") === "ovm-test-registry"
    ),
  );
  const pulled = await pullToStore(store, `${reg.host}/vms/rw:1.0`, opts);
  assert.equal(pulled.descriptor.digest, packed.digest);
  // Pull access on vms/ro: the registry answers (nothing there), not an auth error.
  await assert.rejects(() => pullToStore(store, `${reg.host}/vms/ro:1.0`, opts), NotFoundError);
  await assert.rejects(
    () => copyBetween(`${reg.host}/vms/rw:1.0`, `${reg.host}/vms/ro:1.0`, opts),
    (e) =>
      e instanceof AuthError && e.message.includes(reg.host) &&
      /denied access "[^"]*repository:vms\/ro:[a-z,]*push/.test(e.message) &&
      /lacks this access/.test(e.hint ?? ""),
  );
  // skopeo, through the same token service, CA and credentials, reads vms/rw
  // and is refused the push to vms/ro as ovm was.
  await using tmp = await tempDir("ovm-skopeo-");
  const certDir = join(tmp.path, "certs");
  await Deno.mkdir(certDir);
  await Deno.copyFile(reg.caFile!, join(certDir, "ca.crt"));
  const authFile = await writeJson(join(tmp.path, "auth.json"), {
    auths: { [reg.host]: { auth: basic("bob", "pw") } },
  });
  const common = ["--authfile", authFile];
  const raw = await run("skopeo", [
    "inspect",
    "--raw",
    "--cert-dir",
    certDir,
    ...common,
    `docker://${reg.host}/vms/rw:1.0`,
  ]);
  assert.equal(digestOf(new TextEncoder().encode(raw)), packed.digest);
  await assert.rejects(
    () =>
      run("skopeo", [
        "copy",
        ...common,
        "--src-cert-dir",
        certDir,
        "--dest-cert-dir",
        certDir,
        `docker://${reg.host}/vms/rw:1.0`,
        `docker://${reg.host}/vms/ro:1.0`,
      ]),
    /initiating layer upload to \/v2\/vms\/ro\/blobs\/uploads\/.*\n?.*denied: requested access to the resource is denied/,
  );
});

Deno.test("an identity token from a credential helper is exchanged at the token endpoint (OAuth2 refresh grant)", async () => {
  await using reg = await startRegistry({
    kind: "token",
    username: "bob",
    password: "unused",
    refreshToken: "rt-1234",
  });
  await using home = await tempDir("ovm-home-");
  await using tmp = await tempDir("ovm-helpers-");
  const packed = await packDummy(home.path, "demo/vm:1.0");
  const bin = join(tmp.path, "bin");
  const helper = await credentialHelper(bin, "ovmtoken", {
    [reg.host]: { Username: "<token>", Secret: "rt-1234" },
  });
  await writeJson(join(tmp.path, ".docker", "config.json"), { credsStore: "ovmtoken" });
  const env = envOf({ HOME: tmp.path, PATH: `${bin}:${Deno.env.get("PATH")}` });
  const pushed = await pushFromStore(
    await ContentStore.open(home.path),
    "demo/vm:1.0",
    `${reg.host}/vms/demo:1.0`,
    { home: home.path, env },
  );
  assert.equal(pushed.digest, packed.digest);
  assert.deepEqual([...new Set(await lines(helper.log))], [reg.host]);
  assert(
    reg.tokenRequests.some((u) =>
      u.searchParams.get("grant_type") === "refresh_token" &&
      u.searchParams.get("client_id") === "ovm" &&
      u.searchParams.getAll("scope").includes("repository:vms/demo:pull,push")
    ),
  );
});

Deno.test("ovm push/pull take --ca-file and --authfile, and say what to fix without them", async () => {
  await using reg = await startRegistry({ kind: "htpasswd", username: "al", password: "pw" }, {
    tls: true,
  });
  await using home = await tempDir("ovm-home-");
  await using tmp = await tempDir("ovm-cli-");
  const packed = await packDummy(home.path, "demo/vm:1.0");
  const authFile = await writeJson(join(tmp.path, "auth.json"), {
    auths: { [reg.host]: { auth: basic("al", "pw") } },
  });
  const ref = `${reg.host}/vms/demo:1.0`;
  const refused = await ovm(home.path, "push", "demo/vm:1.0", ref, "--authfile", authFile);
  // Loopback is plain HTTP unless TLS trust is set up for it: the registry's
  // "HTTP request to an HTTPS server" becomes advice.
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, new RegExp(`"${reg.host}" speaks HTTPS`));
  assert.match(refused.stderr, /--ca-file/);
  const pushed = await ovm(
    home.path,
    "push",
    "demo/vm:1.0",
    ref,
    "--ca-file",
    reg.caFile!,
    "--authfile",
    authFile,
    "--json",
  );
  assertExit(pushed, 0);
  assert.equal(JSON.parse(pushed.stdout).digest, packed.digest);
  await using home2 = await tempDir("ovm-home-");
  const pulled = await ovm(
    home2.path,
    "pull",
    ref,
    `--ca-file=${reg.caFile}`,
    "--authfile",
    authFile,
  );
  assertExit(pulled, 0);
  // ovm login checks the password over the same TLS, then pulls need nothing else.
  await using home3 = await tempDir("ovm-home-");
  const bad = await ovm(
    home3.path,
    "login",
    reg.host,
    "-u",
    "al",
    "-p",
    "nope",
    "--ca-file",
    reg.caFile!,
  );
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /refused the credentials/);
  assertExit(
    await ovm(home3.path, "login", reg.host, "-u", "al", "-p", "pw", "--ca-file", reg.caFile!),
    0,
  );
  assertExit(await ovm(home3.path, "pull", ref, "--ca-file", reg.caFile!), 0);
  for (const verb of ["push", "pull", "copy", "login", "referrers", "sign", "verify"]) {
    const help = await ovm(home.path, verb, "--help");
    assertExit(help, 0);
    assert.match(help.stdout, /--ca-file/, `ovm ${verb} --help`);
    if (verb !== "login") assert.match(help.stdout, /--authfile/, `ovm ${verb} --help`);
  }
});

Deno.test("a registry that wants a client certificate takes NAME.cert and NAME.key from certs.d/HOST:PORT/, and says so without them", async () => {
  await using reg = await startRegistry({ kind: "none" }, { tls: true, clientCerts: true });
  await using home = await tempDir("ovm-home-");
  await using tmp = await tempDir("ovm-mtls-");
  const packed = await packDummy(home.path, "demo/vm:1.0");
  const store = await ContentStore.open(home.path);
  const certsD = join(tmp.path, "certs.d");
  const hostDir = join(certsD, reg.host);
  await Deno.mkdir(hostDir, { recursive: true });
  await Deno.copyFile(reg.caFile!, join(hostDir, "ca.crt"));
  const env = envOf({ HOME: tmp.path, OVM_CERTS_D: certsD });
  const ref = `${reg.host}/vms/demo:1.0`;
  await assert.rejects(
    () => pushFromStore(store, "demo/vm:1.0", ref, { home: home.path, env }),
    (e) => {
      assert(e instanceof NetworkError && e.tls, String(e));
      assert.match(e.message, /client certificate/);
      assert(e.hint?.includes(`certs.d/${reg.host}/`), e.hint);
      return true;
    },
  );
  await Deno.copyFile(reg.clientCert!, join(hostDir, "client.cert"));
  // A certificate without its key is named.
  await assert.rejects(
    () => pushFromStore(store, "demo/vm:1.0", ref, { home: home.path, env }),
    (e) => e instanceof OvmError && /client\.cert" has no key "client\.key"/.test(e.message),
  );
  await Deno.copyFile(reg.clientKey!, join(hostDir, "client.key"));
  const pushed = await pushFromStore(store, "demo/vm:1.0", ref, { home: home.path, env });
  assert.equal(pushed.digest, packed.digest);
  // skopeo reads the same directory (ca.crt, client.cert, client.key).
  const raw = await run("skopeo", ["inspect", "--raw", "--cert-dir", hostDir, `docker://${ref}`]);
  assert.equal(digestOf(new TextEncoder().encode(raw)), packed.digest);
});
