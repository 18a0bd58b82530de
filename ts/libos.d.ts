// Types for tool authors: the tool module's shape, the `libos` object every tool receives,
// what each call returns, and its errors.
//
// A tool module exports its metadata as `export const tool = { … } satisfies Tool<Args, Out>`
// and its code as `export default async function run(args: Args, libos: Libos)`. Import these
// types with `import type { Libos, Tool } from "libos";` — a type-only import, erased before
// the tool runs (tools load no module; any other import is refused by validation).
// Everything a tool does to the world goes through `libos`; each call is a syscall that the
// kernel checks against the calling process's capabilities.
//
// Every result interface below is the kernel's wire shape (snake_case keys, as the kernel
// sends them); a test runs each primitive and fails when a key differs from this file.

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

/** A process's status. */
export type Status =
  | "CREATED" | "RUNNABLE" | "RUNNING" | "WAITING_EVENT" | "WAITING_TOOL" | "WAITING_HUMAN"
  | "PAUSED" | "SUSPENDED" | "EXITED" | "FAILED" | "KILLED";

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One entry of `fs.list` (symlinks are listed, never followed). */
export interface DirEntry {
  name: string;
  kind: "file" | "dir" | "symlink" | "other";
  /** The length of a regular file; 0 for anything else. */
  size: number;
}

/** `fs.writeText` and `memory.toFile`. */
export interface WriteResult {
  path: string;
  bytes: number;
  /** SHA-256 of the content written, hex. */
  sha256: string;
  overwritten: boolean;
}

/** `fs.appendText`. */
export interface AppendResult {
  path: string;
  bytes: number;
}

/** `fs.mkdir`, `fs.deleteFile`, `fs.deleteDir`. */
export interface PathResult {
  path: string;
}

/** `memory.create`, `memory.fromFile`. */
export interface ObjectRef {
  id: string;
  namespace: string;
  name: string | null;
}

/** `memory.append`. */
export interface AppendedRef {
  id: string;
  namespace: string;
}

/** `memory.createNamespace`. */
export interface NamespaceResult {
  namespace: string;
}

/** An object's header: the items of `memory.list`. */
export interface ObjectInfo {
  id: string;
  namespace: string;
  name: string | null;
  type: string;
  title: string | null;
  summary: string | null;
  tags: string[];
  mime: string | null;
  appendable: boolean;
  /** The pid of the process that created it. */
  created_by: number;
  /** Milliseconds since the Unix epoch. */
  created_at: number;
}

/** A whole object: `memory.read`, `memory.find`. */
export interface ObjectRecord extends ObjectInfo {
  payload: Json;
  /** What was appended, in order (appendable objects). */
  items: Json[];
}

/** `clock.sleep`. */
export interface SleepResult {
  slept_ms: number;
}

/** `shell.run`: a non-zero exit is a result, not an error. */
export interface ShellResult {
  /** `null` when the command was killed by a signal or timed out. */
  exit_code: number | null;
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
  timed_out: boolean;
}

/** `net.fetch`: any HTTP status is a result; redirects are not followed. */
export interface FetchResponse {
  status: number;
  /** In the order received; a name may repeat. */
  headers: [string, string][];
  body: string;
  /** The body was cut at `maxBytes`. */
  truncated: boolean;
}

/** `human.output`. */
export interface HumanOutputResult {
  /** The request id (`agent-libos human show ID`). */
  id: string;
}

/** `human.ask`: the human's answer. */
export interface HumanAnswer {
  id: string;
  answer: string;
}

/** `human.requestPermission`, when approved (a rejection throws `HumanRejected`). */
export interface PermissionGranted {
  id: string;
  granted: true;
  /** Ids of the capabilities now held on the resource. */
  capabilities: number[];
}

/** `proc.spawn`, `proc.fork`. */
export interface SpawnResult {
  pid: number;
}

/** `proc.signal`, `proc.exit`. */
export interface SignalResult {
  pid: number;
  status: Status;
}

/** `proc.wait`: the child ended. */
export interface WaitResult {
  pid: number;
  status: Status;
  /** What the child passed to `proc.exit` (or `null`). */
  exit: Json;
}

/** One entry of `proc.children`. */
export interface ProcessInfo {
  pid: number;
  parent: number | null;
  image: string | null;
  image_version: number | null;
  goal: string;
  status: Status;
  cwd: string;
  budget: Budget;
  usage: Budget;
  exit: Json;
}

/** `events.post`. */
export interface PostResult {
  /** The event's id. */
  id: number;
}

/** `events.wait`. */
export interface Event {
  id: number;
  name: string;
  payload: Json;
  /** Who posted it, e.g. `"pid:3"`. */
  source: string;
}

/** One entry of `tools.list`. */
export interface ToolInfo {
  name: string;
  description: string;
  input: JsonSchema;
  output: JsonSchema;
  hash: string;
}

/** `tools.propose`. */
export interface ProposeResult {
  /** The candidate's object id (pass it to `validate` and `register`). */
  id: string;
  hash: string;
}

/** A static finding of validation, located in the tool's source. */
export interface Finding {
  rule: string;
  message: string;
  line: number;
  column: number;
}

/** One declared test's outcome. */
export interface TestOutcome {
  name: string;
  passed: boolean;
  error?: string;
}

/** `tools.validate`. */
export interface ValidationResult {
  id: string;
  /** `null` when the source did not pass the static checks. */
  name: string | null;
  ok: boolean;
  findings: Finding[];
  tests: TestOutcome[];
}

/** `tools.register`. */
export interface RegisterResult {
  name: string;
  id: string;
  hash: string;
}

export interface FsApi {
  /** Reads and writes move at most 16 MiB per call and 1 GiB per process by default
   * (`LimitExceeded` with limit `fs_bytes`); a larger file is refused, not truncated. */
  readText(path: string): Promise<string>;
  /** The kernel's base64 answer decoded to bytes. */
  readBytes(path: string): Promise<Uint8Array>;
  writeText(path: string, content: string, options?: { overwrite?: boolean }): Promise<WriteResult>;
  appendText(path: string, content: string): Promise<AppendResult>;
  /** Only the entries the process may read are listed. */
  list(path?: string): Promise<DirEntry[]>;
  mkdir(path: string, options?: { recursive?: boolean }): Promise<PathResult>;
  deleteFile(path: string): Promise<PathResult>;
  /** Recursive: needs delete on the directory and on every entry inside; one entry the
   * process may not delete refuses the whole call before anything is removed. */
  deleteDir(path: string, options?: { recursive?: boolean }): Promise<PathResult>;
}

export interface MemoryApi {
  create(spec: ObjectSpec): Promise<ObjectRef>;
  read(id: string): Promise<ObjectRecord>;
  find(name: string, namespace?: string): Promise<ObjectRecord>;
  append(id: string, item: Json): Promise<AppendedRef>;
  list(namespace?: string): Promise<ObjectInfo[]>;
  createNamespace(name: string): Promise<NamespaceResult>;
  fromFile(path: string, options?: { namespace?: string; name?: string; type?: string }): Promise<ObjectRef>;
  toFile(id: string, path: string, options?: { overwrite?: boolean }): Promise<WriteResult>;
}

export interface ClockApi {
  /** The kernel's clock (journaled). `Date.now()` inside a tool is the call's start time. */
  /** Milliseconds since the Unix epoch. */
  now(): Promise<number>;
  sleep(ms: number): Promise<SleepResult>;
}

export interface ShellApi {
  run(argv: string[], options?: { timeoutMs?: number; stdin?: string }): Promise<ShellResult>;
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
  ): Promise<FetchResponse>;
}

export interface HumanApi {
  ask(question: string, choices?: string[]): Promise<HumanAnswer>;
  output(message: string): Promise<HumanOutputResult>;
  requestPermission(resource: string, rights: Right | Right[], reason: string): Promise<PermissionGranted>;
}

export interface ProcApi {
  spawn(image: string, goal: string, options?: { budget?: Budget }): Promise<SpawnResult>;
  fork(options?: { goal?: string; inherit?: unknown[]; budget?: Budget }): Promise<SpawnResult>;
  wait(pid: number, options?: { timeoutMs?: number }): Promise<WaitResult>;
  children(): Promise<ProcessInfo[]>;
  signal(pid: number, signal: Signal): Promise<SignalResult>;
  /** Takes effect after the tool returns. */
  exit(payload?: Json): Promise<SignalResult>;
  getcwd(): Promise<string>;
  /** The new working directory. */
  chdir(path: string): Promise<string>;
}

export interface EventsApi {
  post(name: string, payload?: Json, options?: { target?: number }): Promise<PostResult>;
  wait(name: string, options?: { timeoutMs?: number }): Promise<Event>;
}

export interface ToolsApi {
  propose(source: string): Promise<ProposeResult>;
  validate(id: string): Promise<ValidationResult>;
  register(id: string): Promise<RegisterResult>;
  list(): Promise<ToolInfo[]>;
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

/** A JSON Schema (the supported subset: type, properties, required, items, enum, …). */
export type JsonSchema = { [key: string]: Json };

/** One mocked syscall of a declared test; `primitive` is a kernel name such as `fs.read_text`
 * (ts/README.md lists them). Give `result` or `error`. */
export interface MockSyscall {
  primitive: string;
  /** When given, the call's arguments must equal these (kernel names, e.g. `{ path }`). */
  args?: Json;
  result?: Json;
  error?: { kind: string; message?: string; resource?: string; right?: string; limit?: string };
}

/** A test the tool declares for itself, run by `tool check`/`tool test` and at validation. */
export interface DeclaredTest<Args = Json, Out = Json> {
  name: string;
  args?: Args;
  /** The syscalls the tool makes, in order, with their mocked outcomes. */
  syscalls?: MockSyscall[];
  expect?: Out;
  expect_error?: { kind: string; message?: string; resource?: string; right?: string; limit?: string };
}

/** The tool's metadata: `export const tool = { … } satisfies Tool<Args, Out>;` (a static
 * literal: validation reads it without running the module). */
export interface Tool<Args = Json, Out = Json> {
  /** `^[a-z][a-z0-9_]{0,63}$` */
  name: string;
  description: string;
  /** JSON Schema of `args`; its `type` is `"object"`. */
  input: JsonSchema;
  /** JSON Schema of the result. */
  output: JsonSchema;
  /** At most 16. */
  tests?: DeclaredTest<Args, Out>[];
  limits?: {
    cpu_ms?: number;
    heap_mb?: number;
    syscalls?: number;
    result_bytes?: number;
    console_bytes?: number;
  };
}

/** The shape of the default export: `export default async function run(args, libos)`. */
export type Run<Args = Json, Out = Json> = (args: Args, libos: Libos) => Out | Promise<Out>;

type LibosErrorClass = typeof LibosError;
type PermissionDeniedClass = typeof PermissionDenied;
type NotFoundClass = typeof NotFound;
type LimitExceededClass = typeof LimitExceeded;
type HumanRejectedClass = typeof HumanRejected;
type InvalidArgumentClass = typeof InvalidArgument;
type SyscallErrorClass = typeof SyscallError;

declare global {
  // The error classes are also globals inside tools.
  const LibosError: LibosErrorClass;
  const PermissionDenied: PermissionDeniedClass;
  const NotFound: NotFoundClass;
  const LimitExceeded: LimitExceededClass;
  const HumanRejected: HumanRejectedClass;
  const InvalidArgument: InvalidArgumentClass;
  const SyscallError: SyscallErrorClass;
  /** Lines go to the process's event log (bounded per call). */
  const console: {
    log(...data: unknown[]): void;
    info(...data: unknown[]): void;
    warn(...data: unknown[]): void;
    error(...data: unknown[]): void;
    debug(...data: unknown[]): void;
  };
}
