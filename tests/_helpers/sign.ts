/**
 * @module
 * Test helpers for signing: an artifact with a RAM snapshot layer (built from
 * a packed dummy), key pairs on disk, and raw registry reads.
 */
import { join } from "node:path";
import { generateKeyPair, writeKeyPair } from "../../src/sign/mod.ts";
import { ContentStore, loadArtifact, writeArtifact } from "../../src/store/mod.ts";
import { packDummy } from "./registry.ts";

/** Packs `tag` and then `snapTag`: the same artifact plus a (dummy) lz4 RAM snapshot layer. */
export async function packWithSnapshot(
  home: string,
  tag: string,
  snapTag: string,
): Promise<{ digest: string; snapDigest: string }> {
  const base = await packDummy(home, tag);
  const store = await ContentStore.open(home);
  const art = await loadArtifact(store, tag);
  const snap = await store.writeBlob(new TextEncoder().encode("not really lz4 RAM"));
  const desc = await writeArtifact(store, {
    ...art.manifest,
    ramSnapshot: {
      ref: snap.digest,
      compression: "lz4",
      preload_hint: false,
      mlock_required: false,
    },
  });
  await store.tag(snapTag, desc);
  return { digest: base.digest, snapDigest: desc.digest };
}

/** Writes a fresh unencrypted key pair at `dir/name.{key,pub}`. */
export async function makeKeys(dir: string, name: string) {
  const pair = await generateKeyPair();
  const paths = await writeKeyPair(join(dir, name), pair);
  return { ...paths, fingerprint: pair.fingerprint };
}

/** GETs a manifest straight from the registry (no ovm code in the path). */
// deno-lint-ignore no-explicit-any
export async function rawManifest(url: string, repo: string, ref: string): Promise<any> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${ref}`, {
    headers: {
      accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
    },
  });
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`GET ${repo}/manifests/${ref}: ${res.status}`);
  }
  return await res.json();
}

export async function rawBlob(url: string, repo: string, digest: string): Promise<Uint8Array> {
  const res = await fetch(`${url}/v2/${repo}/blobs/${digest}`);
  if (!res.ok) throw new Error(`GET blob ${digest}: ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}
