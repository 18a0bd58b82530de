//! Static safety rules run on a tool's swc AST before it is accepted.
//!
//! These are a first line of defence that gives the model precise, located feedback; the
//! isolate (no host ops, no code generation from strings) remains the actual boundary.
//! Each rule id is a constant in [`rule`](super::finding::rule):
//!
//! * `no-dynamic-import` — `import(...)`.
//! * `no-eval` — `eval` called or referenced as a value (`eval(…)`, `(0, eval)(…)`,
//!   `const e = eval`, `{ eval }`), or read as a member (`globalThis.eval`, `x["eval"]`).
//! * `no-function-constructor` — `Function` referenced as a value or member
//!   (`new Function(…)`, `globalThis.Function`), and any call or `new` whose callee is a
//!   member named `constructor` (`(async () => {}).constructor("…")`).
//! * `no-forbidden-import` — a static `import`/`export … from` whose specifier is not in
//!   the allowlist.
//! * `type-only-import` — an import or re-export of an allowed specifier (`libos`) that is
//!   not type-only: nothing is loaded at run time, so only `import type { Libos } from
//!   "libos"` (or `import { type Libos }`, `export type { … } from`) is accepted.
//! * `no-require` — `require(...)` calls and `import x = require("…")`.
//! * `no-host-global` — `Deno` referenced as a value or member (`Deno.core`, `globalThis.Deno`).
//! * `no-reserved-name` — an identifier starting with `__libos` (the runtime's stop checks
//!   call `__libos_gate__`; a tool must not shadow it).
//!
//! Type positions (`x: Function`, `typeof Deno`) are never flagged: they vanish when transpiled.

use std::collections::HashSet;

use deno_ast::swc::ast::{
    CallExpr, Callee, ExportAll, ExportNamedSpecifier, ExportSpecifier, Expr, Ident, ImportDecl,
    ImportSpecifier, MemberExpr, MemberProp, ModuleExportName, NamedExport, NewExpr, OptCall, Prop,
    Str, TsImportEqualsDecl, TsModuleRef,
};
use deno_ast::swc::common::Span;
use deno_ast::swc::ecma_visit::{Visit, VisitWith};
use deno_ast::{ParsedSource, SourceTextInfo};

use super::finding::{rule, Finding};

/// The default import allowlist: only the `libos` type module.
pub const DEFAULT_ALLOWED_IMPORTS: &[&str] = &["libos"];

/// Runs every rule over `parsed` and returns all findings, ordered by position.
pub fn check(parsed: &ParsedSource, allowed_imports: &[String]) -> Vec<Finding> {
    let mut checker = Checker {
        text: parsed.text_info_lazy(),
        allowed: allowed_imports,
        seen: HashSet::new(),
        findings: Vec::new(),
    };
    parsed.program_ref().visit_with(&mut checker);
    let mut findings = checker.findings;
    findings.sort_by_key(|f| (f.line, f.column));
    findings
}

struct Checker<'a> {
    text: &'a SourceTextInfo,
    allowed: &'a [String],
    /// `(rule, span start)` already reported, so nested visits do not repeat a finding.
    seen: HashSet<(&'static str, u32)>,
    findings: Vec<Finding>,
}

impl Checker<'_> {
    fn report(&mut self, rule: &'static str, span: Span, message: String) {
        if self.seen.insert((rule, span.lo.0)) {
            self.findings
                .push(Finding::at(rule, message, span, self.text));
        }
    }

    /// A value reference to a global we forbid, by name.
    fn check_name(&mut self, name: &str, span: Span) {
        match name {
            "eval" => self.report(
                rule::NO_EVAL,
                span,
                "`eval` is not allowed (no code from strings)".into(),
            ),
            "Function" => self.report(
                rule::NO_FUNCTION_CONSTRUCTOR,
                span,
                "the `Function` constructor is not allowed (no code from strings)".into(),
            ),
            "Deno" => self.report(
                rule::NO_HOST_GLOBAL,
                span,
                "the host global `Deno` is not available to tools; use the `libos` argument".into(),
            ),
            _ => {}
        }
    }

    /// Checks a static import or re-export: its specifier must be allowed, and since a tool
    /// loads no module at run time, it must be type-only (`type_only`), so the transpiler
    /// erases it.
    fn check_specifier(&mut self, src: &Str, what: &str, type_only: bool) {
        let spec = src.value.to_string_lossy();
        if self.allowed.iter().any(|a| a.as_str() == spec) {
            if !type_only {
                self.report(
                    rule::TYPE_ONLY_IMPORT,
                    src.span,
                    format!(
                        "{what} of \"{spec}\" must be type-only (`{what_form} type {{ Libos }} from \"{spec}\"`): \
                         tools load no module at run time; the libos object is run's second argument",
                        what_form = if what == "import" { "import" } else { "export" },
                    ),
                );
            }
        } else {
            let allowed = self
                .allowed
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ");
            self.report(
                rule::NO_FORBIDDEN_IMPORT,
                src.span,
                format!("{what} of \"{spec}\" is not allowed (allowed: [{allowed}])"),
            );
        }
    }

    /// Flags `x.constructor(…)` / `new x.constructor(…)`.
    fn check_callee(&mut self, callee: &Expr, span: Span) {
        if let Expr::Member(m) = unwrap(callee) {
            if member_name(&m.prop).as_deref() == Some("constructor") {
                self.report(
                    rule::NO_FUNCTION_CONSTRUCTOR,
                    span,
                    "calling a `.constructor` member is not allowed (it reaches the Function \
                     constructor)"
                        .into(),
                );
            }
        }
    }
}

impl Visit for Checker<'_> {
    fn visit_ident(&mut self, n: &Ident) {
        if n.sym.starts_with("__libos") {
            self.report(
                rule::NO_RESERVED_NAME,
                n.span,
                format!(
                    "`{}` is reserved for the runtime; choose another name",
                    n.sym
                ),
            );
        }
    }

    fn visit_expr(&mut self, n: &Expr) {
        if let Expr::Ident(id) = n {
            self.check_name(&id.sym, id.span);
        }
        n.visit_children_with(self);
    }

    fn visit_member_expr(&mut self, n: &MemberExpr) {
        if let Some(name) = member_name(&n.prop) {
            let span = match &n.prop {
                MemberProp::Ident(id) => id.span,
                MemberProp::Computed(c) => c.span,
                MemberProp::PrivateName(p) => p.span,
            };
            self.check_name(&name, span);
        }
        n.visit_children_with(self);
    }

    fn visit_call_expr(&mut self, n: &CallExpr) {
        match &n.callee {
            Callee::Import(_) => self.report(
                rule::NO_DYNAMIC_IMPORT,
                n.span,
                "dynamic `import(...)` is not allowed".into(),
            ),
            Callee::Expr(callee) => {
                if let Expr::Ident(id) = unwrap(callee) {
                    if &*id.sym == "require" {
                        self.report(
                            rule::NO_REQUIRE,
                            n.span,
                            "`require(...)` is not allowed; tools are ES modules".into(),
                        );
                    }
                }
                self.check_callee(callee, n.span);
            }
            Callee::Super(_) => {}
        }
        n.visit_children_with(self);
    }

    fn visit_opt_call(&mut self, n: &OptCall) {
        self.check_callee(&n.callee, n.span);
        n.visit_children_with(self);
    }

    fn visit_new_expr(&mut self, n: &NewExpr) {
        self.check_callee(&n.callee, n.span);
        n.visit_children_with(self);
    }

    fn visit_prop(&mut self, n: &Prop) {
        if let Prop::Shorthand(id) = n {
            self.check_name(&id.sym, id.span);
        }
        n.visit_children_with(self);
    }

    fn visit_export_named_specifier(&mut self, n: &ExportNamedSpecifier) {
        if let ModuleExportName::Ident(id) = &n.orig {
            self.check_name(&id.sym, id.span);
        }
    }

    fn visit_import_decl(&mut self, n: &ImportDecl) {
        // `import "x"` (no specifiers) loads the module for its effects: never type-only.
        let type_only = n.type_only
            || (!n.specifiers.is_empty()
                && n.specifiers
                    .iter()
                    .all(|s| matches!(s, ImportSpecifier::Named(named) if named.is_type_only)));
        self.check_specifier(&n.src, "import", type_only);
    }

    fn visit_named_export(&mut self, n: &NamedExport) {
        match &n.src {
            Some(src) => {
                let type_only = n.type_only
                    || (!n.specifiers.is_empty()
                        && n.specifiers.iter().all(
                            |s| matches!(s, ExportSpecifier::Named(named) if named.is_type_only),
                        ));
                self.check_specifier(src, "re-export", type_only)
            }
            None => n.visit_children_with(self),
        }
    }

    fn visit_export_all(&mut self, n: &ExportAll) {
        self.check_specifier(&n.src, "re-export", n.type_only);
    }

    fn visit_ts_import_equals_decl(&mut self, n: &TsImportEqualsDecl) {
        if let TsModuleRef::TsExternalModuleRef(r) = &n.module_ref {
            self.report(
                rule::NO_REQUIRE,
                n.span,
                format!(
                    "`import … = require(\"{}\")` is not allowed; tools are ES modules",
                    r.expr.value.to_string_lossy()
                ),
            );
        }
    }
}

/// Strips parentheses and type-only wrappers (`as`, `!`, `satisfies`, `<T>x`) and takes the
/// last expression of a sequence, so `(0, x.constructor as any)` is seen as `x.constructor`.
fn unwrap(mut e: &Expr) -> &Expr {
    loop {
        e = match e {
            Expr::Paren(p) => &p.expr,
            Expr::TsAs(x) => &x.expr,
            Expr::TsNonNull(x) => &x.expr,
            Expr::TsSatisfies(x) => &x.expr,
            Expr::TsTypeAssertion(x) => &x.expr,
            Expr::TsConstAssertion(x) => &x.expr,
            Expr::TsInstantiation(x) => &x.expr,
            Expr::Seq(s) => match s.exprs.last() {
                Some(last) => last,
                None => return e,
            },
            _ => return e,
        };
    }
}

/// The static name of a member access: `.name`, `["name"]` or `` [`name`] ``.
fn member_name(prop: &MemberProp) -> Option<String> {
    match prop {
        MemberProp::Ident(id) => Some(id.sym.to_string()),
        MemberProp::Computed(c) => match unwrap(&c.expr) {
            Expr::Lit(deno_ast::swc::ast::Lit::Str(s)) => Some(s.value.to_string_lossy().into()),
            Expr::Tpl(t) if t.exprs.is_empty() && t.quasis.len() == 1 => t.quasis[0]
                .cooked
                .as_ref()
                .map(|c| c.to_string_lossy().into_owned()),
            _ => None,
        },
        MemberProp::PrivateName(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::transpile::parse;

    fn run_with(src: &str, allowed: &[&str]) -> Vec<Finding> {
        let parsed = parse("t.ts", src).expect("parses");
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        check(&parsed, &allowed)
    }

    fn run(src: &str) -> Vec<Finding> {
        run_with(src, DEFAULT_ALLOWED_IMPORTS)
    }

    fn rules(src: &str) -> Vec<String> {
        run(src).into_iter().map(|f| f.rule).collect()
    }

    #[test]
    fn clean_tool_passes() {
        let src = r#"import type { Libos } from "libos";
export const tool = { name: "ok", description: "fine" };
class Box { constructor(public v: number) {} eval() { return this.v; } }
export default async function run(args: { path: string }, libos: Libos): Promise<unknown> {
  const f: Function = () => 1;
  type D = typeof Deno;
  const o = { eval: 1, Function: 2, constructor: 3 };
  const name = new Box(1).constructor.name;
  return { o, name, n: await libos.fs.readText(args.path), ok: [1].map((x) => x + 1) };
}
"#;
        assert_eq!(run(src), vec![]);
    }

    #[test]
    fn dynamic_import() {
        let f = run("export default async () => {\n  const m = await import(\"libos\");\n};");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, "no-dynamic-import");
        assert_eq!((f[0].line, f[0].column), (2, 19));
    }

    #[test]
    fn eval_forms() {
        for src in [
            "eval('1');",
            "globalThis.eval('1');",
            "window.eval('1');",
            "globalThis['eval']('1');",
            "(0, eval)('1');",
            "const e = eval;",
            "const o = { eval };",
            "typeof eval;",
            "self?.eval('1');",
        ] {
            assert_eq!(rules(src), ["no-eval"], "{src}");
        }
    }

    #[test]
    fn eval_located() {
        let f = run("const a = 1;\nconst b = 2;\nconst x = eval(\"a\");\n");
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].line, f[0].column), (3, 11));
        assert_eq!(f[0].to_string(), format!("3:11 no-eval: {}", f[0].message));
    }

    #[test]
    fn function_constructor_forms() {
        for src in [
            "new Function('return 1');",
            "Function('return 1')();",
            "globalThis.Function('x');",
            "const F = Function;",
            "x.constructor('return 1');",
            "(() => {}).constructor('return 1');",
            "(async () => {}).constructor('return 1')();",
            "x['constructor']('a');",
            "x[`constructor`]('a');",
            "(x.constructor as any)('a');",
            "x.constructor?.('a');",
            "new x.constructor('a');",
        ] {
            assert_eq!(rules(src), ["no-function-constructor"], "{src}");
        }
    }

    #[test]
    fn forbidden_imports() {
        for spec in [
            "node:fs",
            "npm:x",
            "npm:lodash",
            "https://x/y.ts",
            "file:///etc/passwd",
            "./local.ts",
            "jsr:@std/fs",
        ] {
            for src in [
                format!("import x from \"{spec}\";"),
                format!("import \"{spec}\";"),
                format!("import type {{ T }} from \"{spec}\";"),
                format!("export {{ x }} from \"{spec}\";"),
                format!("export * from \"{spec}\";"),
            ] {
                let f = run(&src);
                assert_eq!(f.len(), 1, "{src}");
                assert_eq!(f[0].rule, "no-forbidden-import", "{src}");
                assert!(
                    f[0].message.contains(&format!("\"{spec}\"")),
                    "{}",
                    f[0].message
                );
            }
        }
    }

    #[test]
    fn allowed_modules_are_type_only() {
        for ok in [
            "import type { Libos, Tool } from \"libos\";",
            "import { type Libos, type Tool } from \"libos\";",
            "export type { Libos } from \"libos\";",
            "export { type Libos } from \"libos\";",
        ] {
            assert_eq!(rules(ok), Vec::<String>::new(), "{ok}");
        }
        for bad in [
            "import { Libos } from \"libos\";",
            "import { type Libos, fs } from \"libos\";",
            "import libos from \"libos\";",
            "import * as libos from \"libos\";",
            "import \"libos\";",
            "export { fs } from \"libos\";",
            "export * from \"libos\";",
        ] {
            let f = run(bad);
            assert_eq!(f.len(), 1, "{bad}");
            assert_eq!(f[0].rule, "type-only-import", "{bad}");
            assert!(
                f[0].message.contains("must be type-only"),
                "{}",
                f[0].message
            );
        }
    }

    #[test]
    fn allowlist_is_configurable() {
        let src =
            "import type { Libos } from \"libos\";\nimport type { x } from \"jsr:@std/path\";";
        assert_eq!(rules(src), ["no-forbidden-import"]);
        assert_eq!(run_with(src, &["libos", "jsr:@std/path"]), vec![]);
        let f = run_with(src, &[]);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].line, 1);
        assert_eq!(f[1].line, 2);
    }

    #[test]
    fn require_forms() {
        assert_eq!(rules("const fs = require('fs');"), ["no-require"]);
        assert_eq!(rules("import fs = require('fs');"), ["no-require"]);
    }

    #[test]
    fn host_global() {
        assert_eq!(rules("Deno.core.ops.op_x();"), ["no-host-global"]);
        assert_eq!(rules("const d = globalThis.Deno;"), ["no-host-global"]);
        assert_eq!(rules("const { core } = Deno;"), ["no-host-global"]);
        assert_eq!(rules("process.env.X;"), Vec::<String>::new());
    }

    #[test]
    fn reserved_names() {
        assert_eq!(
            rules("const __libos_gate__ = { check() {} };"),
            ["no-reserved-name"]
        );
        assert_eq!(
            rules("function f(__libosX: number) { return __libosX; }").len(),
            2
        );
        assert_eq!(
            rules("const o = { __libos: 1 }; o.__libos;"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn reports_all_findings_in_order() {
        let src = "import fs from \"node:fs\";\n\
                   export default async function run() {\n  \
                     eval(\"1\");\n  \
                     new Function(\"x\");\n  \
                     await import(\"./x.ts\");\n  \
                     Deno.exit(1);\n  \
                     require(\"y\");\n\
                   }\n";
        let f = run(src);
        let got: Vec<(&str, usize)> = f.iter().map(|f| (f.rule.as_str(), f.line)).collect();
        assert_eq!(
            got,
            [
                ("no-forbidden-import", 1),
                ("no-eval", 3),
                ("no-function-constructor", 4),
                ("no-dynamic-import", 5),
                ("no-host-global", 6),
                ("no-require", 7),
            ]
        );
    }
}
