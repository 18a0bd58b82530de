// libos.ts: the JavaScript face of the Agent libOS ops.
//
// Evaluated once per isolate, as a classic script, right after the runtime is created. It
// captures the ops inside this closure, builds the `libos` object handed to every tool, makes
// `Date` and `Math.random` deterministic per call, routes `console.*` to the port, removes
// every global that exposes ops (`Deno`, `__bootstrap`, `__infra`), and returns the host's
// entry point. The file uses only type annotations over plain JavaScript, so stripping its
// types is all a transpiler has to do.

((global: any) => {
  "use strict";

  const ops: any = global.Deno.core.ops;
  const JSONStringify = JSON.stringify;
  const JSONParse = JSON.parse;
  const freeze = Object.freeze;
  const RealDate: any = global.Date;
  const StringCtor = String;
  const additionalKeys = Symbol.for("errorAdditionalPropertyKeys");

  // ---- errors -------------------------------------------------------------------------

  interface WireError {
    kind: string;
    message: string;
    resource?: string;
    right?: string;
    limit?: string;
    request_id?: string;
    detail?: string;
    stack?: string;
  }

  interface ErrorDetail {
    resource?: string;
    right?: string;
    limit?: string;
    requestId?: string;
    reason?: string;
  }

  class LibosError extends Error {
    kind: string;
    resource?: string;
    right?: string;
    limit?: string;
    requestId?: string;
    /** Why, when the kernel said (the message without its kind's prefix). */
    reason?: string;
    constructor(kind: string, message: string, detail?: ErrorDetail) {
      super(message);
      this.kind = kind;
      if (detail) {
        if (detail.resource !== undefined) this.resource = detail.resource;
        if (detail.right !== undefined) this.right = detail.right;
        if (detail.limit !== undefined) this.limit = detail.limit;
        if (detail.requestId !== undefined) this.requestId = detail.requestId;
        if (detail.reason !== undefined) this.reason = detail.reason;
      }
    }
    get name(): string {
      return this.kind;
    }
    /** The wire form of this error, as the kernel writes it. */
    toWire(): WireError {
      const wire: WireError = { kind: this.kind, message: this.message };
      if (this.resource !== undefined) wire.resource = this.resource;
      if (this.right !== undefined) wire.right = this.right;
      if (this.limit !== undefined) wire.limit = this.limit;
      if (this.requestId !== undefined) wire.request_id = this.requestId;
      if (this.reason !== undefined) wire.detail = this.reason;
      return wire;
    }
    // Read by the host when a libos error escapes a tool (deno_core copies these keys).
    get libosWire(): string {
      return JSONStringify(this.toWire());
    }
    get [additionalKeys](): string[] {
      return ["libosWire"];
    }
  }

  class PermissionDenied extends LibosError {
    constructor(message: string, detail?: ErrorDetail) {
      super("PermissionDenied", message, detail);
    }
  }
  class NotFound extends LibosError {
    constructor(message: string, detail?: ErrorDetail) {
      super("NotFound", message, detail);
    }
  }
  class LimitExceeded extends LibosError {
    constructor(message: string, detail?: ErrorDetail) {
      super("LimitExceeded", message, detail);
    }
  }
  class HumanRejected extends LibosError {
    constructor(message: string, detail?: ErrorDetail) {
      super("HumanRejected", message, detail);
    }
  }
  class InvalidArgument extends LibosError {
    constructor(message: string, detail?: ErrorDetail) {
      super("InvalidArgument", message, detail);
    }
  }
  /** Any other kind: `IllegalState`, `Timeout`, `Cancelled`, `IoError`, `Uncertain`, ... (see `.kind`). */
  class SyscallError extends LibosError {
    constructor(kind: string, message: string, detail?: ErrorDetail) {
      super(kind, message, detail);
    }
  }

  const classes: any = {
    PermissionDenied,
    NotFound,
    LimitExceeded,
    HumanRejected,
    InvalidArgument,
  };

  function fromWire(wire: any): LibosError {
    const w: WireError =
      wire && typeof wire === "object"
        ? wire
        : { kind: "InternalError", message: StringCtor(wire) };
    const kind = typeof w.kind === "string" ? w.kind : "InternalError";
    const message = typeof w.message === "string" ? w.message : kind;
    const detail: ErrorDetail = {
      resource: w.resource,
      right: w.right,
      limit: w.limit,
      requestId: w.request_id,
      reason: typeof w.detail === "string" ? w.detail : undefined,
    };
    const Class = classes[kind];
    return Class ? new Class(message, detail) : new SyscallError(kind, message, detail);
  }

  // ---- syscalls -----------------------------------------------------------------------

  async function sys(op: any, args: any): Promise<any> {
    const reply = await op(args);
    if (reply.ok) return reply.value;
    throw fromWire(reply.error);
  }

  function opt(value: any): any {
    return value === null ? undefined : value;
  }

  function base64ToBytes(text: string): Uint8Array {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const clean = text.replace(/[^A-Za-z0-9+/]/g, "");
    const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
    let bits = 0;
    let acc = 0;
    let n = 0;
    for (let i = 0; i < clean.length; i++) {
      acc = (acc << 6) | alphabet.indexOf(clean[i]);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out[n++] = (acc >> bits) & 0xff;
      }
    }
    return out.subarray(0, n);
  }

  function headerPairs(headers: any): [string, string][] {
    if (!headers) return [];
    if (Array.isArray(headers)) return headers.map((p: any) => [StringCtor(p[0]), StringCtor(p[1])]);
    return Object.keys(headers).map((k) => [k, StringCtor(headers[k])]);
  }

  const o: any = {};

  const fs = freeze({
    readText: (path: string) => sys(ops.op_fs_read_text, { path }),
    readBytes: async (path: string) => {
      const value = await sys(ops.op_fs_read_bytes, { path });
      if (typeof value === "string") return base64ToBytes(value);
      if (Array.isArray(value)) return Uint8Array.from(value);
      return value;
    },
    writeText: (path: string, content: string, options: any = o) =>
      sys(ops.op_fs_write_text, { path, content, overwrite: !!options.overwrite }),
    appendText: (path: string, content: string) =>
      sys(ops.op_fs_append_text, { path, content }),
    list: (path?: string) => sys(ops.op_fs_list, { path: opt(path) }),
    mkdir: (path: string, options: any = o) =>
      sys(ops.op_fs_mkdir, { path, recursive: !!options.recursive }),
    deleteFile: (path: string) => sys(ops.op_fs_delete_file, { path }),
    deleteDir: (path: string, options: any = o) =>
      sys(ops.op_fs_delete_dir, { path, recursive: !!options.recursive }),
  });

  const memory = freeze({
    create: (spec: any) => sys(ops.op_mem_create, spec),
    read: (id: string) => sys(ops.op_mem_read, { id }),
    find: (name: string, namespace?: string) =>
      sys(ops.op_mem_find, { name, namespace: opt(namespace) }),
    append: (id: string, item: any) => sys(ops.op_mem_append, { id, item }),
    list: (namespace?: string) => sys(ops.op_mem_list, { namespace: opt(namespace) }),
    createNamespace: (name: string) => sys(ops.op_mem_create_namespace, { name }),
    fromFile: (path: string, options: any = o) =>
      sys(ops.op_mem_from_file, {
        path,
        namespace: opt(options.namespace),
        name: opt(options.name),
        type: opt(options.type),
      }),
    toFile: (id: string, path: string, options: any = o) =>
      sys(ops.op_mem_to_file, { id, path, overwrite: !!options.overwrite }),
  });

  const clock = freeze({
    now: () => sys(ops.op_clock_now, {}),
    sleep: (ms: number) => sys(ops.op_clock_sleep, { ms }),
  });

  const shell = freeze({
    run: (argv: string[], options: any = o) =>
      sys(ops.op_shell_run, {
        argv,
        timeout_ms: opt(options.timeoutMs),
        stdin: opt(options.stdin),
      }),
  });

  const net = freeze({
    fetch: (url: string, options: any = o) =>
      sys(ops.op_net_fetch, {
        url,
        method: opt(options.method),
        headers: headerPairs(options.headers),
        body: opt(options.body),
        max_bytes: opt(options.maxBytes),
      }),
  });

  const human = freeze({
    ask: (question: string, choices?: string[]) =>
      sys(ops.op_human_ask, { question, choices: choices || [] }),
    output: (message: string) => sys(ops.op_human_output, { message }),
    requestPermission: (resource: string, rights: string | string[], reason: string) =>
      sys(ops.op_human_request_permission, {
        resource,
        rights: typeof rights === "string" ? [rights] : rights,
        reason,
      }),
  });

  const proc = freeze({
    spawn: (image: string, goal: string, options: any = o) =>
      sys(ops.op_proc_spawn, { image, goal, budget: opt(options.budget) }),
    fork: (options: any = o) =>
      sys(ops.op_proc_fork, {
        goal: opt(options.goal),
        inherit: options.inherit || [],
        budget: opt(options.budget),
      }),
    wait: (pid: number, options: any = o) =>
      sys(ops.op_proc_wait, { pid, timeout_ms: opt(options.timeoutMs) }),
    children: () => sys(ops.op_proc_children, {}),
    signal: (pid: number, signal: string) => sys(ops.op_proc_signal, { pid, signal }),
    exit: (payload?: any) =>
      sys(ops.op_proc_exit, { payload: payload === undefined ? null : payload }),
    getcwd: () => sys(ops.op_proc_getcwd, {}),
    chdir: (path: string) => sys(ops.op_proc_chdir, { path }),
  });

  const events = freeze({
    post: (name: string, payload?: any, options: any = o) =>
      sys(ops.op_event_post, {
        name,
        payload: payload === undefined ? null : payload,
        target: opt(options.target),
      }),
    wait: (name: string, options: any = o) =>
      sys(ops.op_event_wait, { name, timeout_ms: opt(options.timeoutMs) }),
  });

  const tools = freeze({
    propose: (source: string) => sys(ops.op_tool_propose, { source }),
    validate: (id: string) => sys(ops.op_tool_validate, { id }),
    register: (id: string) => sys(ops.op_tool_register, { id }),
    list: () => sys(ops.op_tool_list, {}),
    call: (name: string, args?: any) =>
      sys(ops.op_tool_call, { name, args: args === undefined ? null : args }),
  });

  const libos = freeze({
    fs,
    memory,
    clock,
    shell,
    net,
    human,
    proc,
    events,
    tools,
    LibosError,
    PermissionDenied,
    NotFound,
    LimitExceeded,
    HumanRejected,
    InvalidArgument,
    SyscallError,
  });

  // ---- console ------------------------------------------------------------------------

  const opConsole = ops.op_console;

  function show(value: any): string {
    if (typeof value === "string") return value;
    if (value instanceof Error) return value.stack || StringCtor(value);
    if (typeof value === "function" || typeof value === "symbol" || typeof value === "bigint") {
      return StringCtor(value);
    }
    try {
      const text = JSONStringify(value);
      return text === undefined ? StringCtor(value) : text;
    } catch (_) {
      return StringCtor(value);
    }
  }

  function writer(level: string) {
    return (...args: any[]) => {
      const text = args.map(show).join(" ");
      if (!opConsole(level, text)) {
        throw new LimitExceeded("limit exceeded: console_output: the call's console output is full", {
          limit: "console_output",
        });
      }
    };
  }

  const console = freeze({
    log: writer("log"),
    info: writer("info"),
    warn: writer("warn"),
    error: writer("error"),
    debug: writer("debug"),
    trace: writer("debug"),
  });

  // ---- determinism --------------------------------------------------------------------

  // Set by the host before each call: the invocation's start time and a seeded PRNG
  // (sfc32). Each read of the clock advances it by 1 ms, so loops waiting on it end.
  let nowMs = 0;
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 1;

  function nextNow(): number {
    const value = nowMs;
    nowMs += 1;
    return value;
  }

  function random(): number {
    a |= 0;
    b |= 0;
    c |= 0;
    d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  function seed(hi: number, lo: number) {
    a = hi | 0;
    b = lo | 0;
    c = (hi ^ 0x9e3779b9) | 0;
    d = (lo ^ 0x85ebca6b) | 0;
    for (let i = 0; i < 15; i++) random();
  }

  function DeterministicDate(this: any, ...args: any[]): any {
    if (!new.target) return new RealDate(nextNow()).toString();
    if (args.length === 0) return Reflect.construct(RealDate, [nextNow()], new.target);
    return Reflect.construct(RealDate, args, new.target);
  }
  DeterministicDate.prototype = RealDate.prototype;
  (DeterministicDate as any).now = nextNow;
  (DeterministicDate as any).parse = RealDate.parse;
  (DeterministicDate as any).UTC = RealDate.UTC;
  Object.defineProperty(RealDate.prototype, "constructor", {
    value: DeterministicDate,
    writable: true,
    configurable: true,
  });

  // ---- the global scope tools see -------------------------------------------------------

  const hidden = ["Deno", "__bootstrap", "__infra"];
  for (const name of hidden) {
    try {
      delete global[name];
    } catch (_) {
      global[name] = undefined;
    }
  }
  Object.defineProperty(global, "console", { value: console, writable: true, configurable: true });
  Object.defineProperty(global, "Date", { value: DeterministicDate, writable: true, configurable: true });
  Math.random = random;
  for (const name of ["LibosError", "PermissionDenied", "NotFound", "LimitExceeded", "HumanRejected", "InvalidArgument", "SyscallError"]) {
    Object.defineProperty(global, name, { value: (libos as any)[name], writable: true, configurable: true });
  }

  // ---- the host's entry point -----------------------------------------------------------

  function entryPoint(ns: any): any {
    const d = ns.default;
    if (typeof d === "function") return d;
    if (d && typeof d.run === "function") return (args: any, l: any) => d.run(args, l);
    if (typeof ns.run === "function") return ns.run;
    throw new TypeError("a tool module must export default { run(args, libos) } or a run function");
  }

  return freeze({
    /**
     * Runs one call. Resolves to the result's JSON text, or to a number (the text's length)
     * when it is longer than `maxResult` units (so the host never copies an oversized value).
     */
    async call(ns: any, argsJson: string, startMs: number, seedHi: number, seedLo: number, maxResult: number) {
      nowMs = startMs;
      seed(seedHi, seedLo);
      const run = entryPoint(ns);
      const result = await run(JSONParse(argsJson), libos);
      const text = JSONStringify(result === undefined ? null : result);
      if (text === undefined) return "null";
      if (text.length > maxResult) return text.length;
      return text;
    },
  });
})(globalThis);
