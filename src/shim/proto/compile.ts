/**
 * @module
 * Loads the vendored .proto files (spec/vendor/containerd/) with protobufjs
 * and returns their JSON descriptor. Used by `deno task shim-proto` and its
 * staleness test only; the shim itself loads the generated JSON, so a compiled
 * `ovm` needs no .proto files at run time.
 */
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";

const VENDOR = new URL("../../../spec/vendor/containerd/", import.meta.url);
const DESCRIPTOR = new URL(
  "../../../node_modules/protobufjs/google/protobuf/descriptor.proto",
  import.meta.url,
);

/** The entry files; everything they import comes along. */
export const SHIM_PROTO_FILES = [
  "api/runtime/task/v2/shim.proto",
  "api/events/task.proto",
  "api/services/ttrpc/events/v1/events.proto",
  "ttrpc/request.proto",
  "cgroups/cgroup2/stats/metrics.proto",
] as const;

export function compileShimProtos(): protobuf.INamespace {
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string) => {
    if (target === "google/protobuf/descriptor.proto") return fileURLToPath(DESCRIPTOR);
    // protobufjs has any, empty, timestamp built in.
    if (target.startsWith("google/protobuf/")) return target;
    if (target.startsWith("google/rpc/")) return fileURLToPath(new URL(target, VENDOR));
    if (target.startsWith("types/")) return fileURLToPath(new URL(`api/${target}`, VENDOR));
    return target;
  };
  root.loadSync(SHIM_PROTO_FILES.map((f) => fileURLToPath(new URL(f, VENDOR))), {
    keepCase: true,
  });
  root.resolveAll();
  return root.toJSON({ keepComments: false }) as protobuf.INamespace;
}
