/**
 * @module
 * One repository's binding to the transport, shared by the concern modules
 * (manifests, blobs, uploads, tags, referrers): URLs, bearer scopes, the
 * plain-HTTP fallback of `--insecure`, and failures turned into the domain
 * errors of errors.ts.
 */
import { RegistryError } from "../../errors.ts";
import { isLoopbackRegistry } from "../reference.ts";
import { isTlsError, NetworkError, responseError } from "./errors.ts";
import { tlsAdvice } from "./tls.ts";
import type { HttpRequest, Transport } from "./transport.ts";

export interface ClientOptions {
  /** Use http://; the default for loopback registries. */
  plainHttp?: boolean;
  /** Fall back to http:// when https:// cannot connect. */
  insecure?: boolean;
}

export class RepositoryClient {
  readonly registry: string;
  readonly name: string;
  #t: Transport;
  #scheme: "http" | "https";
  #insecure: boolean;

  constructor(
    ref: { registry: string; repository: string; transport: Transport },
    options: ClientOptions = {},
  ) {
    this.registry = ref.registry;
    this.name = ref.repository;
    this.#t = ref.transport;
    this.#scheme = options.plainHttp ?? isLoopbackRegistry(ref.registry) ? "http" : "https";
    this.#insecure = options.insecure ?? false;
  }

  get baseUrl(): string {
    // Docker Hub's references say docker.io; its API lives elsewhere.
    const host = this.registry === "docker.io" ? "registry-1.docker.io" : this.registry;
    return `${this.#scheme}://${host}/v2/`;
  }

  /** `<base>/v2/<name>/<path>`. */
  url(path: string): string {
    return `${this.baseUrl}${this.name}/${path}`;
  }

  /** The bearer scopes for this repository (pull, or pull and push), plus `extra`. */
  scopes(push: boolean, extra: string[] = []): string[] {
    return [`repository:${this.name}:${push ? "pull,push" : "pull"}`, ...extra];
  }

  async send(req: HttpRequest): Promise<Response> {
    try {
      return await this.#t.roundTrip(req);
    } catch (e) {
      // --insecure: a registry that speaks only plain HTTP, as docker's
      // "insecure-registries" allows.
      if (this.#insecure && this.#scheme === "https" && e instanceof TypeError) {
        this.#scheme = "http";
        const u = new URL(req.url);
        u.protocol = "http:";
        return await this.send({ ...req, url: u });
      }
      if (e instanceof TypeError) throw this.#unreachable(e);
      throw e;
    }
  }

  #unreachable(e: TypeError): NetworkError {
    const tls = isTlsError(e);
    const detail = e.cause instanceof Error ? e.cause.message : e.message;
    if (tls && this.#scheme === "https") {
      const { reason, hint } = tlsAdvice(this.registry, detail);
      return new NetworkError(
        `Cannot reach registry "${this.registry}": ${reason} (${detail})`,
        { cause: e, tls, hint },
      );
    }
    return new NetworkError(`Cannot reach registry "${this.registry}": ${detail}`, {
      cause: e,
      tls,
      hint: "check the registry address and that it is running",
    });
  }

  /** Throws the domain error for an error response; consumes the body. */
  async fail(res: Response, what: string): Promise<never> {
    throw await responseError(res, {
      registry: this.registry,
      repository: this.name,
      what,
      plainHttp: this.#scheme === "http",
    });
  }

  /** An upload session's `Location`, resolved against the registry. */
  location(res: Response): URL {
    const loc = res.headers.get("location");
    if (!loc) {
      throw new RegistryError(
        `Registry "${this.registry}" started an upload without a Location header`,
        { status: res.status },
      );
    }
    return new URL(loc, this.baseUrl);
  }
}
