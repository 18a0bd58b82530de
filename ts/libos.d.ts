// Types for JIT tool authors: the `libos` object every tool receives, and its errors.
//
// A tool module exports `default { run(args, libos) }` (or a default function, or a named
// `run`). Everything it does to the world goes through `libos`; each call is a syscall that
// the kernel checks against the calling process's capabilities.

export type Right =
  | "read" | "write" | "delete" | "execute" | "create" | "append"
  | "grant" | "revoke" | "approve" | "signal" | "admin";

export type Signal = "pause" | "resume" | "cancel" | "kill";

/** The kernel's wire error, as carried by every libos error. */
export interface WireError {
  kind: string;
  message: string;
  resource?: string;
  right?: string;
  limit?: string;
  request_id?: string;
  /** Why, when the kernel said (the message without its kind's prefix). */
  detail?: string;
}

export interface ErrorDetail {
  resource?: string;
  right?: string;
  limit?: string;
  requestId?: string;
  reason?: string;
}

/**
 * Base class of every error a syscall throws; `.kind` names it (`.name` equals `.kind`).
 * A syscall's error that escapes the tool reaches its caller as that error (the host's
 * record of it, whatever the tool changed on the object); an error the tool constructs
 * itself, of any class, reaches its caller as the tool's own error (`ToolError`).
 */
export declare class LibosError extends Error {
  constructor(kind: string, message: string, detail?: ErrorDetail);
  readonly kind: string;
  resource?: string;
  right?: string;
  limit?: string;
  requestId?: string;
  /** Why, when the kernel said (the message without its kind's prefix). */
  reason?: string;
  toWire(): WireError;
}
/** No capability allows `.right` on `.resource`, or a deny rule matched. */
export declare class PermissionDenied extends LibosError {
  constructor(message: string, detail?: ErrorDetail);
  resource: string;
  right: string;
}
export declare class NotFound extends LibosError {
  constructor(message: string, detail?: ErrorDetail);
}
/** A budget or per-call limit ran out; `.limit` names it (e.g. "syscalls", "console_output"). */
export declare class LimitExceeded extends LibosError {
  constructor(message: string, detail?: ErrorDetail);
  limit: string;
}
export declare class HumanRejected extends LibosError {
  constructor(message: string, detail?: ErrorDetail);
}
export declare class InvalidArgument extends LibosError {
  constructor(message: string, detail?: ErrorDetail);
}
/** Any other kind: IllegalState, AlreadyExists, Timeout, Cancelled, IoError, Uncertain, InternalError... */
export declare class SyscallError extends LibosError {
  constructor(kind: string, message: string, detail?: ErrorDetail);
}

export interface ObjectSpec {
  type: string;
  payload?: unknown;
  namespace?: string;
  name?: string;
  title?: string;
  summary?: string;
  tags?: string[];
  mime?: string;
  appendable?: boolean;
}

export interface Budget {
  tool_calls: number;
  children: number;
  syscalls: number;
  wall_time_ms: number;
}

export interface FsApi {
  /** Reads and writes move at most 16 MiB per call and 1 GiB per process by default
   * (`LimitExceeded` with limit `fs_bytes`); a larger file is refused, not truncated. */
  readText(path: string): Promise<string>;
  /** The kernel's base64 answer decoded to bytes. */
  readBytes(path: string): Promise<Uint8Array>;
  writeText(path: string, content: string, options?: { overwrite?: boolean }): Promise<unknown>;
  appendText(path: string, content: string): Promise<unknown>;
  /** Only the entries the process may read are listed. */
  list(path?: string): Promise<unknown>;
  mkdir(path: string, options?: { recursive?: boolean }): Promise<unknown>;
  deleteFile(path: string): Promise<unknown>;
  /** Recursive: needs delete on the directory and on every entry inside; one entry the
   * process may not delete refuses the whole call before anything is removed. */
  deleteDir(path: string, options?: { recursive?: boolean }): Promise<unknown>;
}

export interface MemoryApi {
  create(spec: ObjectSpec): Promise<unknown>;
  read(id: string): Promise<unknown>;
  find(name: string, namespace?: string): Promise<unknown>;
  append(id: string, item: unknown): Promise<unknown>;
  list(namespace?: string): Promise<unknown>;
  createNamespace(name: string): Promise<unknown>;
  fromFile(path: string, options?: { namespace?: string; name?: string; type?: string }): Promise<unknown>;
  toFile(id: string, path: string, options?: { overwrite?: boolean }): Promise<unknown>;
}

export interface ClockApi {
  /** The kernel's clock (journaled). `Date.now()` inside a tool is the call's start time. */
  now(): Promise<unknown>;
  sleep(ms: number): Promise<unknown>;
}

export interface ShellApi {
  run(argv: string[], options?: { timeoutMs?: number; stdin?: string }): Promise<unknown>;
}

export interface NetApi {
  fetch(
    url: string,
    options?: {
      method?: string;
      headers?: Record<string, string> | [string, string][];
      body?: string;
      maxBytes?: number;
    },
  ): Promise<unknown>;
}

export interface HumanApi {
  ask(question: string, choices?: string[]): Promise<unknown>;
  output(message: string): Promise<unknown>;
  requestPermission(resource: string, rights: Right | Right[], reason: string): Promise<unknown>;
}

export interface ProcApi {
  spawn(image: string, goal: string, options?: { budget?: Budget }): Promise<unknown>;
  fork(options?: { goal?: string; inherit?: unknown[]; budget?: Budget }): Promise<unknown>;
  wait(pid: number, options?: { timeoutMs?: number }): Promise<unknown>;
  children(): Promise<unknown>;
  signal(pid: number, signal: Signal): Promise<unknown>;
  /** Takes effect after the tool returns. */
  exit(payload?: unknown): Promise<unknown>;
  getcwd(): Promise<string>;
  chdir(path: string): Promise<unknown>;
}

export interface EventsApi {
  post(name: string, payload?: unknown, options?: { target?: number }): Promise<unknown>;
  wait(name: string, options?: { timeoutMs?: number }): Promise<unknown>;
}

export interface ToolsApi {
  propose(source: string): Promise<unknown>;
  validate(id: string): Promise<unknown>;
  register(id: string): Promise<unknown>;
  list(): Promise<unknown>;
  call(name: string, args?: unknown): Promise<unknown>;
}

export interface Libos {
  readonly fs: FsApi;
  readonly memory: MemoryApi;
  readonly clock: ClockApi;
  readonly shell: ShellApi;
  readonly net: NetApi;
  readonly human: HumanApi;
  readonly proc: ProcApi;
  readonly events: EventsApi;
  readonly tools: ToolsApi;
  readonly LibosError: typeof LibosError;
  readonly PermissionDenied: typeof PermissionDenied;
  readonly NotFound: typeof NotFound;
  readonly LimitExceeded: typeof LimitExceeded;
  readonly HumanRejected: typeof HumanRejected;
  readonly InvalidArgument: typeof InvalidArgument;
  readonly SyscallError: typeof SyscallError;
}

/** The shape of a tool module's default export. */
export interface Tool<Args = unknown, Out = unknown> {
  run(args: Args, libos: Libos): Out | Promise<Out>;
}

declare global {
  // The error classes are also globals inside tools.
  const LibosError: typeof import("./libos.d.ts").LibosError;
  const PermissionDenied: typeof import("./libos.d.ts").PermissionDenied;
  const NotFound: typeof import("./libos.d.ts").NotFound;
  const LimitExceeded: typeof import("./libos.d.ts").LimitExceeded;
  const HumanRejected: typeof import("./libos.d.ts").HumanRejected;
  const InvalidArgument: typeof import("./libos.d.ts").InvalidArgument;
  const SyscallError: typeof import("./libos.d.ts").SyscallError;
}
