//! Converts a static, JSON-like TypeScript literal expression into a `serde_json::Value`
//! without running any code.
//!
//! Accepted: object literals with identifier or string keys, arrays, strings (including
//! template literals without substitutions), numbers (with an optional unary minus),
//! `true`/`false`/`null`. Type-only wrappers (`as const`, `as T`, `satisfies T`, parentheses)
//! are looked through. Anything else is rejected with the span of the offending node.

use deno_ast::swc::ast::{Expr, Lit, ObjectLit, Prop, PropName, PropOrSpread, UnaryOp};
use deno_ast::swc::common::{Span, Spanned};
use serde_json::{Map, Number, Value};

/// Why a literal was rejected, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct LiteralError {
    /// What is not allowed.
    pub message: String,
    /// The offending node.
    pub span: Span,
}

fn err<T>(span: Span, message: impl Into<String>) -> Result<T, LiteralError> {
    Err(LiteralError {
        message: message.into(),
        span,
    })
}

/// Looks through parentheses and type-only wrappers.
pub fn unwrap_type_wrappers(mut e: &Expr) -> &Expr {
    loop {
        e = match e {
            Expr::Paren(p) => &p.expr,
            Expr::TsAs(x) => &x.expr,
            Expr::TsConstAssertion(x) => &x.expr,
            Expr::TsSatisfies(x) => &x.expr,
            Expr::TsTypeAssertion(x) => &x.expr,
            _ => return e,
        };
    }
}

/// Converts `expr` to JSON, or explains the first non-literal part.
pub fn to_json(expr: &Expr) -> Result<Value, LiteralError> {
    let expr = unwrap_type_wrappers(expr);
    match expr {
        Expr::Object(obj) => object_to_json(obj),
        Expr::Array(arr) => {
            let mut out = Vec::with_capacity(arr.elems.len());
            for elem in &arr.elems {
                match elem {
                    None => return err(arr.span, "array holes are not allowed"),
                    Some(e) if e.spread.is_some() => {
                        return err(e.span(), "spread (`...`) is not allowed")
                    }
                    Some(e) => out.push(to_json(&e.expr)?),
                }
            }
            Ok(Value::Array(out))
        }
        Expr::Lit(Lit::Str(s)) => Ok(Value::String(s.value.to_string_lossy().into_owned())),
        Expr::Lit(Lit::Num(n)) => number(n.value, n.span),
        Expr::Lit(Lit::Bool(b)) => Ok(Value::Bool(b.value)),
        Expr::Lit(Lit::Null(_)) => Ok(Value::Null),
        Expr::Lit(other) => err(
            other.span(),
            "only string, number, boolean and null literals are allowed",
        ),
        Expr::Unary(u) if u.op == UnaryOp::Minus => match unwrap_type_wrappers(&u.arg) {
            Expr::Lit(Lit::Num(n)) => number(-n.value, u.span),
            _ => err(u.span, "unary minus is only allowed on a number literal"),
        },
        Expr::Tpl(t) if t.exprs.is_empty() && t.quasis.len() == 1 => match &t.quasis[0].cooked {
            Some(s) => Ok(Value::String(s.to_string_lossy().into_owned())),
            None => err(t.span, "invalid escape in template literal"),
        },
        Expr::Tpl(t) => err(
            t.span,
            "template literals with `${…}` substitutions are not allowed",
        ),
        Expr::Ident(id) => err(
            id.span,
            format!("identifier `{}` is not allowed; inline the value", id.sym),
        ),
        Expr::Call(c) => err(c.span, "function calls are not allowed"),
        Expr::Fn(_) | Expr::Arrow(_) => err(expr.span(), "functions are not allowed"),
        other => err(other.span(), "only JSON-like literals are allowed here"),
    }
}

fn object_to_json(obj: &ObjectLit) -> Result<Value, LiteralError> {
    let mut map = Map::new();
    for prop in &obj.props {
        let prop = match prop {
            PropOrSpread::Spread(s) => return err(s.dot3_token, "spread (`...`) is not allowed"),
            PropOrSpread::Prop(p) => &**p,
        };
        let kv = match prop {
            Prop::KeyValue(kv) => kv,
            Prop::Shorthand(id) => {
                return err(
                    id.span,
                    format!(
                        "shorthand property `{}` refers to an identifier; write `key: value`",
                        id.sym
                    ),
                )
            }
            Prop::Method(m) => return err(m.key.span(), "methods are not allowed"),
            Prop::Getter(g) => return err(g.span, "getters are not allowed"),
            Prop::Setter(s) => return err(s.span, "setters are not allowed"),
            Prop::Assign(a) => return err(a.span, "assignment properties are not allowed"),
        };
        let key = match &kv.key {
            PropName::Ident(id) => id.sym.to_string(),
            PropName::Str(s) => s.value.to_string_lossy().into_owned(),
            PropName::Computed(c) => return err(c.span, "computed keys are not allowed"),
            other => return err(other.span(), "keys must be identifiers or strings"),
        };
        if map.contains_key(&key) {
            return err(kv.key.span(), format!("duplicate key \"{key}\""));
        }
        map.insert(key, to_json(&kv.value)?);
    }
    Ok(Value::Object(map))
}

fn number(v: f64, span: Span) -> Result<Value, LiteralError> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if v.fract() == 0.0 && v.abs() <= MAX_SAFE {
        return Ok(Value::Number((v as i64).into()));
    }
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| LiteralError {
            message: "number is not finite".into(),
            span,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deno_ast::swc::ast::{Decl, ModuleItem, Stmt};
    use deno_ast::ProgramRef;
    use serde_json::json;

    /// Parses `const x = <src>;` and converts the initializer.
    fn conv(src: &str) -> Result<Value, String> {
        let parsed = crate::jit::transpile::parse("t.ts", &format!("const x = {src};")).unwrap();
        let ProgramRef::Module(m) = parsed.program_ref() else {
            panic!()
        };
        let ModuleItem::Stmt(Stmt::Decl(Decl::Var(v))) = &m.body[0] else {
            panic!()
        };
        to_json(v.decls[0].init.as_ref().unwrap()).map_err(|e| e.message)
    }

    #[test]
    fn accepts_json_like_literals() {
        assert_eq!(
            conv(
                r#"{ a: 1, "b-c": [true, false, null], d: -2.5, e: `tpl`, f: { g: "s" } } as const"#
            )
            .unwrap(),
            json!({"a": 1, "b-c": [true, false, null], "d": -2.5, "e": "tpl", "f": {"g": "s"}})
        );
        assert_eq!(conv("1e3").unwrap(), json!(1000));
        assert_eq!(conv("'a\\nb'").unwrap(), json!("a\nb"));
        assert_eq!(conv("([1] satisfies number[])").unwrap(), json!([1]));
    }

    #[test]
    fn rejects_non_literals() {
        for (src, needle) in [
            ("{ ...o }", "spread"),
            ("[...a]", "spread"),
            ("{ [k]: 1 }", "computed"),
            ("{ m() { return 1 } }", "methods"),
            ("{ get g() { return 1 } }", "getters"),
            ("{ set s(v) {} }", "setters"),
            ("{ a }", "shorthand"),
            ("{ a: b }", "identifier `b`"),
            ("{ a: f() }", "calls"),
            ("{ a: `x${1}` }", "substitutions"),
            ("{ a: 1 + 1 }", "JSON-like"),
            ("{ a: () => 1 }", "functions"),
            ("{ 1: 1 }", "keys must be"),
            ("{ a: 1n }", "literals"),
            ("{ a: /re/ }", "literals"),
            ("[1, , 2]", "holes"),
            ("{ a: 1, a: 2 }", "duplicate"),
            ("{ a: -x }", "unary minus"),
            ("{ a: !0 }", "JSON-like"),
        ] {
            let e = conv(src).unwrap_err();
            assert!(e.contains(needle), "{src}: {e}");
        }
    }
}
