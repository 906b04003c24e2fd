/**
 * @module
 * Renders the kernel command line ovms-init reads (`ovms.*` parameters, see
 * spec §6.3) from structured input, refusing values that would break the
 * space-separated syntax.
 */
import { ValidationError } from "../errors.ts";

export interface InitCmdlineOptions {
  /** The root block device (the top of the disk chain). Default `/dev/vda`. */
  root?: string;
  rootFs?: "ext4" | "erofs";
  rootMode?: "ro" | "rw";
  /**
   * Writable layer over a read-only root: `tmpfs`, or a block device holding
   * the upper layer (formatted by the guest when blank). Default `tmpfs` when
   * `rootMode` is `ro`.
   */
  overlay?: "tmpfs" | "none" | `/dev/${string}`;
  /** `exec`: run the bootstrap config's workload; `switch_root`: boot the image's `/sbin/init`. */
  mode?: "exec" | "switch_root";
  /** The block device holding the config disk (spec §6.4). */
  configDevice?: string;
  hostname?: string;
  net?: { address: string; gateway?: string; dns?: string } | "dhcp" | "none";
  /** Default `ttyS0`. */
  console?: string;
  /** `tagged`: the workload's stdout/stderr lines reach the console as `@o|`/`@e|` lines. */
  stdio?: "console" | "tagged";
  /**
   * `port`: the workload's stdin is the virtio-serial port `ovms.stdin` (the
   * VMM feeds it from a host FIFO, `VmSpec.stdin`); `/dev/null` when the VM
   * has no such port. Default: as before, `/dev/null` in `tagged` mode, the
   * console otherwise.
   */
  stdin?: "console" | "port";
}

const DEVICE_RE = /^\/dev\/[A-Za-z0-9._\/-]+$/;
const HOSTNAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9.-]{0,62}$/;
const CIDR_RE = /^(\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/;
const IP_RE = /^(\d{1,3}\.){3}\d{1,3}$/;
const CONSOLE_RE = /^[A-Za-z0-9]+(,[A-Za-z0-9]+)?$/;

function check(re: RegExp, value: string, what: string, hint: string): string {
  if (!re.test(value)) throw new ValidationError(`Invalid ${what} "${value}"`, { hint });
  return value;
}

/** Kernel command-line parameters ovms-init understands, rendered from structured input. */
export function initCmdline(opts: InitCmdlineOptions = {}): string {
  const p: string[] = [
    `console=${
      check(CONSOLE_RE, opts.console ?? "ttyS0", "console", "e.g. ttyS0 or ttyS0,115200")
    }`,
    // A panic or a failed init must end the VM (the VMM runs with -no-reboot), not hang it.
    "panic=-1",
    "quiet",
    `ovms.init=1`,
  ];
  const root = check(DEVICE_RE, opts.root ?? "/dev/vda", "root device", "e.g. /dev/vda");
  p.push(`ovms.root=${root}`, `ovms.rootfs=${opts.rootFs ?? "ext4"}`);
  const rootMode = opts.rootMode ?? "rw";
  p.push(`ovms.rootmode=${rootMode}`);
  const overlay = opts.overlay ?? (rootMode === "ro" ? "tmpfs" : "none");
  if (overlay !== "tmpfs" && overlay !== "none") {
    check(DEVICE_RE, overlay, "overlay device", "tmpfs, none, or a device such as /dev/vdc");
  }
  p.push(`ovms.overlay=${overlay}`);
  p.push(`ovms.mode=${opts.mode ?? "exec"}`);
  if (opts.configDevice !== undefined) {
    p.push(`ovms.config=${check(DEVICE_RE, opts.configDevice, "config device", "e.g. /dev/vdb")}`);
  }
  if (opts.hostname !== undefined) {
    p.push(
      `ovms.hostname=${
        check(HOSTNAME_RE, opts.hostname, "hostname", "letters, digits, '.' and '-', up to 63")
      }`,
    );
  }
  const net = opts.net ?? "none";
  if (net === "none" || net === "dhcp") {
    p.push(`ovms.net=${net}`);
  } else {
    const hint = 'e.g. { address: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" }';
    const parts = [check(CIDR_RE, net.address, "network address", hint)];
    parts.push(net.gateway !== undefined ? check(IP_RE, net.gateway, "gateway", hint) : "");
    parts.push(net.dns !== undefined ? check(IP_RE, net.dns, "DNS server", hint) : "");
    p.push(`ovms.net=${parts.join(",").replace(/,+$/, "")}`);
  }
  if (opts.stdio === "tagged") p.push("ovms.stdio=tagged");
  if (opts.stdin === "port") p.push("ovms.stdin=port");
  return p.join(" ");
}
