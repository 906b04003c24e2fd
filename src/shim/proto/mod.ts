/**
 * @module
 * Protobuf encoding for the shim: the containerd task v2 API, its events,
 * and ttrpc's Request/Response, loaded with protobufjs from the descriptor
 * generated from the vendored .proto files (`deno task shim-proto`).
 * Messages are plain objects with the .proto field names (snake_case);
 * 64-bit integers come back as numbers, bytes as Uint8Array.
 */
import protobuf from "protobufjs";
import descriptors from "./descriptors.json" with { type: "json" };
import { ValidationError } from "../../errors.ts";

export const protoRoot: protobuf.Root = protobuf.Root.fromJSON(
  descriptors as protobuf.INamespace,
);

const types = new Map<string, protobuf.Type>();

/** The message type `name` (fully qualified, e.g. `containerd.task.v2.CreateTaskRequest`). */
export function messageType(name: string): protobuf.Type {
  let t = types.get(name);
  if (!t) {
    t = protoRoot.lookupType(name);
    types.set(name, t);
  }
  return t;
}

// deno-lint-ignore no-explicit-any
export type Message = Record<string, any>;

/** Encodes `value` as the message `name`; unknown fields are an error, not silently dropped. */
export function encodeMessage(name: string, value: Message): Uint8Array {
  const t = messageType(name);
  const bad = t.verify(value);
  if (bad) throw new ValidationError(`Invalid ${name}: ${bad}`);
  return t.encode(t.fromObject(value)).finish();
}

/** Decodes `bytes` as the message `name`, with proto3 defaults filled in. */
export function decodeMessage(name: string, bytes: Uint8Array): Message {
  const t = messageType(name);
  let m: protobuf.Message;
  try {
    m = t.decode(bytes);
  } catch (e) {
    throw new ValidationError(`Malformed ${name} (${bytes.byteLength} bytes)`, { cause: e });
  }
  return t.toObject(m, { defaults: true, longs: Number, bytes: Uint8Array as never, arrays: true });
}

/** A `google.protobuf.Any` holding `value` as `name`, with containerd's type URL (the bare name). */
export function packAny(name: string, value: Message): { type_url: string; value: Uint8Array } {
  return { type_url: name, value: encodeMessage(name, value) };
}

/** A `google.protobuf.Timestamp` for `date`. */
export function timestamp(date: Date): { seconds: number; nanos: number } {
  const ms = date.getTime();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}
