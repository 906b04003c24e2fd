/**
 * @module
 * Signing keys: ECDSA P-256 key pairs as PEM files. Private keys are PKCS#8
 * (`PRIVATE KEY`), optionally encrypted as a standard PKCS#8
 * `ENCRYPTED PRIVATE KEY` (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC) or in
 * cosign's own format (`ENCRYPTED SIGSTORE PRIVATE KEY`, older
 * `ENCRYPTED COSIGN PRIVATE KEY`: a JSON envelope of scrypt + NaCl secretbox
 * around the PKCS#8 DER), so keys made by `cosign generate-key-pair` work
 * as they are. Public keys are PKIX (`PUBLIC KEY`). The signature itself is
 * WebCrypto ECDSA P-256 / SHA-256, exchanged as ASN.1 DER as cosign does.
 */
import { createPrivateKey, scryptSync } from "node:crypto";
import nacl from "tweetnacl";
import { ValidationError } from "../errors.ts";
import { sha256Hex } from "../manifest/mod.ts";
import { readFileBounded, writeFileAtomic } from "../util/fs.ts";

const ALG = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN_ALG = { name: "ECDSA", hash: "SHA-256" } as const;
const MAX_KEY_FILE = 64 << 10;

/** PEM labels of the private key formats ovm reads. */
export const PemLabels = {
  privateKey: "PRIVATE KEY",
  encryptedPrivateKey: "ENCRYPTED PRIVATE KEY",
  sigstore: "ENCRYPTED SIGSTORE PRIVATE KEY",
  cosign: "ENCRYPTED COSIGN PRIVATE KEY",
  publicKey: "PUBLIC KEY",
} as const;

/** A public key trusted for verification. */
export interface PublicKey {
  /** PKIX SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
  key: CryptoKey;
  /** `sha256:<hex>` of the SPKI DER. */
  fingerprint: string;
  /** Where it came from (a path, or "inline"). */
  source: string;
}

/** A private key able to sign, with its public half. */
export interface SigningKey {
  privateKey: CryptoKey;
  publicKey: PublicKey;
  /** Returns an ASN.1 DER ECDSA signature over SHA-256(data). */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

// ---- PEM ----

export interface PemBlock {
  label: string;
  der: Uint8Array;
}

/** Decodes the PEM blocks of a text (anything outside blocks is ignored). */
export function decodePem(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
  for (const m of text.matchAll(re)) {
    out.push({ label: m[1], der: base64Decode(m[2].replace(/\s+/g, "")) });
  }
  return out;
}

export function encodePem(label: string, der: Uint8Array): string {
  const b64 = base64Encode(der);
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

export function base64Encode(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function base64Decode(s: string): Uint8Array {
  try {
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  } catch (e) {
    throw new ValidationError(`Invalid base64 data`, { cause: e });
  }
}

// ---- generation ----

export type PrivateKeyFormat = "pkcs8" | "cosign";

export interface GeneratedKeyPair {
  privatePem: string;
  publicPem: string;
  fingerprint: string;
}

/**
 * Makes a P-256 key pair. With a passphrase the private key is encrypted:
 * as PKCS#8 PBES2 (`pkcs8`, readable by openssl) or cosign's scrypt +
 * secretbox envelope (`cosign`, readable by `cosign sign --key`).
 */
export async function generateKeyPair(
  options: { passphrase?: string; format?: PrivateKeyFormat } = {},
): Promise<GeneratedKeyPair> {
  const pair = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const format = options.format ?? "pkcs8";
  let privatePem: string;
  if (format === "cosign") {
    privatePem = encodePem(PemLabels.sigstore, encryptSigstore(pkcs8, options.passphrase ?? ""));
  } else if (options.passphrase) {
    privatePem = createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" })
      .export({
        format: "pem",
        type: "pkcs8",
        cipher: "aes-256-cbc",
        passphrase: options.passphrase,
      }) as string;
  } else {
    privatePem = encodePem(PemLabels.privateKey, pkcs8);
  }
  return {
    privatePem,
    publicPem: encodePem(PemLabels.publicKey, spki),
    fingerprint: keyFingerprint(spki),
  };
}

/** Writes `<prefix>.key` (0600, never overwriting) and `<prefix>.pub`. */
export async function writeKeyPair(
  prefix: string,
  pair: GeneratedKeyPair,
  options: { force?: boolean } = {},
): Promise<{ privatePath: string; publicPath: string }> {
  const privatePath = `${prefix}.key`;
  const publicPath = `${prefix}.pub`;
  if (!options.force) {
    for (const p of [privatePath, publicPath]) {
      const there = await Deno.lstat(p).then(() => true, () => false);
      if (there) {
        throw new ValidationError(`Key file "${p}" already exists`, {
          hint: "choose another --output-key-prefix, or remove the old key pair first",
        });
      }
    }
  }
  await writeFileAtomic(privatePath, pair.privatePem, { mode: 0o600 });
  await Deno.chmod(privatePath, 0o600);
  await writeFileAtomic(publicPath, pair.publicPem, { mode: 0o644 });
  return { privatePath, publicPath };
}

// ---- loading ----

/** `sha256:<hex>` of a PKIX DER public key (what `ovm verify` prints). */
export function keyFingerprint(spki: Uint8Array): string {
  return `sha256:${sha256Hex(spki)}`;
}

/**
 * Loads a private key file. Encrypted keys need `passphrase`; cosign keys
 * made with an empty password open with "" as cosign's do.
 */
export async function loadSigningKey(
  path: string,
  options: { passphrase?: string } = {},
): Promise<SigningKey> {
  const text = await readKeyFile(path, "private key");
  return await parseSigningKey(text, { ...options, source: path });
}

export async function parseSigningKey(
  text: string,
  options: { passphrase?: string; source?: string } = {},
): Promise<SigningKey> {
  const source = options.source ?? "private key";
  const block = decodePem(text).find((b) => b.label.includes("PRIVATE KEY"));
  if (!block) {
    throw new ValidationError(`"${source}" holds no PEM private key`, {
      hint:
        "expected PRIVATE KEY, ENCRYPTED PRIVATE KEY, or a cosign ENCRYPTED SIGSTORE/COSIGN PRIVATE KEY",
    });
  }
  let pkcs8: Uint8Array;
  switch (block.label) {
    case PemLabels.privateKey:
      pkcs8 = block.der;
      break;
    case PemLabels.encryptedPrivateKey: {
      if (options.passphrase === undefined) throw needPassphrase(source);
      try {
        pkcs8 = new Uint8Array(
          createPrivateKey({ key: text, format: "pem", passphrase: options.passphrase })
            .export({ format: "der", type: "pkcs8" }) as Uint8Array,
        );
      } catch (e) {
        throw wrongPassphrase(source, e);
      }
      break;
    }
    case PemLabels.sigstore:
    case PemLabels.cosign:
      pkcs8 = decryptSigstore(block.der, options.passphrase ?? "", source);
      break;
    default:
      throw new ValidationError(`"${source}": unsupported PEM block "${block.label}"`, {
        hint: "ovm signs with ECDSA P-256 keys in PKCS#8 or cosign's format",
      });
  }
  let privateKey: CryptoKey;
  try {
    privateKey = await crypto.subtle.importKey("pkcs8", ab(pkcs8), ALG, true, ["sign"]);
  } catch (e) {
    throw new ValidationError(`"${source}" is not an ECDSA P-256 private key`, {
      cause: e,
      hint: "ovm signs with ECDSA P-256 (what `ovm keygen` and `cosign generate-key-pair` make)",
    });
  }
  // WebCrypto has no private → public step; the JWK carries x and y.
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  const pub = await crypto.subtle.importKey(
    "jwk",
    { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y, ext: true },
    ALG,
    true,
    ["verify"],
  );
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pub));
  const publicKey: PublicKey = { spki, key: pub, fingerprint: keyFingerprint(spki), source };
  return {
    privateKey,
    publicKey,
    async sign(data) {
      const raw = new Uint8Array(await crypto.subtle.sign(SIGN_ALG, privateKey, ab(data)));
      return p1363ToDer(raw);
    },
  };
}

/** Loads a PKIX public key from a file path, or from inline PEM text. */
export async function loadPublicKey(pathOrPem: string): Promise<PublicKey> {
  const inline = pathOrPem.includes("-----BEGIN");
  const text = inline ? pathOrPem : await readKeyFile(pathOrPem, "public key");
  return await parsePublicKey(text, inline ? "inline" : pathOrPem);
}

export async function parsePublicKey(text: string, source = "public key"): Promise<PublicKey> {
  const block = decodePem(text).find((b) => b.label === PemLabels.publicKey);
  if (!block) {
    throw new ValidationError(`"${source}" holds no PEM "PUBLIC KEY" block`, {
      hint: "pass the .pub file written by `ovm keygen` or `cosign generate-key-pair`",
    });
  }
  try {
    const key = await crypto.subtle.importKey("spki", ab(block.der), ALG, true, ["verify"]);
    return { spki: block.der, key, fingerprint: keyFingerprint(block.der), source };
  } catch (e) {
    throw new ValidationError(`"${source}" is not an ECDSA P-256 public key`, { cause: e });
  }
}

/** Verifies an ASN.1 DER (or raw r||s) ECDSA P-256 / SHA-256 signature. */
export async function verifySignature(
  key: PublicKey,
  signature: Uint8Array,
  data: Uint8Array,
): Promise<boolean> {
  let raw: Uint8Array;
  try {
    raw = signature.length === 64 ? signature : derToP1363(signature);
  } catch {
    return false;
  }
  return await crypto.subtle.verify(SIGN_ALG, key.key, ab(raw), ab(data));
}

/** A copy on a plain ArrayBuffer, as WebCrypto's types ask. */
function ab(u: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(u);
}

async function readKeyFile(path: string, what: string): Promise<string> {
  try {
    return new TextDecoder().decode(await readFileBounded(path, MAX_KEY_FILE));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new ValidationError(`No such ${what} file "${path}"`, {
        cause: e,
        hint: "create a key pair with `ovm keygen`",
      });
    }
    if (e instanceof RangeError) {
      throw new ValidationError(`"${path}" is too large to be a ${what}`, { cause: e });
    }
    throw e;
  }
}

function needPassphrase(source: string): ValidationError {
  return new ValidationError(`Private key "${source}" is encrypted and no passphrase was given`, {
    hint: "set COSIGN_PASSWORD, or name the variable holding it with --passphrase-env VAR",
  });
}

function wrongPassphrase(source: string, cause: unknown): ValidationError {
  return new ValidationError(`Cannot decrypt private key "${source}": wrong passphrase`, {
    cause,
    hint: "check COSIGN_PASSWORD or the variable named by --passphrase-env",
  });
}

// ---- cosign / sigstore encrypted keys ----

interface SigstoreEnvelope {
  kdf: { name: string; params: { N: number; r: number; p: number }; salt: string };
  cipher: { name: string; nonce: string };
  ciphertext: string;
}

const SCRYPT_DEFAULT = { N: 65536, r: 8, p: 1 };

function scryptKey(passphrase: string, salt: Uint8Array, p: { N: number; r: number; p: number }) {
  return new Uint8Array(
    scryptSync(new TextEncoder().encode(passphrase), salt, 32, {
      N: p.N,
      r: p.r,
      p: p.p,
      maxmem: 256 * p.N * p.r + (1 << 20),
    }),
  );
}

/** cosign's encrypted key body: scrypt(N=65536,r=8,p=1, 32-byte salt) + secretbox. */
export function encryptSigstore(pkcs8: Uint8Array, passphrase: string): Uint8Array {
  const salt = crypto.getRandomValues(new Uint8Array(32));
  const nonce = crypto.getRandomValues(new Uint8Array(nacl.secretbox.nonceLength));
  const key = scryptKey(passphrase, salt, SCRYPT_DEFAULT);
  const env: SigstoreEnvelope = {
    kdf: { name: "scrypt", params: SCRYPT_DEFAULT, salt: base64Encode(salt) },
    cipher: { name: "nacl/secretbox", nonce: base64Encode(nonce) },
    ciphertext: base64Encode(nacl.secretbox(pkcs8, nonce, key)),
  };
  return new TextEncoder().encode(JSON.stringify(env));
}

export function decryptSigstore(body: Uint8Array, passphrase: string, source: string): Uint8Array {
  let env: SigstoreEnvelope;
  try {
    env = JSON.parse(new TextDecoder().decode(body));
  } catch (e) {
    throw new ValidationError(`Cosign key "${source}" does not hold a JSON envelope`, { cause: e });
  }
  const p = env?.kdf?.params;
  if (
    env?.kdf?.name !== "scrypt" || env?.cipher?.name !== "nacl/secretbox" || !p ||
    !Number.isInteger(p.N) || !Number.isInteger(p.r) || !Number.isInteger(p.p) ||
    p.N < 2 || p.N > (1 << 20) || p.r < 1 || p.r > 32 || p.p < 1 || p.p > 16
  ) {
    throw new ValidationError(
      `Cosign key "${source}" uses an unsupported KDF or cipher ("${env?.kdf?.name}", "${env?.cipher?.name}")`,
      { hint: "ovm reads scrypt + nacl/secretbox keys, as cosign generate-key-pair writes" },
    );
  }
  const key = scryptKey(passphrase, base64Decode(env.kdf.salt), p);
  const plain = nacl.secretbox.open(
    base64Decode(env.ciphertext),
    base64Decode(env.cipher.nonce),
    key,
  );
  if (!plain) {
    throw wrongPassphrase(source, new Error("secretbox authentication failed"));
  }
  return plain;
}

// ---- ECDSA signature encodings ----

/** WebCrypto's r||s (IEEE P1363) → ASN.1 DER `SEQUENCE { INTEGER r, INTEGER s }`. */
export function p1363ToDer(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  const int = (b: Uint8Array) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    const v = b.subarray(i);
    const pad = v[0] & 0x80 ? [0] : [];
    return [0x02, v.length + pad.length, ...pad, ...v];
  };
  const body = [...int(raw.subarray(0, half)), ...int(raw.subarray(half))];
  return new Uint8Array([0x30, body.length, ...body]);
}

/** ASN.1 DER ECDSA signature → r||s of 32 bytes each. */
export function derToP1363(der: Uint8Array): Uint8Array {
  let i = 0;
  const fail = () => {
    throw new RangeError("malformed DER ECDSA signature");
  };
  if (der[i++] !== 0x30) fail();
  let len = der[i++];
  if (len & 0x80) {
    if (len !== 0x81) fail();
    len = der[i++];
  }
  if (i + len !== der.length) fail();
  const out = new Uint8Array(64);
  for (let k = 0; k < 2; k++) {
    if (der[i++] !== 0x02) fail();
    const n = der[i++];
    let v = der.subarray(i, i + n);
    i += n;
    while (v.length > 32 && v[0] === 0) v = v.subarray(1);
    if (v.length > 32 || v.length === 0) fail();
    out.set(v, k * 32 + (32 - v.length));
  }
  if (i !== der.length) fail();
  return out;
}
