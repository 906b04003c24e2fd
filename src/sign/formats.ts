/**
 * @module
 * The two signature forms verifiers in the field read, as documents:
 * the Sigstore bundle v0.3 (a `messageSignature` over the signed manifest's
 * bytes, so its `messageDigest` IS the manifest digest) in an OCI 1.1
 * artifact manifest whose `subject` is the signed manifest; and cosign's
 * legacy form, a simple-signing payload layer with the signature in an
 * annotation, in a manifest at tag `sha256-<hex>.sig`.
 */
import {
  BUNDLE_V03_MEDIA_TYPE,
  bundleFromJSON,
  bundleToJSON,
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

export interface ParsedBundle {
  /** The digest the bundle says was signed (`messageDigest`, SHA2_256). */
  digest: Digest;
  signature: Uint8Array;
  /** `verificationMaterial.publicKey.hint`. */
  keyHint: string;
}

/** A v0.3 bundle: messageSignature over the manifest bytes, public key by hint. */
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
  if (!isBundleWithMessageSignature(bundle)) {
    throw new ValidationError(`Sigstore bundle holds a DSSE envelope, not a message signature`, {
      hint: "ovm verifies message-signature bundles over the manifest digest",
    });
  }
  const md = bundle.content.messageSignature.messageDigest;
  // HashAlgorithm.SHA2_256 is 1 in the protobuf enum.
  if (!md || md.algorithm !== 1 || md.digest.length !== 32) {
    throw new ValidationError(`Sigstore bundle's message digest is not SHA-256`);
  }
  const hint = isBundleWithPublicKey(bundle)
    ? bundle.verificationMaterial.content.publicKey.hint
    : "";
  return {
    digest: `sha256:${Buffer.from(md.digest).toString("hex")}` as Digest,
    signature: new Uint8Array(bundle.content.messageSignature.signature),
    keyHint: hint,
  };
}

/** The OCI 1.1 artifact manifest carrying a bundle, as cosign's bundle spec lays it out. */
export function bundleManifest(subject: Descriptor, bundle: Uint8Array, created: string): {
  manifest: ImageManifest;
} {
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
        [SignAnnotations.bundleContent]: "message-signature",
        [Annotations.created]: created,
      },
    },
  };
}

function hexToBuffer(hex: string): Buffer {
  return Buffer.from(hex, "hex");
}

export { base64Decode, canonicalJson };
