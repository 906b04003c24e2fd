/**
 * @module
 * The only place ovm calls `Deno.dlopen`: libc's memory calls, used to keep
 * RAM snapshots resident (mlock), to hold guest memory in anonymous files
 * (memfd_create), and to map snapshot files (mmap). Only typed wrappers leave
 * this module; every failing call becomes an {@linkcode ErrnoError}. Also the
 * TAP queue a bridge-mode VMM inherits (`/dev/net/tun` + TUNSETIFF), so a
 * VMM that runs unprivileged needs no access to `/dev/net/tun` itself.
 */
import { OvmError } from "../src/errors.ts";

const SYMBOLS = {
  // int mlock(const void *addr, size_t len)
  mlock: { parameters: ["pointer", "usize"], result: "i32" },
  // int munlock(const void *addr, size_t len)
  munlock: { parameters: ["pointer", "usize"], result: "i32" },
  // int memfd_create(const char *name, unsigned int flags)
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  // int munmap(void *addr, size_t length)
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  // int madvise(void *addr, size_t length, int advice)
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  // int open(const char *pathname, int flags, mode_t mode)
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  // int close(int fd)
  close: { parameters: ["i32"], result: "i32" },
  // int ftruncate(int fd, off_t length)
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // off_t lseek(int fd, off_t offset, int whence)
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  // int getrlimit(int resource, struct rlimit *rlim)
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // int ioctl(int fd, unsigned long request, void *argp)
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  // int fcntl(int fd, int cmd, int arg)
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int *__errno_location(void)
  __errno_location: { parameters: [], result: "pointer" },
  // char *strerror(int errnum)
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_POPULATE = 0x8000;
export const MFD_CLOEXEC = 0x1;
export const MFD_ALLOW_SEALING = 0x2;
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
const RLIMIT_MEMLOCK = 8;

export const MADV_NORMAL = 0;
export const MADV_RANDOM = 1;
export const MADV_SEQUENTIAL = 2;
export const MADV_WILLNEED = 3;
export const MADV_DONTNEED = 4;
export const MADV_HUGEPAGE = 14;

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  16: "EBUSY",
  19: "ENODEV",
  2: "ENOENT",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  22: "EINVAL",
  24: "EMFILE",
  38: "ENOSYS",
};

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

function libc(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

/** A libc call failed; `errno` and its name say why. */
export class ErrnoError extends OvmError {
  readonly syscall: string;
  readonly errno: number;
  readonly errnoName: string;
  constructor(syscall: string, errno: number, detail?: string, hint?: string) {
    const name = ERRNO_NAMES[errno] ?? `errno ${errno}`;
    super(`${syscall}${detail ? ` (${detail})` : ""} failed: ${name}: ${strerror(errno)}`, {
      hint,
    });
    this.syscall = syscall;
    this.errno = errno;
    this.errnoName = name;
  }
}

function errno(): number {
  const p = libc().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

function strerror(n: number): string {
  const p = libc().strerror(n);
  return p ? Deno.UnsafePointerView.getCString(p) : `errno ${n}`;
}

function cstr(s: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(s + "\0") as Uint8Array<ArrayBuffer>;
}

function check(
  syscall: string,
  rc: number,
  detail?: string,
  hint?: (e: number) => string | undefined,
): number {
  if (rc < 0) {
    const e = errno();
    throw new ErrnoError(syscall, e, detail, hint?.(e));
  }
  return rc;
}

/** RLIMIT_MEMLOCK of this process, in bytes (`Infinity` for unlimited). */
export function memlockLimit(): { soft: number; hard: number } {
  const buf = new BigUint64Array(2);
  check("getrlimit", libc().getrlimit(RLIMIT_MEMLOCK, new Uint8Array(buf.buffer)));
  const conv = (v: bigint) => (v === 0xffffffffffffffffn ? Infinity : Number(v));
  return { soft: conv(buf[0]), hard: conv(buf[1]) };
}

function mlockHint(e: number): string | undefined {
  if (e !== 12 && e !== 1 && e !== 11) return undefined;
  const { soft, hard } = memlockLimit();
  const fmt = (n: number) => (n === Infinity ? "unlimited" : `${n} bytes`);
  return `RLIMIT_MEMLOCK is ${fmt(soft)} (hard ${
    fmt(hard)
  }); raise it with 'ulimit -l unlimited', ` +
    "LimitMEMLOCK=infinity in the systemd unit, or run with CAP_IPC_LOCK; or set mlock_required to false";
}

/** Locks `length` bytes at `pointer` in RAM. */
export function mlock(pointer: Deno.PointerValue, length: number): void {
  check("mlock", libc().mlock(pointer, BigInt(length)), `${length} bytes`, mlockHint);
}

export function munlock(pointer: Deno.PointerValue, length: number): void {
  check("munlock", libc().munlock(pointer, BigInt(length)), `${length} bytes`);
}

export function madvise(pointer: Deno.PointerValue, length: number, advice: number): void {
  check("madvise", libc().madvise(pointer, BigInt(length), advice), `advice ${advice}`);
}

/** Opens a file and returns the raw descriptor (for mmap); close it with {@linkcode closeFd}. */
export function openFd(path: string, flags = O_RDONLY | O_CLOEXEC, mode = 0o600): number {
  return check("open", libc().open(cstr(path), flags, mode), path);
}

export function closeFd(fd: number): void {
  check("close", libc().close(fd), `fd ${fd}`);
}

export function ftruncate(fd: number, length: number): void {
  check("ftruncate", libc().ftruncate(fd, BigInt(length)), `fd ${fd} to ${length} bytes`);
}

/**
 * Creates an anonymous memory file. The returned `path` (`/proc/<pid>/fd/<n>`)
 * opens it from Deno or from a child process while this process lives.
 */
export function memfdCreate(name: string, options: { size?: number; flags?: number } = {}): {
  fd: number;
  path: string;
} {
  const fd = check(
    "memfd_create",
    libc().memfd_create(cstr(name), options.flags ?? MFD_CLOEXEC),
    name,
  );
  try {
    if (options.size) ftruncate(fd, options.size);
  } catch (e) {
    libc().close(fd);
    throw e;
  }
  return { fd, path: `/proc/${Deno.pid}/fd/${fd}` };
}

/** A mapping of memory; dispose to unmap (and unlock, if locked). */
export class Mapping implements Disposable {
  readonly pointer: Deno.PointerObject;
  readonly length: number;
  #locked = false;
  #unmapped = false;

  constructor(pointer: Deno.PointerObject, length: number) {
    this.pointer = pointer;
    this.length = length;
  }

  get locked(): boolean {
    return this.#locked;
  }

  lock(): void {
    mlock(this.pointer, this.length);
    this.#locked = true;
  }

  unlock(): void {
    if (!this.#locked) return;
    munlock(this.pointer, this.length);
    this.#locked = false;
  }

  advise(advice: number): void {
    madvise(this.pointer, this.length, advice);
  }

  /** A view to read the mapped bytes (valid until dispose). */
  view(): Deno.UnsafePointerView {
    return new Deno.UnsafePointerView(this.pointer);
  }

  [Symbol.dispose](): void {
    if (this.#unmapped) return;
    this.unlock();
    check("munmap", libc().munmap(this.pointer, BigInt(this.length)), `${this.length} bytes`);
    this.#unmapped = true;
  }
}

/** Maps `length` bytes of `fd` from `offset`. */
export function mmap(
  fd: number,
  length: number,
  options: { prot?: number; flags?: number; offset?: number } = {},
): Mapping {
  const p = libc().mmap(
    null,
    BigInt(length),
    options.prot ?? PROT_READ,
    options.flags ?? MAP_SHARED,
    fd,
    BigInt(options.offset ?? 0),
  );
  // MAP_FAILED is (void *)-1.
  if (p === null || Deno.UnsafePointer.value(p) === 0xffffffffffffffffn) {
    const e = errno();
    throw new ErrnoError("mmap", e, `${length} bytes of fd ${fd}`);
  }
  return new Mapping(p, length);
}

/**
 * Keeps a whole file resident: maps it shared read-only and mlocks it. The
 * pages stay locked while the returned mapping lives (in this process).
 */
export function lockFileInMemory(path: string, size: number): Mapping {
  const fd = openFd(path);
  try {
    const m = mmap(fd, size, { prot: PROT_READ, flags: MAP_SHARED | MAP_POPULATE });
    try {
      m.lock();
    } catch (e) {
      m[Symbol.dispose]();
      throw e;
    }
    return m;
  } finally {
    closeFd(fd);
  }
}

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const ENXIO = 6;

/**
 * The byte ranges `[start, end)` of `path` within `[offset, offset + length)`
 * that hold data (`lseek` SEEK_DATA/SEEK_HOLE): a sparse file's holes are
 * left out, so a copy need not read them. On a filesystem without hole
 * reporting the whole range comes back as data.
 */
export function dataRanges(path: string, offset: number, length: number): [number, number][] {
  const fd = openFd(path);
  const end = offset + length;
  const out: [number, number][] = [];
  try {
    let at = offset;
    while (at < end) {
      const data = Number(libc().lseek(fd, BigInt(at), SEEK_DATA));
      if (data < 0) {
        const e = errno();
        if (e === ENXIO) break; // no data after `at`
        throw new ErrnoError("lseek", e, `SEEK_DATA in ${path}`);
      }
      if (data >= end) break;
      let hole = Number(libc().lseek(fd, BigInt(data), SEEK_HOLE));
      if (hole < 0) hole = end;
      out.push([data, Math.min(hole, end)]);
      at = hole;
    }
  } finally {
    closeFd(fd);
  }
  return out;
}

const TUNSETIFF = 0x400454can;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const F_DUPFD_CLOEXEC = 1030;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
/** Descriptors handed to children are moved to this number or above, clear of their 3..N. */
const HIGH_FD = 64;

/**
 * Opens the queue of TAP device `name` (`/dev/net/tun`, TUNSETIFF with
 * IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) and returns its descriptor (≥ 64,
 * close-on-exec until {@linkcode setInheritable}). A VMM that inherits it
 * uses the TAP without opening `/dev/net/tun` (QEMU: `-netdev tap,fd=N`).
 */
export function openTapQueue(name: string): number {
  const raw = check(
    "open",
    libc().open(cstr("/dev/net/tun"), O_RDWR | O_CLOEXEC, 0),
    "/dev/net/tun",
  );
  try {
    const ifr = new Uint8Array(40);
    const nameBytes = new TextEncoder().encode(name);
    if (nameBytes.length > 15) {
      throw new ErrnoError("ioctl", 22, `TUNSETIFF ${name}: name too long`);
    }
    ifr.set(nameBytes);
    new DataView(ifr.buffer).setUint16(16, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
    check(
      "ioctl",
      libc().ioctl(raw, TUNSETIFF, ifr),
      `TUNSETIFF ${name}`,
      (e) =>
        e === 16
          ? "another process has the TAP open"
          : e === 1
          ? "ovm needs root (CAP_NET_ADMIN)"
          : undefined,
    );
    return check("fcntl", libc().fcntl(raw, F_DUPFD_CLOEXEC, HIGH_FD), `F_DUPFD_CLOEXEC fd ${raw}`);
  } finally {
    libc().close(raw);
  }
}

/** Whether a child started from now on inherits `fd` (clears or sets FD_CLOEXEC). */
export function setInheritable(fd: number, inheritable: boolean): void {
  check("fcntl", libc().fcntl(fd, F_SETFD, inheritable ? 0 : FD_CLOEXEC), `F_SETFD fd ${fd}`);
}
