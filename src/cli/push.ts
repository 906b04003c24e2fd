/**
 * @module
 * `ovm push`: uploads a local artifact (a store ref, or a directory in the
 * download layout `ovm export` writes) to a registry. Also home of the flags
 * every registry verb shares (`--plain-http`, `--insecure`, `--ca-file`, `--authfile`,
 * `--progress`).
 */
import { ValidationError } from "../errors.ts";
import { pushFromStore, type RemoteOptions } from "../oci/mod.ts";
import { parseProgressMode, Progress } from "../util/progress.ts";
import { formatBytes } from "../util/size.ts";
import { pushLocalSignatures } from "../sign/mod.ts";
import {
  bool,
  type CliContext,
  type Command,
  type OptionSpec,
  type ParsedInput,
  str,
} from "./command.ts";

/** How to reach and authenticate to a registry: every verb that talks to one takes these. */
export const CONNECTION_OPTIONS: Record<string, OptionSpec> = {
  "plain-http": {
    type: "boolean",
    help: "Talk HTTP, not HTTPS (the default for localhost and 127.x registries)",
  },
  insecure: {
    type: "boolean",
    help: "Fall back to plain HTTP when the registry does not answer HTTPS",
  },
  "ca-file": {
    type: "string",
    valueName: "FILE",
    help:
      "Also trust the CA certificates in this PEM file (as do SSL_CERT_FILE and certs.d/HOST:PORT/*.crt under /etc/containers, /etc/docker or $OVM_CERTS_D)",
  },
  authfile: {
    type: "string",
    valueName: "FILE",
    help:
      "Read credentials from this containers auth.json (default $REGISTRY_AUTH_FILE; then Docker's config.json)",
  },
};

export const REMOTE_OPTIONS: Record<string, OptionSpec> = {
  ...CONNECTION_OPTIONS,
  progress: {
    type: "string",
    valueName: "MODE",
    help:
      "auto | tty | plain | json | none; json prints NDJSON events on stderr (default: auto, json with --json)",
  },
  concurrency: { type: "string", valueName: "N", help: "Blobs transferred at once (default: 4)" },
};

/** Registry options and a progress reporter from the shared flags. */
export function remoteOptions(
  ctx: CliContext,
  input: ParsedInput,
): { options: RemoteOptions; progress: Progress } {
  const modeFlag = str(input, "progress");
  const mode = parseProgressMode(modeFlag);
  if (modeFlag !== undefined && !mode) {
    throw new ValidationError(`--progress "${modeFlag}" is not a progress mode`, {
      hint: "use one of auto, tty, plain, json, none",
    });
  }
  const quiet = input.options.quiet === true;
  const progress = new Progress(ctx.out, mode ?? (quiet ? "none" : ctx.json ? "json" : "auto"));
  let concurrency: number | undefined;
  const c = str(input, "concurrency");
  if (c !== undefined) {
    concurrency = Number(c);
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
      throw new ValidationError(`--concurrency "${c}" must be a whole number from 1 to 64`);
    }
  }
  return {
    options: {
      home: ctx.home,
      signal: ctx.signal,
      plainHttp: bool(input, "plain-http") || undefined,
      insecure: bool(input, "insecure"),
      caFile: str(input, "ca-file"),
      authFile: str(input, "authfile"),
      concurrency,
      onEvent: progress.event,
      retry: {
        onRetry: ({ delayMs, reason }) => {
          if (progress.mode === "plain") {
            ctx.out.info(`retrying in ${(delayMs / 1000).toFixed(1)}s: ${reason}`);
          }
        },
      },
    },
    progress,
  };
}

export const pushCommand: Command = {
  name: "push",
  summary: "Upload an artifact (local ref or exported directory) to a registry",
  usage: "push <LOCAL-REF|DIR> <REGISTRY/REPO[:TAG]> [options]",
  description:
    "Blobs go first (skipped when the registry has them), then the manifest. A manifest with a\n" +
    "subject is also added to the sha256-<hex> referrers tag where the registry lacks the\n" +
    "referrers API. DIR is the layout `ovm export` writes.",
  args: { min: 2, max: 2, names: "LOCAL-REF|DIR REMOTE-REF" },
  options: REMOTE_OPTIONS,
  examples: [
    "ovm push demo/vm:1.0 localhost:5000/vms/demo:1.0",
    "ovm push ./exported localhost:5000/vms/demo:1.0 --progress=plain",
  ],
  async run(ctx, input) {
    const [local, remote] = input.args;
    const { options, progress } = remoteOptions(ctx, input);
    const store = await ctx.store();
    let res;
    try {
      res = await pushFromStore(store, local, remote, options);
      // Signatures made in the local store (src/sign) travel with the artifact.
      await pushLocalSignatures(store, local, remote, res.digest, options);
    } finally {
      progress.finish();
    }
    ctx.out.result({
      reference: res.reference,
      digest: res.digest,
      mediaType: res.descriptor.mediaType,
      size: res.descriptor.size,
      blobs: res.blobs,
      bytes: res.bytes,
      transferred: res.transferred,
    });
    ctx.out.line(
      `pushed ${remote}@${res.digest} (${res.blobs} blobs, ${
        formatBytes(res.transferred)
      } uploaded)`,
    );
  },
};
