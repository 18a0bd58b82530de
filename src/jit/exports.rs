//! Locates a tool module's two required exports on the AST: `export const tool = {…}` and a
//! default export that is a function.
//!
//! Both `export const tool = …` / `export default function …` and the indirect forms
//! `const tool = …; export { tool }` / `export { run as default }` are understood.

use deno_ast::swc::ast::{
    Decl, DefaultDecl, ExportSpecifier, Expr, Module, ModuleDecl, ModuleExportName, ModuleItem,
    Pat, Stmt, VarDecl, VarDeclKind,
};
use deno_ast::swc::common::{Span, Spanned, DUMMY_SP};

use super::literal::unwrap_type_wrappers;

/// Where `tool` was found, or why it is unusable.
pub enum ToolExport<'a> {
    /// The initializer of a top-level `const tool`.
    Found(&'a Expr),
    /// No usable `tool` export; message and location.
    Problem(String, Span),
}

/// Finds the initializer of the exported `tool` constant.
pub fn find_tool(module: &Module) -> ToolExport<'_> {
    for item in &module.body {
        match item {
            ModuleItem::ModuleDecl(ModuleDecl::ExportDecl(e)) => {
                if let Decl::Var(var) = &e.decl {
                    if let Some(found) = tool_in_var(var) {
                        return found;
                    }
                }
            }
            ModuleItem::ModuleDecl(ModuleDecl::ExportNamed(n)) if n.src.is_none() => {
                for s in &n.specifiers {
                    let ExportSpecifier::Named(s) = s else {
                        continue;
                    };
                    let exported = s.exported.as_ref().unwrap_or(&s.orig);
                    if export_name(exported) != "tool" {
                        continue;
                    }
                    let local = export_name(&s.orig);
                    return match find_local_var(module, &local) {
                        Some(var) => tool_in_named_var(var, &local)
                            .unwrap_or(ToolExport::Problem(missing_tool(), s.span)),
                        None => ToolExport::Problem(
                            format!("`tool` must be a top-level `const` declared in this module (found export of `{local}`)"),
                            s.span,
                        ),
                    };
                }
            }
            _ => {}
        }
    }
    ToolExport::Problem(missing_tool(), DUMMY_SP)
}

fn missing_tool() -> String {
    "missing `export const tool = { name, description, input, output }`".into()
}

fn tool_in_var(var: &VarDecl) -> Option<ToolExport<'_>> {
    tool_in_named_var(var, "tool")
}

fn tool_in_named_var<'a>(var: &'a VarDecl, name: &str) -> Option<ToolExport<'a>> {
    let decl = var
        .decls
        .iter()
        .find(|d| matches!(&d.name, Pat::Ident(b) if &*b.id.sym == name))?;
    if var.kind != VarDeclKind::Const {
        return Some(ToolExport::Problem(
            "`tool` must be declared with `const`".into(),
            var.span,
        ));
    }
    Some(match &decl.init {
        Some(init) => ToolExport::Found(init),
        None => ToolExport::Problem("`tool` has no initializer".into(), decl.span),
    })
}

fn find_local_var<'a>(module: &'a Module, name: &str) -> Option<&'a VarDecl> {
    module.body.iter().find_map(|item| {
        let var = match item {
            ModuleItem::Stmt(Stmt::Decl(Decl::Var(v))) => v,
            ModuleItem::ModuleDecl(ModuleDecl::ExportDecl(e)) => match &e.decl {
                Decl::Var(v) => v,
                _ => return None,
            },
            _ => return None,
        };
        var.decls
            .iter()
            .any(|d| matches!(&d.name, Pat::Ident(b) if &*b.id.sym == name))
            .then_some(&**var)
    })
}

fn export_name(n: &ModuleExportName) -> String {
    match n {
        ModuleExportName::Ident(id) => id.sym.to_string(),
        ModuleExportName::Str(s) => s.value.to_string_lossy().into_owned(),
    }
}

/// Checks that the module has a default export and that it is a function.
pub fn check_default_export(module: &Module) -> Result<(), (String, Span)> {
    for item in &module.body {
        let ModuleItem::ModuleDecl(decl) = item else {
            continue;
        };
        match decl {
            ModuleDecl::ExportDefaultDecl(d) => {
                return match &d.decl {
                    DefaultDecl::Fn(_) => Ok(()),
                    DefaultDecl::Class(_) => Err((
                        "the default export must be a function, not a class".into(),
                        d.span,
                    )),
                    DefaultDecl::TsInterfaceDecl(_) => Err((
                        "the default export must be a function, not an interface".into(),
                        d.span,
                    )),
                };
            }
            ModuleDecl::ExportDefaultExpr(e) => {
                return match unwrap_type_wrappers(&e.expr) {
                    Expr::Fn(_) | Expr::Arrow(_) => Ok(()),
                    Expr::Ident(id) if local_is_function(module, &id.sym) => Ok(()),
                    other => Err((not_a_function(), other.span())),
                };
            }
            ModuleDecl::ExportNamed(n) if n.src.is_none() => {
                for s in &n.specifiers {
                    let ExportSpecifier::Named(s) = s else {
                        continue;
                    };
                    if s.exported.as_ref().map(export_name).as_deref() != Some("default") {
                        continue;
                    }
                    return if local_is_function(module, &export_name(&s.orig)) {
                        Ok(())
                    } else {
                        Err((not_a_function(), s.span))
                    };
                }
            }
            _ => {}
        }
    }
    Err((
        "missing default export: `export default async function run(args, libos) { … }`".into(),
        DUMMY_SP,
    ))
}

fn not_a_function() -> String {
    "the default export must be a function (`async function`, function expression or arrow)".into()
}

/// Whether `name` is a top-level function declaration or a `const` bound to a function.
fn local_is_function(module: &Module, name: &str) -> bool {
    let is_fn_decl = module.body.iter().any(|item| {
        let decl = match item {
            ModuleItem::Stmt(Stmt::Decl(d)) => d,
            ModuleItem::ModuleDecl(ModuleDecl::ExportDecl(e)) => &e.decl,
            _ => return false,
        };
        matches!(decl, Decl::Fn(f) if &*f.ident.sym == name && f.function.body.is_some())
    });
    is_fn_decl
        || find_local_var(module, name).is_some_and(|var| {
            var.kind == VarDeclKind::Const
                && var.decls.iter().any(|d| {
                    matches!(&d.name, Pat::Ident(b) if &*b.id.sym == name)
                        && d.init.as_deref().is_some_and(|init| {
                            matches!(unwrap_type_wrappers(init), Expr::Fn(_) | Expr::Arrow(_))
                        })
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deno_ast::ProgramRef;

    fn with_module<T>(src: &str, f: impl FnOnce(&Module) -> T) -> T {
        let parsed = crate::jit::transpile::parse("t.ts", src).unwrap();
        let ProgramRef::Module(m) = parsed.program_ref() else {
            panic!("module")
        };
        f(m)
    }

    fn default_ok(src: &str) -> bool {
        with_module(src, |m| check_default_export(m).is_ok())
    }

    fn tool_found(src: &str) -> Result<(), String> {
        with_module(src, |m| match find_tool(m) {
            ToolExport::Found(_) => Ok(()),
            ToolExport::Problem(msg, _) => Err(msg),
        })
    }

    #[test]
    fn default_export_forms() {
        assert!(default_ok("export default async function run() {}"));
        assert!(default_ok("export default function () {}"));
        assert!(default_ok("export default async () => 1;"));
        assert!(default_ok("export default (async function () {});"));
        assert!(default_ok("async function run() {}\nexport default run;"));
        assert!(default_ok(
            "const run = async () => 1;\nexport { run as default };"
        ));
        assert!(!default_ok("export default class A {}"));
        assert!(!default_ok("export default 42;"));
        assert!(!default_ok("let run = () => 1;\nexport default run;"));
        assert!(!default_ok("export const run = () => 1;"));
    }

    #[test]
    fn tool_export_forms() {
        assert!(tool_found("export const tool = {};").is_ok());
        assert!(tool_found("export const tool: T = {} as const;").is_ok());
        assert!(tool_found("const tool = {};\nexport { tool };").is_ok());
        assert!(tool_found("const spec = {};\nexport { spec as tool };").is_ok());
        assert!(tool_found("export let tool = {};")
            .unwrap_err()
            .contains("const"));
        assert!(tool_found("const tool = {};")
            .unwrap_err()
            .contains("missing"));
        assert!(tool_found("export const other = {};").is_err());
    }
}
