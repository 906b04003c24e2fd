/**
 * @module
 * The admission policy (`$OVM_HOME/policy.json` or `--policy FILE`): per
 * repository glob, which keys are trusted and whether a signature is required
 * for the artifact, and separately for artifacts carrying a RAM snapshot
 * (executable state); a default for repositories no rule matches. Enforced
 * by digest, resolved once: the caller pulls or runs the digest that was
 * checked, so a tag that moves in between cannot swap the content.
 */
import { dirname, isAbsolute, join } from "node:path";
import { PolicyError, ValidationError } from "../errors.ts";
import { type PolicyDocument, PolicySchema } from "./policy_schema.ts";
import {
  type Digest,
  type ImageManifest,
  MAX_MANIFEST_BYTES,
  MediaTypes,
  parseJsonBytes,
  validate,
} from "../manifest/mod.ts";
import { parseReference, referenceName, type RemoteOptions } from "../oci/mod.ts";
import { type ContentStore, homePaths, parseLocalRef } from "../store/mod.ts";
import { readFileBounded } from "../util/fs.ts";
import { loadPublicKey, type PublicKey } from "./keys.ts";
import { copySignatures, type ResolvedTarget, resolveTarget } from "./sign.ts";
import { LocalSignatureSource } from "./sources.ts";
import { type VerificationReport, verifyDigest } from "./verify.ts";

/** A policy with its keys loaded. */
export interface Policy {
  source: string;
  document: PolicyDocument;
  keys: PublicKey[][];
}

export type AdmissionKind = "pull" | "run" | "start";
export type Decision = "allow" | "warn" | "deny";

/** The default policy file of a home. */
export function policyPath(home: string): string {
  return join(homePaths(home).home, "policy.json");
}

/**
 * Loads and validates a policy file (keys included). A missing default file
 * means no policy (undefined); a missing explicit file, bad JSON, a schema
 * violation or an unreadable key is a ValidationError (exit 2).
 */
export async function loadPolicy(
  path: string,
  options: { optional?: boolean } = {},
): Promise<Policy | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await readFileBounded(path, 1 << 20);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound && options.optional) return undefined;
    throw new ValidationError(`Cannot read policy file "${path}"`, {
      cause: e,
      hint: "pass an existing file with --policy, or write $OVM_HOME/policy.json",
    });
  }
  return await parsePolicy(bytes, path);
}

export async function parsePolicy(bytes: Uint8Array | string, source: string): Promise<Policy> {
  const document = validate(
    PolicySchema,
    parseJsonBytes(bytes, { source: `policy file ${source}` }),
    `policy file ${source}`,
  );
  const base = dirname(source);
  const keys: PublicKey[][] = [];
  for (const [i, rule] of document.rules.entries()) {
    const loaded: PublicKey[] = [];
    for (const k of rule.keys) {
      const p = k.includes("-----BEGIN") || isAbsolute(k) ? k : join(base, k);
      try {
        loaded.push(await loadPublicKey(p));
      } catch (e) {
        throw new ValidationError(
          `Policy file "${source}": rules[${i}].keys: cannot load key "${
            k.includes("-----BEGIN") ? "inline PEM" : k
          }"`,
          { cause: e, path: `rules[${i}].keys` },
        );
      }
    }
    keys.push(loaded);
  }
  return { source, document, keys };
}

/** `*` within a segment, `**` across segments, `?` one character; anchored. */
export function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*" && glob[i + 1] === "*") {
      re += ".*";
      i++;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/** Index of the first rule matching `repository`, or -1. */
export function matchRule(policy: Policy, repository: string): number {
  return policy.document.rules.findIndex((r) =>
    (Array.isArray(r.match) ? r.match : [r.match]).some((g) => globToRegExp(g).test(repository))
  );
}

export interface AdmissionResult {
  decision: Decision;
  /** The digest checked; pull or run exactly this. */
  digest: Digest;
  /** `repository@digest`: the ref to hand on. */
  pinned: string;
  /** For a pull: the local ref the pull would record for the input ref. */
  localRef?: string;
  repository: string;
  /** Index into policy.rules, or -1 when the default applied. */
  rule: number;
  snapshot: boolean;
  reasons: string[];
  verification?: VerificationReport;
  /** Where the check ran; kept so a pull can record the signatures it checked. */
  target: ResolvedTarget;
}

/**
 * Decides whether `ref` may be pulled (`kind: "pull"`, checked in the
 * registry) or run/started (checked against the local store). The digest is
 * resolved once and returned with the decision.
 */
export async function checkAdmission(
  ref: string,
  options: RemoteOptions & { store?: ContentStore; policy: Policy; kind: AdmissionKind },
): Promise<AdmissionResult> {
  const { policy, kind } = options;
  const local = kind !== "pull";
  const target = await resolveTarget(ref, { ...options, local, remote: !local });
  const repository = target.source.repository;
  const snapshot = await hasSnapshot(target, options.signal);
  const ruleIndex = matchRule(policy, repository);
  const reasons: string[] = [];
  let localRef: string | undefined;
  if (!local) {
    const r = parseReference(ref);
    localRef = r.tag || !r.digest ? `${referenceName(r)}:${r.tag ?? "latest"}` : undefined;
  }
  const base = {
    digest: target.digest,
    pinned: target.pinned,
    localRef,
    repository,
    rule: ruleIndex,
    snapshot,
    target,
  };
  if (ruleIndex < 0) {
    const d = policy.document.default;
    reasons.push(
      `no rule of policy "${policy.source}" matches repository "${repository}"; the default is ${d}`,
    );
    return { ...base, decision: d, reasons };
  }
  const rule = policy.document.rules[ruleIndex];
  const required = rule.requireSignature || (snapshot && rule.requireSnapshotSignature);
  if (!required) {
    reasons.push(
      `rule ${ruleIndex} (${JSON.stringify(rule.match)}) does not require a signature${
        snapshot ? "" : " for an artifact without a RAM snapshot"
      }`,
    );
    return { ...base, decision: "allow", reasons };
  }
  const verification = await verifyDigest(target.source, target, {
    keys: policy.keys[ruleIndex],
    signal: options.signal,
  });
  const why = rule.requireSignature
    ? `rule ${ruleIndex} (${JSON.stringify(rule.match)}) requires a signature`
    : `rule ${ruleIndex} (${
      JSON.stringify(rule.match)
    }) requires a signature on artifacts with a RAM snapshot, and this one has one`;
  if (verification.verified.length) {
    const v = verification.verified[0];
    reasons.push(`${why}: signed by key ${v.keyFingerprint} (${v.form})`);
    return { ...base, decision: "allow", reasons, verification };
  }
  reasons.push(
    `${why}, and no valid signature by a trusted key was found in ${target.source.where}`,
  );
  reasons.push(...verification.problems);
  return { ...base, decision: "deny", reasons, verification };
}

/** Whether the manifest carries a RAM snapshot (config field or layer). */
async function hasSnapshot(t: ResolvedTarget, signal?: AbortSignal): Promise<boolean> {
  const m: ImageManifest = t.manifest;
  if (m.layers.some((l) => l.mediaType === MediaTypes.ramSnapshot)) return true;
  if (m.config.mediaType !== MediaTypes.manifest) return false;
  const config = parseJsonBytes(
    await t.source.blob(m.config, MAX_MANIFEST_BYTES, signal),
    { source: `OVMS manifest ${m.config.digest}` },
  ) as { ramSnapshot?: unknown };
  return config.ramSnapshot !== undefined && config.ramSnapshot !== null;
}

export interface EnforceOptions extends RemoteOptions {
  kind: AdmissionKind;
  home: string;
  store?: ContentStore;
  /** `--policy FILE`; default `$OVM_HOME/policy.json` when it exists. */
  policyFile?: string;
  warn?: (message: string) => void;
}

export interface Admitted extends AdmissionResult {
  /** After a pull: records the checked signatures in the store, so `run` can check locally. */
  keep(store: ContentStore): Promise<void>;
}

/**
 * What `pull`, `run` and the API's `/start` call before any work starts:
 * no policy → undefined (nothing enforced); deny → PolicyError; warn → the
 * reasons through `warn`. Returns the admission with the digest to use.
 */
export async function enforcePolicy(
  ref: string,
  options: EnforceOptions,
): Promise<Admitted | undefined> {
  const policy = options.policyFile
    ? await loadPolicy(options.policyFile)
    : await loadPolicy(policyPath(options.home), { optional: true });
  if (!policy) return undefined;
  const result = await checkAdmission(ref, { ...options, policy });
  if (result.decision === "deny") {
    throw new PolicyError(
      `Policy refuses to ${options.kind} "${ref}" (${result.digest}):\n  - ${
        result.reasons.join("\n  - ")
      }`,
      { hint: `run \`ovm policy check ${ref}\` for the full decision; sign with \`ovm sign\`` },
    );
  }
  if (result.decision === "warn") {
    for (const r of result.reasons) options.warn?.(`policy: ${r}`);
  }
  return {
    ...result,
    async keep(store: ContentStore) {
      if (result.target.kind !== "remote") return;
      const name = result.localRef ? parseLocalRef(result.localRef).repository : result.repository;
      await copySignatures(
        result.target.source,
        new LocalSignatureSource(store, name),
        result.digest,
        { signal: options.signal },
      );
    },
  };
}
