/**
 * @module
 * The remote side of OCI distribution: {@linkcode Repository} (one
 * repository, split by concern into manifests, blobs, uploads, tags and
 * referrers) and the transport stack it sends through (fetch, retry, auth).
 */
export * from "./auth.ts";
export * from "./blobs.ts";
export * from "./capabilities.ts";
export * from "./client.ts";
export * from "./errors.ts";
export * from "./manifests.ts";
export * from "./referrers.ts";
export * from "./repository.ts";
export * from "./stack.ts";
export * from "./retry.ts";
export * from "./streams.ts";
export * from "./tags.ts";
export * from "./tls.ts";
export * from "./transport.ts";
export * from "./uploads.ts";
