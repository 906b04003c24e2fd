/**
 * @module
 * A small client of the Kubernetes CRI `runtime.v1.RuntimeService` (the
 * vendored api.proto, loaded with @grpc/proto-loader) over containerd's
 * socket: the calls kubelet makes, as promises.
 */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";
import { TEST_IMAGE } from "./containerd.ts";

const PROTO = fileURLToPath(
  new URL("../../spec/vendor/containerd/cri-api/runtime/v1/api.proto", import.meta.url),
);

/**
 * containerd's CRI plugin for the tests: the runtime handler `ovm`
 * (io.containerd.ovm.v2) next to runc, passing `io.ovms.*` Pod and container
 * annotations to the shim; `{dir}` is the test containerd's directory.
 */
export const CRI_CONFIG = `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${TEST_IMAGE}"
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.ovm]
      runtime_type = "io.containerd.ovm.v2"
      pod_annotations = ["io.ovms.*"]
      container_annotations = ["io.ovms.*"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/conf"
`;

// deno-lint-ignore no-explicit-any
type Msg = Record<string, any>;

export class CriClient implements Disposable {
  // deno-lint-ignore no-explicit-any
  readonly #client: any;

  constructor(socket: string) {
    const def = loader.loadSync(PROTO, {
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    // deno-lint-ignore no-explicit-any
    const pkg = grpc.loadPackageDefinition(def) as any;
    this.#client = new pkg.runtime.v1.RuntimeService(
      `unix://${socket}`,
      grpc.credentials.createInsecure(),
    );
  }

  /** Calls `method` with `req`; rejects with the gRPC status message. */
  call(method: string, req: Msg, timeoutMs = 240_000): Promise<Msg> {
    return new Promise((resolve, reject) => {
      this.#client[method](
        req,
        { deadline: new Date(Date.now() + timeoutMs) },
        (err: grpc.ServiceError | null, res: Msg) => {
          if (err) reject(new Error(`CRI ${method}: ${err.details || err.message}`));
          else resolve(res);
        },
      );
    });
  }

  [Symbol.dispose](): void {
    this.#client.close();
  }
}
