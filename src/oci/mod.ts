/**
 * @module
 * OCI distribution: references, the registry transport and client, and the
 * copy engine behind `ovm push`, `ovm pull` and `ovm copy`. The library entry
 * points ({@linkcode pullToStore}, {@linkcode pushFromStore},
 * {@linkcode copyBetween}, {@linkcode listReferrers}) are what other verbs
 * (convert, snapshot --push, sign) call.
 */
import { NotFoundError, ValidationError } from "../errors.ts";
import { type Descriptor, type Digest, MediaTypes, parseJsonBytes } from "../manifest/mod.ts";
import { artifactFromDocuments, type ContentStore, loadArtifact } from "../store/mod.ts";
import {
  copy,
  type CopyEvent,
  type CopyResult,
  type CopySource,
  DirSource,
  hostPlatform,
  type Platform,
  RemoteSource,
  RemoteTarget,
  StoreSource,
  StoreTarget,
} from "./copy.ts";
import { fileCredentials } from "./credentials/mod.ts";
import { defaultLocalRef, LAYOUT_PREFIX, OciLayoutSource, parseLayoutReference } from "./layout.ts";
import { parseReference, type Reference, referenceName } from "./reference.ts";
import {
  type CredentialProvider,
  defaultTransport,
  Repository,
  type RetryOptions,
  TlsTrust,
  type Transport,
} from "./remote/mod.ts";

export * from "./reference.ts";
export * from "./remote/mod.ts";
export * from "./copy.ts";
export * from "./credentials/mod.ts";
export * from "./layout.ts";

export interface RemoteOptions {
  signal?: AbortSignal;
  /** A transport to use as is (tests, or a caller with its own auth). */
  transport?: Transport;
  /** Where credentials come from; default `$home/auth.json` then Docker's config. */
  credentials?: CredentialProvider;
  /** `$OVM_HOME`, for the default credentials. */
  home?: string;
  /** A containers auth file read instead of `$REGISTRY_AUTH_FILE` (`--authfile`). */
  authFile?: string;
  /** A PEM file of CA certificates to trust for every registry (`--ca-file`). */
  caFile?: string;
  /** Where credentials, helpers and TLS settings are looked up (default the process's env). */
  env?: { get(key: string): string | undefined };
  /** true: HTTP; false: HTTPS even for a loopback registry; default HTTPS, HTTP for loopback. */
  plainHttp?: boolean;
  insecure?: boolean;
  retry?: RetryOptions;
  concurrency?: number;
  chunkSize?: number;
  monolithicMax?: number;
  onEvent?: (e: CopyEvent) => void;
}

/** Parses a remote reference; the registry is required to be explicit or docker.io. */
export function parseRemoteReference(input: string): Reference {
  return parseReference(input);
}

/** A repository client with the default transport stack for `options`. */
export function openRepository(ref: Reference | string, options: RemoteOptions = {}): Repository {
  const r = typeof ref === "string" ? parseRemoteReference(ref) : ref;
  const { env, signal } = options;
  const tls = new TlsTrust({ caFile: options.caFile, env });
  const transport = options.transport ?? defaultTransport({
    credentials: options.credentials ??
      (options.home
        ? fileCredentials(options.home, { env, signal, authFile: options.authFile })
        : undefined),
    retry: options.retry,
    tls,
  });
  return new Repository({ registry: r.registry!, repository: r.repository }, {
    transport,
    // Loopback registries speak plain HTTP unless TLS trust was set up for them.
    plainHttp: options.plainHttp ?? (tls.configuredFor(r.registry!) ? false : undefined),
    insecure: options.insecure,
    chunkSize: options.chunkSize,
    monolithicMax: options.monolithicMax,
  });
}

export interface PullResult extends CopyResult {
  reference: string;
  /** The local ref recorded (`registry/repo:tag`), or undefined for a digest-only pull. */
  localRef?: string;
  /** False for a non-OVMS image pulled with `any`. */
  ovms: boolean;
  /** Referrers imported with it (from an OCI layout only). */
  referrers?: number;
}

/**
 * Pulls `ref` into the store: the tag is resolved once, an index yields the
 * host platform's manifest, blobs stream into resumable ingests, and the ref
 * is recorded only when every blob is in. Unless `any`, the artifact must be
 * OVMS (checked on manifest and config before any layer is fetched).
 */
export async function pullToStore(
  store: ContentStore,
  ref: string,
  options: RemoteOptions & { any?: boolean; localRef?: string; platform?: Platform } = {},
): Promise<PullResult> {
  let source: CopySource;
  let srcRef: string | undefined;
  let localRef: string | undefined;
  if (ref.startsWith(LAYOUT_PREFIX)) {
    // An OCI image layout on disk (oras, skopeo, umoci): imported like a pull.
    const l = await parseLayoutReference(ref);
    const layout = new OciLayoutSource(l.dir);
    if (!l.ref && !options.localRef) await layout.resolve(undefined);
    source = layout;
    srcRef = l.ref;
    localRef = options.localRef ?? defaultLocalRef(l, layout.resolvedName);
  } else {
    const r = parseRemoteReference(ref);
    source = new RemoteSource(openRepository(r, options));
    srcRef = r.digest ?? r.tag ?? "latest";
    localRef = options.localRef ??
      (r.tag || !r.digest ? `${referenceName(r)}:${r.tag ?? "latest"}` : undefined);
  }
  const result = await store.lease(() =>
    copy(source, new StoreTarget(store), {
      srcRef,
      dstRef: localRef,
      platform: options.platform ?? hostPlatform(),
      concurrency: options.concurrency,
      signal: options.signal,
      onEvent: options.onEvent,
      verify: options.any ? undefined : (desc, manifest, config) => {
        try {
          artifactFromDocuments(desc, manifest, config);
        } catch (e) {
          if (!(e instanceof ValidationError)) throw e;
          throw new ValidationError(`"${ref}" is not a valid OVMS artifact: ${e.message}`, {
            cause: e,
            hint: e.hint?.startsWith("push the OVMS manifest")
              ? e.hint
              : "to fetch any OCI image (e.g. for `ovm convert`) use `ovm pull --any`",
          });
        }
      },
    })
  );
  let ovms = false;
  if (!options.any) {
    await loadArtifact(store, result.descriptor.digest);
    ovms = true;
  }
  // From a layout, the artifact's referrers there (signatures, SBOMs) come along, untagged.
  let referrers = 0;
  if (source instanceof OciLayoutSource) {
    const seen = new Set<string>([result.descriptor.digest]);
    const queue = [result.descriptor.digest];
    while (queue.length && seen.size <= 100) {
      for (const d of await source.referrersOf(queue.shift()!)) {
        if (seen.has(d.digest)) continue;
        seen.add(d.digest);
        await store.lease(() =>
          copy(source, new StoreTarget(store), { srcRef: d.digest, signal: options.signal })
        );
        referrers++;
        queue.push(d.digest);
      }
    }
  }
  return { ...result, reference: ref, localRef, ovms, referrers };
}

export interface PushResult extends CopyResult {
  reference: string;
  digest: Digest;
}

/**
 * Pushes a local store ref, or an export directory (spec section 4), to
 * `remoteRef`. Blobs go first; the manifest last, tagged as `remoteRef` says.
 */
export async function pushFromStore(
  store: ContentStore,
  localRef: string,
  remoteRef: string,
  options: RemoteOptions & { mountFrom?: string } = {},
): Promise<PushResult> {
  const r = parseRemoteReference(remoteRef);
  const repo = openRepository(r, options);
  const isDir = await Deno.stat(localRef).then((s) => s.isDirectory).catch(() => false);
  if (isDir && !(await DirSource.looksLikeExport(localRef))) {
    throw new ValidationError(
      `Directory "${localRef}" is not in the OVMS download layout`,
      { hint: "expected manifest.json and blobs/sha256-<hex> (what `ovm export` writes)" },
    );
  }
  const src = isDir ? new DirSource(localRef) : new StoreSource(store);
  const tag = r.tag ?? (r.digest ? undefined : "latest");
  const result = await copy(src, new RemoteTarget(repo), {
    srcRef: isDir ? undefined : localRef,
    dstRef: tag,
    concurrency: options.concurrency,
    signal: options.signal,
    onEvent: options.onEvent,
  });
  if (r.digest && r.digest !== result.descriptor.digest) {
    throw new ValidationError(
      `"${remoteRef}" pins digest "${r.digest}" but the local artifact is "${result.descriptor.digest}"`,
    );
  }
  return { ...result, reference: remoteRef, digest: result.descriptor.digest as Digest };
}

/** Copies `src` to `dst` between registries (blobs mounted when both are on one registry). */
export async function copyBetween(
  src: string,
  dst: string,
  options: RemoteOptions & { platform?: Platform } = {},
): Promise<CopyResult> {
  const s = parseRemoteReference(src);
  const d = parseRemoteReference(dst);
  return await copy(
    new RemoteSource(openRepository(s, options)),
    new RemoteTarget(openRepository(d, options)),
    {
      srcRef: s.digest ?? s.tag ?? "latest",
      dstRef: d.tag ?? (d.digest ? undefined : s.tag ?? "latest"),
      platform: options.platform,
      concurrency: options.concurrency,
      signal: options.signal,
      onEvent: options.onEvent,
    },
  );
}

/** The manifests pointing at `ref` with `subject` (referrers API or tag schema). */
export async function listReferrers(
  ref: string,
  options: RemoteOptions & { artifactType?: string } = {},
): Promise<{ subject: Descriptor; referrers: Descriptor[] }> {
  const r = parseRemoteReference(ref);
  const repo = openRepository(r, options);
  const subject =
    (await repo.fetchManifest(r.digest ?? r.tag ?? "latest", { signal: options.signal }))
      .descriptor;
  const listed = await repo.referrers(subject.digest as Digest, { signal: options.signal });
  // cosign writes its tag-index entries with the config's media type (the OCI
  // empty type) as artifactType; the manifest itself says what it is.
  const referrers: Descriptor[] = [];
  for (const d of listed) {
    if (d.artifactType === MediaTypes.ociEmpty) {
      try {
        const m = await repo.fetchManifest(d.digest, { signal: options.signal });
        const doc = parseJsonBytes(m.bytes, { source: `referrer ${d.digest}` }) as {
          artifactType?: unknown;
        };
        if (typeof doc.artifactType === "string") {
          referrers.push({ ...d, artifactType: doc.artifactType });
          continue;
        }
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
      }
    }
    referrers.push(d);
  }
  return {
    subject,
    referrers: options.artifactType
      ? referrers.filter((d) => d.artifactType === options.artifactType)
      : referrers,
  };
}

/** What {@linkcode copyReferrersBetween} does with one referrer manifest. */
export type ReferrerFilter = (manifest: {
  artifactType?: string;
  config?: { mediaType?: string };
  annotations?: Record<string, string>;
}) => boolean;

/**
 * Copies the referrers of `subject` (and theirs, to `maxDepth` levels) from
 * the repository of `src` to that of `dst`, byte for byte, each into the
 * destination's referrers index (API or `sha256-<hex>` tag), as
 * `oras copy -r` does. `accept` picks which to copy (default: all). Returns
 * the descriptors copied.
 */
export async function copyReferrersBetween(
  src: string,
  dst: string,
  subject: Digest,
  options: RemoteOptions & { accept?: ReferrerFilter; maxDepth?: number } = {},
): Promise<Descriptor[]> {
  const from = openRepository(parseRemoteReference(src), options);
  const to = openRepository(parseRemoteReference(dst), options);
  const accept = options.accept ?? (() => true);
  const maxDepth = options.maxDepth ?? 3;
  const copied: Descriptor[] = [];
  const seen = new Set<string>();
  const walk = async (digest: Digest, depth: number): Promise<void> => {
    if (depth > maxDepth) return;
    for (const d of await from.referrers(digest, { signal: options.signal })) {
      if (seen.has(d.digest)) continue;
      seen.add(d.digest);
      let m;
      try {
        m = await from.fetchManifest(d.digest, { signal: options.signal });
      } catch (e) {
        // A tag-schema index may name a referrer since deleted.
        if (e instanceof NotFoundError) continue;
        throw e;
      }
      const doc = parseJsonBytes(m.bytes, { source: `referrer ${d.digest}` }) as Parameters<
        ReferrerFilter
      >[0];
      if (!accept(doc)) continue;
      await copy(new RemoteSource(from), new RemoteTarget(to), {
        srcRef: d.digest,
        signal: options.signal,
        concurrency: options.concurrency,
        onEvent: options.onEvent,
      });
      copied.push(m.descriptor);
      await walk(d.digest as Digest, depth + 1);
    }
  };
  await walk(subject, 1);
  return copied;
}
