/**
 * @module
 * Signing and verifying a reference (a registry reference, or an artifact in
 * the local store), always by digest: a tag is resolved once and the digest
 * it named is what gets signed or checked. Also copies signatures between
 * sources so they follow an artifact (push, pull, copy to another repository).
 */
import { ValidationError } from "../errors.ts";
import type { Descriptor, Digest, ImageManifest } from "../manifest/mod.ts";
import { openRepository, parseReference, type RemoteOptions } from "../oci/mod.ts";
import { type ContentStore, parseLocalRef } from "../store/mod.ts";
import { VERSION } from "../version.ts";
import {
  buildDsseBundle,
  bundleManifest,
  COSIGN_SIGN_PREDICATE,
  cosignKeyHint,
  dssePae,
  EMPTY_CONFIG,
  IN_TOTO_PAYLOAD_TYPE,
  signatureTag,
  SignMediaTypes,
  signStatement,
  simpleSigningLayer,
  simpleSigningManifest,
  simpleSigningPayload,
} from "./formats.ts";
import type { SigningKey } from "./keys.ts";
import {
  LocalSignatureSource,
  MAX_ATTACHMENT_BYTES,
  RemoteSignatureSource,
  type SignatureSource,
} from "./sources.ts";
import {
  assertVerified,
  type SignatureForm,
  type VerificationReport,
  verifyDigest,
} from "./verify.ts";
import type { PublicKey } from "./keys.ts";

export interface TargetOptions extends RemoteOptions {
  /** The local store, for local refs. */
  store?: ContentStore;
  /** Treat the ref as a local store ref even when it names a registry host. */
  local?: boolean;
  /** Treat the ref as a registry ref even without a host (docker.io, as pull does). */
  remote?: boolean;
}

export interface ResolvedTarget {
  source: SignatureSource;
  /** `local` or `remote`. */
  kind: "local" | "remote";
  descriptor: Descriptor;
  digest: Digest;
  bytes: Uint8Array;
  manifest: ImageManifest;
  /** The reference pinned to the digest (`name@sha256:…`). */
  pinned: string;
  /** The tag the input named, if any. */
  tag?: string;
}

/**
 * Resolves `ref` once. A ref naming a registry host (`host[:port]/repo…`) is
 * remote unless `local`; any other ref is looked up in the local store.
 */
export async function resolveTarget(
  ref: string,
  options: TargetOptions = {},
): Promise<ResolvedTarget> {
  const r = parseReference(ref, { allowNoRegistry: !options.remote });
  if (options.remote || (r.registry && !options.local)) {
    const repo = openRepository({ ...r, registry: r.registry! }, options);
    const source = new RemoteSignatureSource(repo);
    const m = await source.manifest(r.digest ?? r.tag ?? "latest", options.signal);
    const digest = m.descriptor.digest as Digest;
    return {
      source,
      kind: "remote",
      descriptor: m.descriptor,
      digest,
      bytes: m.bytes,
      manifest: m.manifest,
      pinned: `${r.registry}/${r.repository}@${digest}`,
      tag: r.digest ? undefined : r.tag ?? "latest",
    };
  }
  if (!options.store) {
    throw new ValidationError(`"${ref}" is a local reference but no store was given`);
  }
  const local = parseLocalRef(ref);
  const source = new LocalSignatureSource(options.store, local.repository);
  const m = await source.manifest(ref);
  const digest = m.descriptor.digest as Digest;
  return {
    source,
    kind: "local",
    descriptor: m.descriptor,
    digest,
    bytes: m.bytes,
    manifest: m.manifest,
    pinned: `${local.repository}@${digest}`,
    tag: local.digest ? undefined : local.tag,
  };
}

export interface SignResult {
  reference: string;
  digest: Digest;
  target: "local" | "remote";
  keyFingerprint: string;
  /** What was written per form: the new carrier manifest, or "existing". */
  forms: { form: SignatureForm; carrier: Digest | "existing" }[];
}

/**
 * Signs `ref` by digest in both forms. A form already holding a valid
 * signature by this key for this digest is left as it is (re-signing is a
 * no-op), so repeated runs do not pile up signatures.
 */
export async function signReference(
  ref: string,
  key: SigningKey,
  options: TargetOptions & { annotations?: Record<string, string> } = {},
): Promise<SignResult> {
  const t = await resolveTarget(ref, options);
  return await signResolved(t, key, options);
}

export async function signResolved(
  t: ResolvedTarget,
  key: SigningKey,
  options: { annotations?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<SignResult> {
  const { signal } = options;
  const existing = await verifyDigest(t.source, t, { keys: [key.publicKey], signal });
  const has = (f: SignatureForm) => existing.verified.some((v) => v.form === f);
  const forms: SignResult["forms"] = [];

  // Only a DSSE bundle counts as existing: cosign 3 does not read the
  // message-signature bundles ovm wrote before.
  if (existing.verified.some((v) => v.form === "bundle" && v.content === "dsse-envelope")) {
    forms.push({ form: "bundle", carrier: "existing" });
  } else {
    const statement = signStatement(t.digest, options.annotations);
    const sig = await key.sign(dssePae(IN_TOTO_PAYLOAD_TYPE, statement));
    const bundle = buildDsseBundle(statement, sig, cosignKeyHint(key.publicKey.spki));
    const { manifest } = bundleManifest(t.descriptor, bundle, {
      created: createdNow(),
      content: "dsse-envelope",
      predicateType: COSIGN_SIGN_PREDICATE,
    });
    const d = await t.source.attach(manifest, [EMPTY_CONFIG, bundle], { signal });
    forms.push({ form: "bundle", carrier: d.digest as Digest });
  }

  if (has("cosign-legacy")) {
    forms.push({ form: "cosign-legacy", carrier: "existing" });
  } else {
    const optional = { creator: `ovm ${VERSION}`, ...(options.annotations ?? {}) };
    const payload = simpleSigningPayload(t.source.repository, t.digest, optional);
    const layer = simpleSigningLayer(payload, await key.sign(payload));
    const prior = await t.source.legacyManifest(t.digest, signal);
    const layers = (prior?.manifest.layers ?? []).filter((l) =>
      l.mediaType === SignMediaTypes.simpleSigning
    );
    const blobs = [payload];
    // Keep earlier signatures (other keys); their payloads must travel too
    // when the .sig manifest is written to a fresh place.
    for (const l of layers) blobs.push(await t.source.blob(l, MAX_ATTACHMENT_BYTES, signal));
    const merged = dedupeLayers([...layers, layer]);
    const { manifest, config } = simpleSigningManifest(merged);
    const d = await t.source.attach(manifest, [config, ...blobs], {
      tag: signatureTag(t.digest),
      signal,
    });
    forms.push({ form: "cosign-legacy", carrier: d.digest as Digest });
  }
  return {
    reference: t.pinned,
    digest: t.digest,
    target: t.kind,
    keyFingerprint: key.publicKey.fingerprint,
    forms,
  };
}

/** Verifies `ref` (resolved once) against `keys`; throws PolicyError when nothing verifies. */
export async function verifyReference(
  ref: string,
  keys: PublicKey[],
  options: TargetOptions = {},
): Promise<VerificationReport & { reference: string; target: "local" | "remote" }> {
  const t = await resolveTarget(ref, options);
  const report = await verifyDigest(t.source, t, { keys, signal: options.signal });
  assertVerified(report, `"${ref}"`);
  return { ...report, reference: t.pinned, target: t.kind };
}

/**
 * Copies the signatures of `digest` from one source to another: bundle
 * referrers byte for byte (their digests stay the same), legacy signature
 * layers merged into the destination's `.sig` manifest. Returns how many
 * signatures were copied. Signatures are copied unverified; verification
 * happens where they are used.
 */
export async function copySignatures(
  from: SignatureSource,
  to: SignatureSource,
  digest: Digest,
  options: { signal?: AbortSignal } = {},
): Promise<number> {
  const { signal } = options;
  let n = 0;
  for (const m of await from.bundleManifests(digest, signal)) {
    const blobs = [
      await from.blob(m.manifest.config, MAX_ATTACHMENT_BYTES, signal),
      ...await Promise.all(
        m.manifest.layers.map((l) => from.blob(l, MAX_ATTACHMENT_BYTES, signal)),
      ),
    ];
    await to.attach(m.manifest, blobs, { bytes: m.bytes, signal });
    n++;
  }
  const src = await from.legacyManifest(digest, signal);
  if (src) {
    const dst = await to.legacyManifest(digest, signal);
    const pick = (m?: { manifest: { layers: Descriptor[] } }) =>
      (m?.manifest.layers ?? []).filter((l) => l.mediaType === SignMediaTypes.simpleSigning);
    const before = dedupeLayers(pick(dst));
    const merged = dedupeLayers([...before, ...pick(src)]);
    if (merged.length > before.length || !dst) {
      const blobs: Uint8Array[] = [];
      for (const l of pick(src)) blobs.push(await from.blob(l, MAX_ATTACHMENT_BYTES, signal));
      for (const l of pick(dst)) blobs.push(await to.blob(l, MAX_ATTACHMENT_BYTES, signal));
      const { manifest, config } = simpleSigningManifest(merged);
      await to.attach(manifest, [config, ...blobs], { tag: signatureTag(digest), signal });
      n += merged.length - before.length;
    }
  }
  return n;
}

/**
 * After `ovm push` of a local store ref: copies the signatures the store
 * holds for the pushed digest to the destination repository. Costs no
 * registry request when the artifact has no local signatures.
 */
export async function pushLocalSignatures(
  store: ContentStore,
  localRef: string,
  remoteRef: string,
  digest: Digest,
  options: RemoteOptions = {},
): Promise<number> {
  // An export directory carries no signatures.
  if (await Deno.stat(localRef).then((s) => s.isDirectory, () => false)) return 0;
  let repository = "";
  try {
    repository = parseLocalRef(localRef).repository;
  } catch { /* a bare digest: signatures are found by digest all the same */ }
  const from = new LocalSignatureSource(store, repository);
  const hasAny = (await from.bundleManifests(digest)).length > 0 ||
    (await from.legacyManifest(digest)) !== undefined;
  if (!hasAny) return 0;
  const r = parseReference(remoteRef);
  const to = new RemoteSignatureSource(openRepository(r, options));
  return await copySignatures(from, to, digest, { signal: options.signal });
}

/** Signatures are the same when payload and signature annotation are. */
function dedupeLayers(layers: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  return layers.filter((l) => {
    const k = `${l.digest} ${l.annotations?.["dev.cosignproject.cosign/signature"] ?? ""}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function createdNow(): string {
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH");
  return new Date(epoch ? Number(epoch) * 1000 : Date.now()).toISOString();
}
