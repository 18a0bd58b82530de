// libos.ts: the JavaScript face of the Agent libOS ops.
//
// Evaluated once per isolate, as a classic script, right after the runtime is created and
// before any tool runs. It captures the ops and every builtin it uses inside this closure,
// builds the `libos` object handed to every tool, makes `Date` and `Math.random`
// deterministic per call, routes `console.*` to the port, and then shapes the global scope
// tools see:
//   - every global not on the allowlist below is deleted (`Deno`, `__bootstrap`, the engine's
//     `__v8x*` helpers, `SharedArrayBuffer`, `Atomics`, `WebAssembly`, `performance`, ...);
//   - `eval` and the `Function`, `AsyncFunction`, `GeneratorFunction` and
//     `AsyncGeneratorFunction` constructors throw, however they are reached;
//   - every intrinsic reachable from the remaining globals is frozen, so no tool can change
//     what a builtin does for a later call or another tool (assigning `name`, `message`,
//     `toString`, `valueOf`, `toLocaleString` or `constructor` on an instance still works).
// It leaves the host's entry point in a global the host takes and deletes before any tool
// runs. A startup snapshot holds this script's function uncalled (`build.rs`): the host
// calls it on each restored isolate. The file uses only type annotations over plain
// JavaScript, so stripping its types is all a transpiler has to do.

((global: any) => {
  "use strict";

  // ---- builtins, captured before any tool runs ----------------------------------------

  const ops: any = global.Deno.core.ops;
  const freeze = Object.freeze;
  const defineProperty = Object.defineProperty;
  const getOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const getPrototypeOf = Object.getPrototypeOf;
  const hasOwn = Object.hasOwn;
  const keys = Object.keys;
  const apply = Reflect.apply;
  const construct = Reflect.construct;
  const ownKeys = Reflect.ownKeys;
  const deleteProperty = Reflect.deleteProperty;
  const isArray = Array.isArray;
  const JSONStringify = JSON.stringify;
  const JSONParse = JSON.parse;
  const RealDate: any = global.Date;
  const StringCtor = String;
  const stringCharCodeAt = String.prototype.charCodeAt;
  const Uint8ArrayCtor = Uint8Array;
  const WeakMapCtor = WeakMap;
  const weakMapGet = WeakMap.prototype.get;
  const weakMapSet = WeakMap.prototype.set;
  const SetCtor = Set;
  const setHas = Set.prototype.has;
  const setAdd = Set.prototype.add;
  const EvalErrorCtor = EvalError;
  const TypeErrorCtor = TypeError;

  // ---- the stop gate ------------------------------------------------------------------

  // Every function of a tool starts with `__libos_gate__.check()` (the transpiler puts it
  // there). The host sets `stopped[0]` from the watchdog's thread once it has asked the
  // engine to terminate this isolate's JavaScript; calling an op then throws the engine's
  // termination, which no tool code can catch. The engine's own check runs only every so
  // many calls, which a storm of microtasks spawning microtasks outruns; this one runs at
  // every function entry and in every builtin that queues microtasks (wrapped below).
  const stopped = new Int32Array(1);
  const opStop = ops.op_stop;
  function check(): void {
    while (stopped[0] !== 0) opStop();
  }

  /** `value[key]` if `value` is an object that has `key` as an own property, else `fallback`. */
  function own(value: any, key: string, fallback: any): any {
    if (value === null || (typeof value !== "object" && typeof value !== "function")) return fallback;
    if (!hasOwn(value, key)) return fallback;
    const v = value[key];
    return v === undefined || v === null ? fallback : v;
  }

  /** A plain object holding `value`'s own enumerable properties (`value` itself otherwise). */
  function ownCopy(value: any): any {
    if (value === null || typeof value !== "object") return value;
    const out: any = {};
    const names = keys(value);
    for (let i = 0; i < names.length; i++) {
      defineProperty(out, names[i], { value: value[names[i]], writable: true, enumerable: true, configurable: true });
    }
    return out;
  }

  /** A fresh array holding `list`'s elements (own indices only), mapped by `f`. */
  function mapList(list: any, f: (item: any) => any): any[] {
    const out: any[] = [];
    const n = list.length >>> 0;
    for (let i = 0; i < n; i++) {
      defineProperty(out, i, { value: f(hasOwn(list, i) ? list[i] : undefined), writable: true, enumerable: true, configurable: true });
    }
    return out;
  }

  // ---- errors -------------------------------------------------------------------------

  interface WireError {
    kind: string;
    message: string;
    resource?: string;
    right?: string;
    limit?: string;
    request_id?: string;
    detail?: string;
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
      const resource = own(detail, "resource", undefined);
      const right = own(detail, "right", undefined);
      const limit = own(detail, "limit", undefined);
      const requestId = own(detail, "requestId", undefined);
      if (resource !== undefined) this.resource = resource;
      if (right !== undefined) this.right = right;
      if (limit !== undefined) this.limit = limit;
      if (requestId !== undefined) this.requestId = requestId;
      const reason = own(detail, "reason", undefined);
      if (typeof reason === "string") this.reason = reason;
    }
    get name(): string {
      return this.kind;
    }
    /** The wire form of this error (a tool-made one is still reported as a `ToolError`). */
    toWire(): WireError {
      const wire: WireError = { kind: this.kind, message: this.message };
      if (this.resource !== undefined) wire.resource = this.resource;
      if (this.right !== undefined) wire.right = this.right;
      if (this.limit !== undefined) wire.limit = this.limit;
      if (this.requestId !== undefined) wire.request_id = this.requestId;
      if (this.reason !== undefined) wire.detail = this.reason;
      return wire;
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

  function fromWire(wire: any): LibosError {
    const kind = own(wire, "kind", "InternalError");
    const message = own(wire, "message", kind);
    const detail: ErrorDetail = {
      resource: own(wire, "resource", undefined),
      right: own(wire, "right", undefined),
      limit: own(wire, "limit", undefined),
      requestId: own(wire, "request_id", undefined),
      reason: typeof own(wire, "detail", undefined) === "string" ? own(wire, "detail", undefined) : undefined,
    };
    switch (kind) {
      case "PermissionDenied":
        return new PermissionDenied(message, detail);
      case "NotFound":
        return new NotFound(message, detail);
      case "LimitExceeded":
        return new LimitExceeded(message, detail);
      case "HumanRejected":
        return new HumanRejected(message, detail);
      case "InvalidArgument":
        return new InvalidArgument(message, detail);
      default:
        return new SyscallError(StringCtor(kind), StringCtor(message), detail);
    }
  }

  // Errors the host returned to this call's syscalls, each with the call's number and the
  // error's index in the host's record. Only these may leave a tool as a syscall's error;
  // any other thrown value is the tool's own error. Replaced at the start of every call.
  let callNumber = -1;
  let hostErrors: WeakMap<object, number[]> = new WeakMapCtor();

  // ---- syscalls -----------------------------------------------------------------------

  async function sys(op: any, args: any): Promise<any> {
    const reply = await op(args);
    if (own(reply, "ok", false) === true) return own(reply, "value", null);
    const error = fromWire(own(reply, "error", null));
    apply(weakMapSet, hostErrors, [error, [own(reply, "call", -1), own(reply, "seq", -1)]]);
    throw error;
  }

  function opt(value: any): any {
    return value === null ? undefined : value;
  }

  function base64ToBytes(text: string): Uint8Array {
    const out = new Uint8ArrayCtor(((text.length * 3) >>> 2) + 3);
    let bits = 0;
    let acc = 0;
    let n = 0;
    for (let i = 0; i < text.length; i++) {
      const c = apply(stringCharCodeAt, text, [i]);
      let v = -1;
      if (c >= 65 && c <= 90) v = c - 65;
      else if (c >= 97 && c <= 122) v = c - 71;
      else if (c >= 48 && c <= 57) v = c + 4;
      else if (c === 43) v = 62;
      else if (c === 47) v = 63;
      if (v < 0) continue;
      acc = ((acc << 6) | v) & 0xffffff;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out[n++] = (acc >> bits) & 0xff;
      }
    }
    return new Uint8ArrayCtor(out.buffer, 0, n);
  }

  function headerPairs(headers: any): [string, string][] {
    if (headers === null || typeof headers !== "object") return [];
    if (isArray(headers)) return mapList(headers, (p: any) => [StringCtor(own(p, "0", "")), StringCtor(own(p, "1", ""))]);
    return mapList(keys(headers), (k: string) => [k, StringCtor(headers[k])]);
  }

  const fs = freeze({
    readText: (path: string) => sys(ops.op_fs_read_text, { path }),
    readBytes: async (path: string) => {
      const value = await sys(ops.op_fs_read_bytes, { path });
      if (typeof value === "string") return base64ToBytes(value);
      if (isArray(value)) return new Uint8ArrayCtor(mapList(value, (b: any) => b));
      return value;
    },
    writeText: (path: string, content: string, options?: any) =>
      sys(ops.op_fs_write_text, { path, content, overwrite: own(options, "overwrite", false) === true }),
    appendText: (path: string, content: string) => sys(ops.op_fs_append_text, { path, content }),
    list: (path?: string) => sys(ops.op_fs_list, { path: opt(path) }),
    mkdir: (path: string, options?: any) =>
      sys(ops.op_fs_mkdir, { path, recursive: own(options, "recursive", false) === true }),
    deleteFile: (path: string) => sys(ops.op_fs_delete_file, { path }),
    deleteDir: (path: string, options?: any) =>
      sys(ops.op_fs_delete_dir, { path, recursive: own(options, "recursive", false) === true }),
  });

  const memory = freeze({
    create: (spec: any) => sys(ops.op_mem_create, ownCopy(spec)),
    read: (id: string) => sys(ops.op_mem_read, { id }),
    find: (name: string, namespace?: string) => sys(ops.op_mem_find, { name, namespace: opt(namespace) }),
    append: (id: string, item: any) => sys(ops.op_mem_append, { id, item }),
    list: (namespace?: string) => sys(ops.op_mem_list, { namespace: opt(namespace) }),
    createNamespace: (name: string) => sys(ops.op_mem_create_namespace, { name }),
    fromFile: (path: string, options?: any) =>
      sys(ops.op_mem_from_file, {
        path,
        namespace: own(options, "namespace", undefined),
        name: own(options, "name", undefined),
        type: own(options, "type", undefined),
      }),
    toFile: (id: string, path: string, options?: any) =>
      sys(ops.op_mem_to_file, { id, path, overwrite: own(options, "overwrite", false) === true }),
  });

  const clock = freeze({
    now: () => sys(ops.op_clock_now, {}),
    sleep: (ms: number) => sys(ops.op_clock_sleep, { ms }),
  });

  const shell = freeze({
    run: (argv: string[], options?: any) =>
      sys(ops.op_shell_run, {
        argv,
        timeout_ms: own(options, "timeoutMs", undefined),
        stdin: own(options, "stdin", undefined),
      }),
  });

  const net = freeze({
    fetch: (url: string, options?: any) =>
      sys(ops.op_net_fetch, {
        url,
        method: own(options, "method", undefined),
        headers: headerPairs(own(options, "headers", null)),
        body: own(options, "body", undefined),
        max_bytes: own(options, "maxBytes", undefined),
      }),
  });

  const human = freeze({
    ask: (question: string, choices?: string[]) =>
      sys(ops.op_human_ask, { question, choices: choices === undefined || choices === null ? [] : choices }),
    output: (message: string) => sys(ops.op_human_output, { message }),
    requestPermission: (resource: string, rights: string | string[], reason: string) =>
      sys(ops.op_human_request_permission, {
        resource,
        rights: typeof rights === "string" ? [rights] : rights,
        reason,
      }),
  });

  const proc = freeze({
    spawn: (image: string, goal: string, options?: any) =>
      sys(ops.op_proc_spawn, { image, goal, budget: own(options, "budget", undefined) }),
    fork: (options?: any) =>
      sys(ops.op_proc_fork, {
        goal: own(options, "goal", undefined),
        inherit: own(options, "inherit", []),
        budget: own(options, "budget", undefined),
      }),
    wait: (pid: number, options?: any) =>
      sys(ops.op_proc_wait, { pid, timeout_ms: own(options, "timeoutMs", undefined) }),
    children: () => sys(ops.op_proc_children, {}),
    signal: (pid: number, signal: string) => sys(ops.op_proc_signal, { pid, signal }),
    exit: (payload?: any) => sys(ops.op_proc_exit, { payload: payload === undefined ? null : payload }),
    getcwd: () => sys(ops.op_proc_getcwd, {}),
    chdir: (path: string) => sys(ops.op_proc_chdir, { path }),
  });

  const events = freeze({
    post: (name: string, payload?: any, options?: any) =>
      sys(ops.op_event_post, {
        name,
        payload: payload === undefined ? null : payload,
        target: own(options, "target", undefined),
      }),
    wait: (name: string, options?: any) =>
      sys(ops.op_event_wait, { name, timeout_ms: own(options, "timeoutMs", undefined) }),
  });

  const tools = freeze({
    propose: (source: string) => sys(ops.op_tool_propose, { source }),
    validate: (id: string) => sys(ops.op_tool_validate, { id }),
    register: (id: string) => sys(ops.op_tool_register, { id }),
    list: () => sys(ops.op_tool_list, {}),
    call: (name: string, args?: any) => sys(ops.op_tool_call, { name, args: args === undefined ? null : args }),
  });

  const errorClasses: any = {
    LibosError,
    PermissionDenied,
    NotFound,
    LimitExceeded,
    HumanRejected,
    InvalidArgument,
    SyscallError,
  };

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
    if (value instanceof Error) {
      const stack = value.stack;
      return typeof stack === "string" && stack !== "" ? stack : StringCtor(value);
    }
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
      let text = "";
      for (let i = 0; i < args.length; i++) text += (i === 0 ? "" : " ") + show(args[i]);
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
    if (args.length === 0) return construct(RealDate, [nextNow()], new.target);
    return construct(RealDate, args, new.target);
  }
  defineProperty(DeterministicDate, "prototype", { value: RealDate.prototype, writable: false });
  defineProperty(DeterministicDate, "now", { value: nextNow, writable: true, configurable: true });
  defineProperty(DeterministicDate, "parse", { value: RealDate.parse, writable: true, configurable: true });
  defineProperty(DeterministicDate, "UTC", { value: RealDate.UTC, writable: true, configurable: true });
  defineProperty(RealDate.prototype, "constructor", { value: DeterministicDate, writable: true, configurable: true });
  defineProperty(Math, "random", { value: random, writable: true, configurable: true });

  // ---- no code from strings -------------------------------------------------------------

  function codeGenerationDisabled(name: string): never {
    throw new EvalErrorCtor(`${name} is not available: tools cannot run code built from strings`);
  }

  /** Makes `proto.constructor` (and the returned global) a constructor that always throws. */
  function refuseConstructor(name: string, proto: object): any {
    const refuse = function (this: any) {
      return codeGenerationDisabled(name);
    };
    defineProperty(refuse, "name", { value: name });
    defineProperty(refuse, "prototype", { value: proto, writable: false });
    defineProperty(proto, "constructor", { value: refuse, writable: true, configurable: true });
    return refuse;
  }

  const FunctionRefused = refuseConstructor("Function", getPrototypeOf(function () {}));
  refuseConstructor("AsyncFunction", getPrototypeOf(async function () {}));
  refuseConstructor("GeneratorFunction", getPrototypeOf(function* () {}));
  refuseConstructor("AsyncGeneratorFunction", getPrototypeOf(async function* () {}));
  const evalRefused = (..._args: any[]) => codeGenerationDisabled("eval");
  defineProperty(evalRefused, "name", { value: "eval" });

  // ---- builtins that queue microtasks check the gate first -----------------------------

  function gate(target: any, key: string) {
    if (target === null || target === undefined) return;
    const desc = getOwnPropertyDescriptor(target, key);
    if (desc === undefined || typeof desc.value !== "function") return;
    const original = desc.value;
    const wrapper = {
      [key](this: any, ...args: any[]) {
        check();
        return apply(original, this, args);
      },
    }[key];
    defineProperty(wrapper, "length", { value: original.length });
    defineProperty(target, key, { value: wrapper, writable: desc.writable, enumerable: desc.enumerable, configurable: desc.configurable });
  }

  const PromiseCtor: any = Promise;
  for (const key of ["all", "allSettled", "any", "race", "resolve", "reject", "try", "withResolvers"]) gate(PromiseCtor, key);
  for (const key of ["then", "catch", "finally"]) gate(PromiseCtor.prototype, key);
  gate(Array, "fromAsync");
  const asyncGeneratorPrototype = getPrototypeOf(async function* () {}).prototype;
  for (const key of ["next", "return", "throw"]) gate(asyncGeneratorPrototype, key);
  const AsyncDisposableStackCtor: any = global.AsyncDisposableStack;
  if (typeof AsyncDisposableStackCtor === "function") gate(AsyncDisposableStackCtor.prototype, "disposeAsync");

  // ---- the global scope tools see -------------------------------------------------------

  // Standard ECMAScript globals tools keep, plus `console` and the libos error classes.
  // Left out on purpose: `SharedArrayBuffer` and `Atomics` (native blocking, memory outside
  // the heap limit), `WebAssembly` (code from bytes, memory outside the heap limit),
  // `WeakRef` and `FinalizationRegistry` (garbage-collection timing breaks replay),
  // `Intl` and `Temporal` (real clocks and host locale), `ShadowRealm` (a fresh realm with
  // real intrinsics), and every engine or host helper (`Deno`, `__v8x*`, `gc`,
  // `performance`, `queueMicrotask`, `atob`, `btoa`, `DOMException`, `InternalError`).
  const allowed = new SetCtor([
    "globalThis", "Infinity", "NaN", "undefined",
    "eval", "isFinite", "isNaN", "parseFloat", "parseInt",
    "decodeURI", "decodeURIComponent", "encodeURI", "encodeURIComponent", "escape", "unescape",
    "AggregateError", "Array", "ArrayBuffer", "BigInt", "BigInt64Array", "BigUint64Array",
    "Boolean", "DataView", "Date", "Error", "EvalError", "Float16Array", "Float32Array",
    "Float64Array", "Function", "Int8Array", "Int16Array", "Int32Array", "Iterator", "Map",
    "Number", "Object", "Promise", "Proxy", "RangeError", "ReferenceError", "RegExp", "Set",
    "String", "Symbol", "SyntaxError", "TypeError", "Uint8Array", "Uint8ClampedArray",
    "Uint16Array", "Uint32Array", "URIError", "WeakMap", "WeakSet", "DisposableStack",
    "AsyncDisposableStack", "SuppressedError", "JSON", "Math", "Reflect",
    "console", "LibosError", "PermissionDenied", "NotFound", "LimitExceeded", "HumanRejected",
    "InvalidArgument", "SyscallError", "__libos_gate__",
  ]);

  const data = (value: any) => ({ value, writable: true, enumerable: false, configurable: true });
  defineProperty(global, "__libos_gate__", { value: freeze({ check }), writable: false, enumerable: false, configurable: false });
  defineProperty(global, "console", data(console));
  defineProperty(global, "Date", data(DeterministicDate));
  defineProperty(global, "Function", data(FunctionRefused));
  defineProperty(global, "eval", data(evalRefused));
  for (const name of keys(errorClasses)) defineProperty(global, name, data(errorClasses[name]));
  for (const key of ownKeys(global)) {
    if (typeof key === "string" && apply(setHas, allowed, [key])) continue;
    if (!deleteProperty(global, key)) {
      throw new TypeErrorCtor(`libos bootstrap: cannot remove the global ${StringCtor(key)}`);
    }
  }

  // ---- frozen intrinsics ----------------------------------------------------------------

  // Instances may still shadow these inherited data properties by assignment (`this.name =
  // ...` in an Error subclass): on a frozen prototype they become accessors whose setter
  // defines the property on the instance.
  const overridable = new SetCtor(["constructor", "toString", "valueOf", "toLocaleString", "name", "message"]);

  function keepOverridable(obj: any, key: string, desc: PropertyDescriptor) {
    const value = desc.value;
    defineProperty(obj, key, {
      get() {
        return value;
      },
      set(this: any, next: any) {
        if (this === obj) throw new TypeErrorCtor(`cannot assign to read only property '${key}' of a builtin`);
        defineProperty(this, key, { value: next, writable: true, enumerable: true, configurable: true });
      },
      enumerable: desc.enumerable,
      configurable: false,
    });
  }

  function harden(roots: any[]) {
    const seen = new SetCtor();
    const queue = roots;
    while (queue.length > 0) {
      const obj = queue.pop();
      if (obj === null || (typeof obj !== "object" && typeof obj !== "function")) continue;
      if (apply(setHas, seen, [obj])) continue;
      apply(setAdd, seen, [obj]);
      queue.push(getPrototypeOf(obj));
      for (const key of ownKeys(obj)) {
        const desc = getOwnPropertyDescriptor(obj, key);
        if (desc === undefined) continue;
        if (hasOwn(desc, "value")) {
          queue.push(desc.value);
          if (!(desc.writable && desc.configurable && typeof key === "string" && apply(setHas, overridable, [key]))) continue;
          keepOverridable(obj, key, desc);
          const accessor = getOwnPropertyDescriptor(obj, key);
          if (accessor !== undefined) queue.push(accessor.get, accessor.set);
        } else {
          queue.push(desc.get, desc.set);
        }
      }
      freeze(obj);
    }
  }

  const roots: any[] = [libos, getPrototypeOf(function* () {}), getPrototypeOf(async function () {})];
  roots.push(getPrototypeOf(async function* () {}));
  roots.push(getPrototypeOf([][Symbol.iterator]()), getPrototypeOf(""[Symbol.iterator]()));
  roots.push(getPrototypeOf(new Map().entries()), getPrototypeOf(new Set().values()));
  roots.push(getPrototypeOf(/x/[Symbol.matchAll]("x")));
  const IteratorCtor: any = global.Iterator;
  if (typeof IteratorCtor === "function" && typeof IteratorCtor.from === "function") {
    const helper = IteratorCtor.from([]);
    roots.push(getPrototypeOf(helper));
    if (typeof helper.map === "function") roots.push(getPrototypeOf(helper.map((x: any) => x)));
  }
  for (const key of ownKeys(global)) {
    if (key !== "globalThis") roots.push(global[key]);
  }
  harden(roots);

  // ---- the host's entry point -----------------------------------------------------------

  function entryPoint(ns: any): any {
    const d = ns.default;
    if (typeof d === "function") return d;
    if (d !== null && typeof d === "object" && typeof d.run === "function") return (args: any, l: any) => d.run(args, l);
    if (typeof ns.run === "function") return ns.run;
    throw new TypeErrorCtor("a tool module must export default { run(args, libos) } or a run function");
  }

  const hooks = freeze({
    /** The stop flag the host sets (see the stop gate above). */
    stopped,
    /**
     * Runs call number `call`. Resolves to the result's JSON text; to its length (a positive
     * number) when that is longer than `maxResult` units, so the host never copies an
     * oversized value; or to `-(seq + 1)` when the tool let a syscall's error escape, `seq`
     * being that error's index in the host's record of this call.
     */
    async call(ns: any, argsJson: string, startMs: number, seedHi: number, seedLo: number, maxResult: number, call: number) {
      nowMs = startMs;
      seed(seedHi, seedLo);
      callNumber = call;
      hostErrors = new WeakMapCtor();
      const run = entryPoint(ns);
      let result: any;
      try {
        result = await run(JSONParse(argsJson), libos);
      } catch (e) {
        const origin = e !== null && (typeof e === "object" || typeof e === "function") ? apply(weakMapGet, hostErrors, [e]) : undefined;
        if (origin !== undefined && origin[0] === callNumber && origin[1] >= 0) return -(origin[1] + 1);
        throw e;
      }
      const text = JSONStringify(result === undefined ? null : result);
      if (text === undefined) return "null";
      if (text.length > maxResult) return text.length;
      return text;
    },
  });

  // The host takes the entry point from here, and deletes it, right after this script ran:
  // before any tool runs.
  defineProperty(global, "__libos_entry__", { value: hooks, writable: false, enumerable: false, configurable: true });
})(globalThis);
