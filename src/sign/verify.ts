/**
 * @module
 * Verification of one manifest digest against trusted keys, by both routes:
 * Sigstore bundles found as referrers, and legacy cosign signatures at
 * `sha256-<hex>.sig`. A signature counts only when it verifies
 * cryptographically AND what it signed is the digest being verified; a valid
 * signature for another digest is a replay and is reported as such.
 */
import { PolicyError } from "../errors.ts";
import type { Digest } from "../manifest/mod.ts";
import {
  base64Decode,
  type BundleContent,
  COSIGN_SIGN_PREDICATE,
  cosignKeyHint,
  dssePae,
  IN_TOTO_PAYLOAD_TYPE,
  parseBundle,
  parseSimpleSigningPayload,
  parseStatement,
  SignAnnotations,
  SignMediaTypes,
} from "./formats.ts";
import { type PublicKey, verifySignature } from "./keys.ts";
import {
  MAX_ATTACHMENT_BYTES,
  MAX_SIGNATURES,
  type SignatureSource,
  type StoredManifest,
} from "./sources.ts";

export type SignatureForm = "bundle" | "cosign-legacy";

export interface VerifiedSignature {
  form: SignatureForm;
  /** For bundles: a DSSE envelope (cosign 3, ovm) or a plain message signature. */
  content?: BundleContent;
  /** The trusted key that verified it: `sha256:<hex>` of its PKIX DER. */
  keyFingerprint: string;
  keySource: string;
  /** The manifest (bundle referrer or `.sig`) that carried it. */
  carrier: Digest;
}

export interface VerificationReport {
  digest: Digest;
  verified: VerifiedSignature[];
  /** Signatures found that did not count, each with why. */
  problems: string[];
  /** Signatures examined (bounded by MAX_SIGNATURES). */
  examined: number;
}

/**
 * Checks every signature `source` holds for `subject` (whose manifest bytes
 * are `subjectBytes`, already digest-checked) against `keys`.
 */
export async function verifyDigest(
  source: SignatureSource,
  subject: { digest: Digest; bytes: Uint8Array },
  options: { keys: PublicKey[]; signal?: AbortSignal },
): Promise<VerificationReport> {
  const { keys, signal } = options;
  const report: VerificationReport = {
    digest: subject.digest,
    verified: [],
    problems: [],
    examined: 0,
  };
  const budget = () => report.examined < MAX_SIGNATURES;

  for (const m of await source.bundleManifests(subject.digest, signal)) {
    if (!budget()) break;
    report.examined++;
    try {
      const v = await checkBundle(source, m, subject, keys, signal);
      if (typeof v === "string") report.problems.push(v);
      else report.verified.push(v);
    } catch (e) {
      report.problems.push(`bundle ${m.descriptor.digest}: ${(e as Error).message}`);
    }
  }

  const legacy = await source.legacyManifest(subject.digest, signal);
  if (legacy) {
    for (const layer of legacy.manifest.layers) {
      if (layer.mediaType !== SignMediaTypes.simpleSigning) continue;
      if (!budget()) break;
      report.examined++;
      const where = `cosign signature ${layer.digest} in ${legacy.descriptor.digest}`;
      try {
        const sigB64 = layer.annotations?.[SignAnnotations.signature];
        if (!sigB64) {
          report.problems.push(`${where}: no "${SignAnnotations.signature}" annotation`);
          continue;
        }
        const sig = base64Decode(sigB64);
        const payload = await source.blob(layer, MAX_ATTACHMENT_BYTES, signal);
        const key = await firstVerifying(keys, sig, payload);
        if (!key) {
          report.problems.push(`${where}: does not verify with any trusted key`);
          continue;
        }
        const p = parseSimpleSigningPayload(payload);
        if (p.digest !== subject.digest) {
          report.problems.push(
            `${where}: signs "${p.digest}", not "${subject.digest}" (a signature replayed from another artifact)`,
          );
          continue;
        }
        report.verified.push({
          form: "cosign-legacy",
          keyFingerprint: key.fingerprint,
          keySource: key.source,
          carrier: legacy.descriptor.digest as Digest,
        });
      } catch (e) {
        report.problems.push(`${where}: ${(e as Error).message}`);
      }
    }
  }
  return report;
}

async function checkBundle(
  source: SignatureSource,
  m: StoredManifest,
  subject: { digest: Digest; bytes: Uint8Array },
  keys: PublicKey[],
  signal?: AbortSignal,
): Promise<VerifiedSignature | string> {
  const where = `bundle ${m.descriptor.digest}`;
  if (m.manifest.subject?.digest !== subject.digest) {
    return `${where}: its subject is "${m.manifest.subject?.digest}", not "${subject.digest}"`;
  }
  const layer = m.manifest.layers.find((l) => l.mediaType === SignMediaTypes.bundle);
  if (!layer) return `${where}: no layer of media type "${SignMediaTypes.bundle}"`;
  const bundle = parseBundle(await source.blob(layer, MAX_ATTACHMENT_BYTES, signal));
  // The hint names the key; try it first, then the rest (hints are advisory).
  const ordered = [
    ...keys.filter((k) => bundle.keyHint && keyMatchesHint(k, bundle.keyHint)),
    ...keys,
  ];
  const verified = (key: PublicKey): VerifiedSignature => ({
    form: "bundle",
    content: bundle.content,
    keyFingerprint: key.fingerprint,
    keySource: key.source,
    carrier: m.descriptor.digest as Digest,
  });
  const replay = (signed: string) =>
    `${where}: signs "${signed}", not "${subject.digest}" (a signature replayed from another artifact)`;

  if (bundle.content === "message-signature") {
    if (bundle.digest !== subject.digest) return replay(bundle.digest);
    const key = await firstVerifying(ordered, bundle.signature, subject.bytes);
    if (!key) return `${where}: does not verify with any trusted key`;
    return verified(key);
  }
  if (bundle.payloadType !== IN_TOTO_PAYLOAD_TYPE) {
    return `${where}: its DSSE payload type is "${bundle.payloadType}", not "${IN_TOTO_PAYLOAD_TYPE}"`;
  }
  // The envelope's signature first: nothing unverified is interpreted further.
  const pae = dssePae(bundle.payloadType, bundle.payload);
  let key: PublicKey | undefined;
  for (const sig of bundle.signatures) {
    key = await firstVerifying(ordered, sig, pae);
    if (key) break;
  }
  if (!key) return `${where}: does not verify with any trusted key`;
  const st = parseStatement(bundle.payload);
  if (st.predicateType !== COSIGN_SIGN_PREDICATE) {
    return `${where}: is an attestation (predicate "${st.predicateType}"), not a signature (predicate "${COSIGN_SIGN_PREDICATE}")`;
  }
  if (!st.subjects.includes(subject.digest)) {
    return replay(st.subjects.join(", ") || "no sha256 subject");
  }
  return verified(key);
}

/** A bundle's key hint: cosign's base64 SHA-256 of the PKIX DER, or the hex ovm once wrote. */
function keyMatchesHint(k: PublicKey, hint: string): boolean {
  const hex = k.fingerprint.slice("sha256:".length);
  return hint === hex || hint === cosignKeyHint(k.spki);
}

async function firstVerifying(
  keys: PublicKey[],
  sig: Uint8Array,
  data: Uint8Array,
): Promise<PublicKey | undefined> {
  for (const k of keys) {
    if (await verifySignature(k, sig, data)) return k;
  }
  return undefined;
}

/** Throws a PolicyError listing the problems when nothing verified. */
export function assertVerified(report: VerificationReport, what: string): void {
  if (report.verified.length) return;
  const detail = report.problems.length
    ? `:\n  - ${report.problems.join("\n  - ")}`
    : ": no signature found (no bundle referrer, no sha256-<hex>.sig tag)";
  throw new PolicyError(
    `No valid signature by a trusted key for ${what} (${report.digest})${detail}`,
    {
      hint:
        "sign it with `ovm sign --key KEY <ref>`, or check that --key is the signer's public key",
    },
  );
}
