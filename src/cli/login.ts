/**
 * @module
 * `ovm login` / `ovm logout`: checks credentials against a registry and
 * stores them in `$OVM_HOME/auth.json` (mode 0600).
 */
import { ValidationError } from "../errors.ts";
import { openRepository, parseReference, removeCredential, saveCredential } from "../oci/mod.ts";
import { bool, type Command, str } from "./command.ts";
import { CONNECTION_OPTIONS } from "./push.ts";

function registryOf(arg: string): string {
  const host = arg.replace(/^https?:\/\//, "").replace(/\/+$/, "");
  // Validate as the registry part of a reference.
  const r = parseReference(`${host}/x`);
  if (r.registry !== host) {
    throw new ValidationError(`"${arg}" is not a registry host[:port]`, {
      hint: 'e.g. "localhost:5000" or "registry.example.com"',
    });
  }
  return host;
}

async function readStdin(): Promise<string> {
  const text = await new Response(Deno.stdin.readable).text();
  return text.replace(/\r?\n$/, "");
}

export const loginCommand: Command = {
  name: "login",
  summary: "Store credentials for a registry (after checking them)",
  usage: "login <REGISTRY> -u USER (-p PASSWORD | --password-stdin)",
  description:
    "Credentials go to $OVM_HOME/auth.json (mode 0600). Registry verbs also read the containers\n" +
    "auth file ($REGISTRY_AUTH_FILE, or --authfile) and Docker's config.json ($DOCKER_CONFIG or\n" +
    "~/.docker), running the credential helpers they name (credHelpers, credsStore).",
  args: { min: 1, max: 1, names: "REGISTRY" },
  options: {
    username: { type: "string", short: "u", valueName: "USER", help: "User name" },
    password: {
      type: "string",
      short: "p",
      valueName: "PASSWORD",
      help: "Password (visible to ps)",
    },
    "password-stdin": { type: "boolean", help: "Read the password from stdin" },
    "no-verify": { type: "boolean", help: "Store without contacting the registry" },
    "plain-http": CONNECTION_OPTIONS["plain-http"],
    insecure: CONNECTION_OPTIONS.insecure,
    "ca-file": CONNECTION_OPTIONS["ca-file"],
  },
  examples: ['echo "$TOKEN" | ovm login registry.example.com -u me --password-stdin'],
  async run(ctx, input) {
    const registry = registryOf(input.args[0]);
    const username = str(input, "username");
    if (!username) throw new ValidationError("-u/--username is required");
    let password = str(input, "password");
    if (bool(input, "password-stdin")) {
      if (password !== undefined) {
        throw new ValidationError("Give either -p or --password-stdin, not both");
      }
      password = await readStdin();
    }
    if (password === undefined) {
      throw new ValidationError("A password is required", {
        hint: "pass -p PASSWORD or --password-stdin",
      });
    }
    if (!bool(input, "no-verify")) {
      const creds = { username, password };
      const repo = openRepository({ registry, repository: "" }, {
        credentials: () => Promise.resolve(creds),
        plainHttp: bool(input, "plain-http") || undefined,
        insecure: bool(input, "insecure"),
        caFile: str(input, "ca-file"),
        signal: ctx.signal,
      });
      await repo.ping({ signal: ctx.signal });
    }
    const path = await saveCredential(ctx.home, registry, { username, password });
    ctx.out.result({ registry, username, path });
    ctx.out.line(`login succeeded for ${username}@${registry} (saved in ${path})`);
  },
};

export const logoutCommand: Command = {
  name: "logout",
  summary: "Remove stored credentials for a registry",
  usage: "logout <REGISTRY>",
  args: { min: 1, max: 1, names: "REGISTRY" },
  async run(ctx, input) {
    const registry = registryOf(input.args[0]);
    const removed = await removeCredential(ctx.home, registry);
    ctx.out.result({ registry, removed });
    ctx.out.line(
      removed ? `removed credentials for ${registry}` : `no credentials for ${registry}`,
    );
  },
};
