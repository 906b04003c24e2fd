/**
 * @module
 * Publishes task events back to containerd, in order: over ttrpc to
 * `containerd.services.events.ttrpc.v1.Events/Forward` on `$TTRPC_ADDRESS`
 * (what containerd 1.6's own shims do), reconnecting after a containerd
 * restart; when that socket cannot be reached, through the publish binary
 * (`<publish-binary> --address A publish --topic T --namespace N`, the event
 * as a protobuf Any on stdin).
 */
import { run } from "../process/mod.ts";
import { encodeMessage, type Message, packAny, timestamp } from "./proto/mod.ts";
import { TtrpcClient } from "./ttrpc.ts";

export const Topics = {
  create: "/tasks/create",
  start: "/tasks/start",
  exit: "/tasks/exit",
  delete: "/tasks/delete",
  paused: "/tasks/paused",
  resumed: "/tasks/resumed",
} as const;

const EVENT_TYPES: Record<string, string> = {
  [Topics.create]: "containerd.events.TaskCreate",
  [Topics.start]: "containerd.events.TaskStart",
  [Topics.exit]: "containerd.events.TaskExit",
  [Topics.delete]: "containerd.events.TaskDelete",
  [Topics.paused]: "containerd.events.TaskPaused",
  [Topics.resumed]: "containerd.events.TaskResumed",
};

export interface PublisherOptions {
  namespace: string;
  /** containerd's ttrpc socket ($TTRPC_ADDRESS). */
  ttrpcAddress?: string;
  /** containerd's grpc socket (-address), for the publish binary. */
  address?: string;
  /** -publish-binary. */
  publishBinary?: string;
  log?: (msg: string) => void;
}

export class EventPublisher {
  readonly #o: PublisherOptions;
  #client?: TtrpcClient;
  #tail: Promise<void> = Promise.resolve();

  constructor(options: PublisherOptions) {
    this.#o = options;
  }

  /** Queues `event` on `topic`; resolves once containerd has it (or it could not be sent). */
  publish(topic: keyof typeof Topics | string, event: Message): Promise<void> {
    const t = topic in Topics ? Topics[topic as keyof typeof Topics] : topic;
    const next = this.#tail.then(() => this.#send(t, event));
    this.#tail = next.catch(() => {});
    return next.catch((e) => this.#o.log?.(`event ${t} not delivered: ${e}`));
  }

  async #send(topic: string, event: Message): Promise<void> {
    const any = packAny(EVENT_TYPES[topic], event);
    if (this.#o.ttrpcAddress) {
      const req = encodeMessage("containerd.services.events.ttrpc.v1.ForwardRequest", {
        envelope: {
          timestamp: timestamp(new Date()),
          namespace: this.#o.namespace,
          topic,
          event: any,
        },
      });
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          this.#client ??= await TtrpcClient.connect(this.#o.ttrpcAddress);
          await this.#client.call("containerd.services.events.ttrpc.v1.Events", "Forward", req, {
            timeoutMs: 10_000,
          });
          return;
        } catch (e) {
          // containerd may have restarted: a new connection next time.
          this.#client?.close();
          this.#client = undefined;
          this.#o.log?.(`events over ttrpc failed (${e}); retrying`);
        }
      }
    }
    if (!this.#o.publishBinary || !this.#o.address) {
      throw new Error("no ttrpc events socket and no publish binary");
    }
    await run(this.#o.publishBinary, [
      "--address",
      this.#o.address,
      "publish",
      "--topic",
      topic,
      "--namespace",
      this.#o.namespace,
    ], { stdin: encodeMessage("google.protobuf.Any", any) });
  }

  /** Waits for queued events, then drops the connection. */
  async close(): Promise<void> {
    await this.#tail;
    this.#client?.close();
  }
}
