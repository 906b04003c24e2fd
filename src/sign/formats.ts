/**
 * @module
 * The two signature forms verifiers in the field read, as documents:
 * the Sigstore bundle v0.3 in an OCI 1.1 artifact manifest whose `subject`
 * is the signed manifest — written as cosign 3 writes it, a DSSE envelope
 * around an in-toto statement naming the manifest digest (predicate
 * `https://sigstore.dev/cosign/sign/v1`); also read as a `messageSignature`
 * over the manifest's bytes, as ovm wrote it before —; and cosign's legacy
 * form, a simple-signing payload layer with the signature in an annotation,
 * in a manifest at tag `sha256-<hex>.sig`.
 */
import {
  BUNDLE_V03_MEDIA_TYPE,
  bundleFromJSON,
  bundleToJSON,
  isBundleWithDsseEnvelope,
  isBundleWithMessageSignature,
  isBundleWithPublicKey,
  toMessageSignatureBundle,
} from "@sigstore/bundle";
import { ValidationError } from "../errors.ts";
import {
  Annotations,
  canonicalJson,
  type Descriptor,
  type Digest,
  digestHex,
  digestOf,
  type ImageManifest,
  isDigest,
  MediaTypes,
  parseJsonBytes,
  sha256Hex,
} from "../manifest/mod.ts";
import { base64Decode, base64Encode } from "./keys.ts";

export const SignMediaTypes = {
  bundle: BUNDLE_V03_MEDIA_TYPE as "application/vnd.dev.sigstore.bundle.v0.3+json",
  simpleSigning: "application/vnd.dev.cosign.simplesigning.v1+json",
} as const;

export const SignAnnotations = {
  /** On a simple-signing layer: base64 of the DER ECDSA signature over the payload. */
  signature: "dev.cosignproject.cosign/signature",
  /** On a bundle manifest: "message-signature" or "dsse-envelope" (cosign's bundle spec). */
  bundleContent: "dev.sigstore.bundle.content",
  /** On a DSSE bundle manifest: the statement's predicate type. */
  bundlePredicateType: "dev.sigstore.bundle.predicateType",
} as const;

export const SIMPLE_SIGNING_TYPE = "cosign container image signature";

/** Cosign's tag for the legacy signatures of `digest`. */
export function signatureTag(digest: Digest): string {
  return `sha256-${digestHex(digest)}.sig`;
}

/** The OCI empty config (`{}`), used by artifact manifests. */
export const EMPTY_CONFIG = new TextEncoder().encode("{}");

// ---- simple signing (legacy cosign) ----

export interface SimpleSigningPayload {
  dockerReference: string;
  digest: Digest;
  optional: Record<string, unknown> | null;
}

/**
 * The simple-signing payload, with cosign's key order. `dockerReference` is
 * the repository without tag or digest, as cosign writes it.
 */
export function simpleSigningPayload(
  dockerReference: string,
  digest: Digest,
  optional: Record<string, unknown> | null,
): Uint8Array {
  const doc = {
    critical: {
      identity: { "docker-reference": dockerReference },
      image: { "docker-manifest-digest": digest },
      type: SIMPLE_SIGNING_TYPE,
    },
    optional,
  };
  return new TextEncoder().encode(JSON.stringify(doc));
}

export function parseSimpleSigningPayload(bytes: Uint8Array): SimpleSigningPayload {
  const doc = parseJsonBytes(bytes, { source: "simple-signing payload" }) as {
    critical?: {
      identity?: { "docker-reference"?: unknown };
      image?: { "docker-manifest-digest"?: unknown };
      type?: unknown;
    };
    optional?: unknown;
  };
  const c = doc?.critical;
  const digest = c?.image?.["docker-manifest-digest"];
  if (c?.type !== SIMPLE_SIGNING_TYPE || !isDigest(digest)) {
    throw new ValidationError(
      `Simple-signing payload is not a cosign container image signature`,
      {
        hint:
          `expected critical.type "${SIMPLE_SIGNING_TYPE}" and a sha256 critical.image.docker-manifest-digest`,
      },
    );
  }
  const ref = c.identity?.["docker-reference"];
  return {
    dockerReference: typeof ref === "string" ? ref : "",
    digest,
    optional: typeof doc.optional === "object" && doc.optional !== null
      ? doc.optional as Record<string, unknown>
      : null,
  };
}

/** A layer of the legacy `.sig` manifest. */
export function simpleSigningLayer(payload: Uint8Array, signature: Uint8Array): Descriptor {
  return {
    mediaType: SignMediaTypes.simpleSigning,
    digest: digestOf(payload),
    size: payload.byteLength,
    annotations: { [SignAnnotations.signature]: base64Encode(signature) },
  };
}

/** The config cosign writes for a `.sig` image: one diff_id per payload layer. */
export function simpleSigningConfig(layers: Descriptor[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({
    architecture: "",
    created: "0001-01-01T00:00:00Z",
    history: [{ created: "0001-01-01T00:00:00Z" }],
    os: "",
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) },
    config: {},
  }));
}

export function simpleSigningManifest(layers: Descriptor[]): {
  manifest: ImageManifest;
  config: Uint8Array;
} {
  const config = simpleSigningConfig(layers);
  return {
    config,
    manifest: {
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: {
        mediaType: MediaTypes.ociConfig,
        digest: digestOf(config),
        size: config.byteLength,
      },
      layers,
    },
  };
}

// ---- Sigstore bundle ----

/** DSSE payload type of an in-toto statement. */
export const IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";
/** The statement types ovm reads (v1 is what it and cosign 3 write). */
export const IN_TOTO_STATEMENT_TYPES = [
  "https://in-toto.io/Statement/v1",
  "https://in-toto.io/Statement/v0.1",
] as const;
/** The predicate of cosign 3's image signature: "this digest is signed", no claims. */
export const COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1";

export type BundleContent = "dsse-envelope" | "message-signature";

/**
 * The in-toto statement cosign 3 signs for an image, field for field: one
 * subject naming only the digest, predicate type `cosign/sign/v1`, an empty
 * predicate. `annotations` (from `-a`) ride on the subject.
 */
export function signStatement(
  digest: Digest,
  annotations: Record<string, string> = {},
): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({
    _type: IN_TOTO_STATEMENT_TYPES[0],
    subject: [{ digest: { sha256: digestHex(digest) }, annotations }],
    predicateType: COSIGN_SIGN_PREDICATE,
    predicate: {},
  }));
}

/** DSSE pre-authentication encoding: the bytes a DSSE signature is over. */
export function dssePae(payloadType: string, payload: Uint8Array): Uint8Array {
  const enc = new TextEncoder();
  const type = enc.encode(payloadType);
  const head = enc.encode(`DSSEv1 ${type.byteLength} ${payloadType} ${payload.byteLength} `);
  const out = new Uint8Array(head.byteLength + payload.byteLength);
  out.set(head);
  out.set(payload, head.byteLength);
  return out;
}

/** Cosign's public key hint: standard base64 of SHA-256 over the PKIX DER. */
export function cosignKeyHint(spki: Uint8Array): string {
  return base64Encode(hexToBuffer(sha256Hex(spki)));
}

export type ParsedBundle =
  & { keyHint: string }
  & (
    | {
      content: "message-signature";
      /** The digest the bundle says was signed (`messageDigest`, SHA2_256). */
      digest: Digest;
      signature: Uint8Array;
    }
    | {
      content: "dsse-envelope";
      payloadType: string;
      payload: Uint8Array;
      signatures: Uint8Array[];
    }
  );

/** A v0.3 bundle holding a message signature over the manifest bytes (ovm before 0.1.1). */
export function buildBundle(
  manifestDigest: Digest,
  signature: Uint8Array,
  keyHint: string,
): Uint8Array {
  const bundle = toMessageSignatureBundle({
    digest: hexToBuffer(digestHex(manifestDigest)),
    signature: Buffer.from(signature),
    keyHint,
  });
  return new TextEncoder().encode(JSON.stringify(bundleToJSON(bundle)));
}

/**
 * A v0.3 bundle as cosign 3 writes it: a DSSE envelope around `statement`
 * (see {@linkcode signStatement}), `signature` over its PAE, key by hint.
 */
export function buildDsseBundle(
  statement: Uint8Array,
  signature: Uint8Array,
  keyHint: string,
): Uint8Array {
  // Written out rather than with toDSSEBundle: that sets each signature's
  // `keyid` to the hint, and cosign's DSSE verifier skips a signature whose
  // keyid its verifier does not claim ("accepted signatures do not match
  // threshold"). cosign 3 writes no keyid.
  return new TextEncoder().encode(JSON.stringify({
    mediaType: SignMediaTypes.bundle,
    verificationMaterial: { publicKey: { hint: keyHint } },
    dsseEnvelope: {
      payload: base64Encode(statement),
      payloadType: IN_TOTO_PAYLOAD_TYPE,
      signatures: [{ sig: base64Encode(signature) }],
    },
  }));
}

export function parseBundle(bytes: Uint8Array): ParsedBundle {
  const json = parseJsonBytes(bytes, { source: "Sigstore bundle" });
  let bundle;
  try {
    bundle = bundleFromJSON(json);
  } catch (e) {
    throw new ValidationError(`Sigstore bundle is malformed: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const keyHint = isBundleWithPublicKey(bundle)
    ? bundle.verificationMaterial.content.publicKey.hint
    : "";
  if (isBundleWithDsseEnvelope(bundle)) {
    const env = bundle.content.dsseEnvelope;
    return {
      content: "dsse-envelope",
      keyHint,
      payloadType: env.payloadType,
      payload: new Uint8Array(env.payload),
      signatures: env.signatures.map((s) => new Uint8Array(s.sig)),
    };
  }
  if (!isBundleWithMessageSignature(bundle)) {
    throw new ValidationError(`Sigstore bundle holds neither a DSSE envelope nor a signature`);
  }
  const md = bundle.content.messageSignature.messageDigest;
  // HashAlgorithm.SHA2_256 is 1 in the protobuf enum.
  if (!md || md.algorithm !== 1 || md.digest.length !== 32) {
    throw new ValidationError(`Sigstore bundle's message digest is not SHA-256`);
  }
  return {
    content: "message-signature",
    keyHint,
    digest: `sha256:${Buffer.from(md.digest).toString("hex")}` as Digest,
    signature: new Uint8Array(bundle.content.messageSignature.signature),
  };
}

export interface SignStatement {
  predicateType: string;
  /** The sha256 digests of the statement's subjects. */
  subjects: Digest[];
}

/** Reads an in-toto statement (v1 or v0.1) from a DSSE payload. */
export function parseStatement(payload: Uint8Array): SignStatement {
  const doc = parseJsonBytes(payload, { source: "in-toto statement" }) as {
    _type?: unknown;
    subject?: unknown;
    predicateType?: unknown;
  };
  if (
    !IN_TOTO_STATEMENT_TYPES.includes(doc?._type as typeof IN_TOTO_STATEMENT_TYPES[number]) ||
    !Array.isArray(doc.subject) || typeof doc.predicateType !== "string"
  ) {
    throw new ValidationError(`DSSE payload is not an in-toto statement`, {
      hint: `expected _type "${IN_TOTO_STATEMENT_TYPES[0]}", a subject list and a predicateType`,
    });
  }
  const subjects: Digest[] = [];
  for (const s of doc.subject as { digest?: { sha256?: unknown } }[]) {
    const hex = s?.digest?.sha256;
    if (typeof hex === "string" && /^[0-9a-f]{64}$/.test(hex)) {
      subjects.push(`sha256:${hex}` as Digest);
    }
  }
  return { predicateType: doc.predicateType, subjects };
}

/**
 * The OCI 1.1 artifact manifest carrying a bundle, as cosign 3 lays it out:
 * empty config, the bundle as the one layer, `subject` the signed manifest,
 * `dev.sigstore.bundle.content` (and for DSSE the predicate type) annotated.
 */
export function bundleManifest(
  subject: Descriptor,
  bundle: Uint8Array,
  options: { created: string; content: BundleContent; predicateType?: string },
): { manifest: ImageManifest } {
  const d = digestOf(bundle);
  return {
    manifest: {
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      artifactType: SignMediaTypes.bundle,
      config: {
        mediaType: MediaTypes.ociEmpty,
        digest: digestOf(EMPTY_CONFIG),
        size: EMPTY_CONFIG.byteLength,
      },
      layers: [{
        mediaType: SignMediaTypes.bundle,
        digest: d,
        size: bundle.byteLength,
        annotations: { [Annotations.title]: `sha256-${digestHex(d)}.sigstore.json` },
      }],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
      annotations: {
        [SignAnnotations.bundleContent]: options.content,
        ...(options.predicateType
          ? { [SignAnnotations.bundlePredicateType]: options.predicateType }
          : {}),
        [Annotations.created]: options.created,
      },
    },
  };
}

function hexToBuffer(hex: string): Buffer {
  return Buffer.from(hex, "hex");
}

export { base64Decode, canonicalJson };
