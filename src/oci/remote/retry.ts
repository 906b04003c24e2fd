/**
 * @module
 * The retry decorator: {@linkcode RetryTransport} retries throttling (408,
 * 429), server errors and lost connections with bounded, jittered backoff,
 * honouring `Retry-After`. TLS failures and aborts are never retried.
 */
import { delay } from "../../util/async.ts";
import { isNetworkError } from "./errors.ts";
import type { HttpRequest, Transport } from "./transport.ts";

export interface RetryOptions {
  /** Attempts in all, the first included. */
  maxAttempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Called before each wait, for progress output. */
  onRetry?: (info: { attempt: number; delayMs: number; reason: string }) => void;
}

const RETRY_STATUSES = new Set([408, 429, 500, 502, 503, 504]);

/** Retries throttling, server errors and network failures, bounded and jittered. */
export class RetryTransport implements Transport {
  #next: Transport;
  #opts: Required<Omit<RetryOptions, "onRetry">> & Pick<RetryOptions, "onRetry">;

  constructor(next: Transport, options: RetryOptions = {}) {
    this.#next = next;
    this.#opts = {
      maxAttempts: options.maxAttempts ?? 5,
      baseDelayMs: options.baseDelayMs ?? 250,
      maxDelayMs: options.maxDelayMs ?? 10_000,
      onRetry: options.onRetry,
    };
  }

  async roundTrip(req: HttpRequest): Promise<Response> {
    for (let attempt = 1;; attempt++) {
      let res: Response | undefined;
      let reason: string;
      try {
        res = await this.#next.roundTrip(req);
        if (!RETRY_STATUSES.has(res.status) || attempt >= this.#opts.maxAttempts) return res;
        reason = `HTTP ${res.status}`;
      } catch (e) {
        if (!isNetworkError(e) || attempt >= this.#opts.maxAttempts) throw e;
        reason = (e as Error).message;
      }
      const retryAfter = res ? parseRetryAfter(res.headers.get("retry-after")) : undefined;
      await res?.body?.cancel();
      const backoff = Math.min(
        this.#opts.maxDelayMs,
        this.#opts.baseDelayMs * 2 ** (attempt - 1),
      );
      // Full jitter keeps many clients from retrying in lockstep; Retry-After
      // is a floor the server asked for, capped so a bad header cannot hang us.
      let delayMs = Math.random() * backoff;
      if (retryAfter !== undefined) delayMs = Math.min(Math.max(retryAfter, delayMs), 60_000);
      this.#opts.onRetry?.({ attempt, delayMs, reason });
      await delay(delayMs, req.signal);
    }
  }
}

/** `Retry-After` as milliseconds (delta-seconds or an HTTP date). */
export function parseRetryAfter(v: string | null, now = Date.now()): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}
