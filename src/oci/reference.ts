/**
 * @module
 * Image references — `[registry/]repo[:tag][@sha256:…]` — with the
 * distribution project's grammar, validated before any network call or path.
 */
import { ValidationError } from "../errors.ts";
import { type Digest, parseDigest } from "../manifest/digest.ts";

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
const DOMAIN =
  /^(?:\[[a-fA-F0-9:]+\]|(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*)(?::[0-9]{1,5})?$/;
const TAG = /^[\w][\w.-]{0,127}$/;

export const DEFAULT_REGISTRY = "docker.io";
export const DEFAULT_TAG = "latest";

export interface Reference {
  /** Registry host[:port]; undefined for a local (store-only) reference. */
  registry?: string;
  /** Repository path, without the registry. */
  repository: string;
  tag?: string;
  digest?: Digest;
}

/**
 * Parses a reference. With `requireRegistry`, a reference whose first path
 * component does not look like a host (no `.`, no `:`, not `localhost`) is
 * taken as a Docker Hub reference, as docker and skopeo do.
 */
export function parseReference(
  input: string,
  options: { defaultRegistry?: string; allowNoRegistry?: boolean } = {},
): Reference {
  const bad = (why: string, hint?: string): never => {
    throw new ValidationError(`Invalid reference "${input}": ${why}`, {
      hint: hint ??
        'use the form [registry/]repository[:tag][@sha256:<64 hex>], e.g. "localhost:5000/vms/demo:1.0"',
    });
  };
  if (input.length === 0) bad("it is empty");
  if (input.length > 512) bad("it is longer than 512 characters");
  if (/\s/.test(input)) bad("it contains white space");
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    try {
      digest = parseDigest(rest.slice(at + 1));
    } catch (e) {
      bad((e as Error).message.replace(/^Invalid digest /, "the digest "));
    }
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const lastColon = rest.lastIndexOf(":");
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG.test(tag)) {
      bad(
        `the tag "${tag}" must be 1-128 characters of letters, digits, _, . and -, not starting with . or -`,
      );
    }
  }
  const parts = rest.split("/");
  let registry: string | undefined;
  if (
    parts.length > 1 &&
    (parts[0].includes(".") || parts[0].includes(":") || parts[0] === "localhost" ||
      parts[0].startsWith("["))
  ) {
    registry = parts.shift();
    if (!DOMAIN.test(registry!)) bad(`the registry "${registry}" is not a valid host[:port]`);
  }
  if (parts.length === 0 || parts.some((p) => p.length === 0)) {
    bad("the repository is empty or has an empty path component");
  }
  for (const p of parts) {
    if (!PATH_COMPONENT.test(p)) {
      bad(
        `the repository component "${p}" must be lowercase letters and digits, separated by ".", "_", "__" or "-"`,
      );
    }
  }
  const repository = parts.join("/");
  if (repository.length + (registry?.length ?? 0) > 255) {
    bad("the name is longer than 255 characters");
  }
  if (!registry && !options.allowNoRegistry) {
    registry = options.defaultRegistry ?? DEFAULT_REGISTRY;
  }
  return { registry, repository, tag, digest };
}

/** Formats a reference back to a string (tag and digest as present). */
export function formatReference(r: Reference): string {
  let s = r.registry ? `${r.registry}/${r.repository}` : r.repository;
  if (r.tag) s += `:${r.tag}`;
  if (r.digest) s += `@${r.digest}`;
  return s;
}

/** The `name` part: registry and repository. */
export function referenceName(r: Reference): string {
  return r.registry ? `${r.registry}/${r.repository}` : r.repository;
}

/** True when the registry host is loopback, where plain HTTP is the default. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith("[")
    ? registry.slice(1, registry.indexOf("]"))
    : registry.split(":")[0];
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
