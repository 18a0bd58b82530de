//! Bounds on what the front end is asked to parse, and where it parses.
//!
//! The parser, the rule visitors, the emitter and even dropping a syntax tree recurse once
//! per level of nesting, so a source nested a few thousand levels deep (`[` × 5000 is 5 KB)
//! would overflow the stack — an abort no `catch_unwind` can stop. Two defences:
//!
//! 1. [`check`], before any parse: a size limit and a scan of the token stream (the lexer is
//!    iterative) that refuses brackets nested deeper than [`MAX_NESTING`], and more than
//!    [`MAX_DEPTH_COST`] tokens on one path of unfinished expressions: the tokens since the
//!    last statement break (`;`, `,`, or a line break where a new statement must begin; not
//!    before `else`) at each open bracket level, added up. Every level of a syntax tree costs at least one
//!    token on that path, so chains without brackets (`a=>a=>…`, `!!!…`, `1+1+…`, `a.b.b…`)
//!    are bounded too.
//! 2. [`on_front_end_thread`]: the whole analysis runs on a thread of its own with a
//!    [`FRONT_END_STACK`]-byte stack, sized so that every source [`check`] lets through fits
//!    (`the_largest_accepted_sources_fit_the_front_end_stack` tries the worst shapes). It also
//!    keeps a parse of up to 256 KiB off the async threads. At most [`MAX_FRONT_END_THREADS`]
//!    run at once for async callers; the next waits for one to end.

use deno_ast::swc::lexer::token::{Keyword, Token, Word};
use deno_ast::{MediaType, TokenOrComment};

use super::finding::{rule, Finding};

/// Largest tool source the front end reads.
pub const MAX_SOURCE_BYTES: usize = 256 << 10;

/// Deepest bracket nesting accepted: `(`, `[`, `{` and `${` count one level each.
pub const MAX_NESTING: usize = 128;

/// Most tokens on one path of unfinished expressions (see the module doc).
pub const MAX_DEPTH_COST: usize = 1024;

/// Stack of the front end's thread.
pub const FRONT_END_STACK: usize = 256 << 20;

/// Most front-end threads [`on_front_end_thread_async`] runs at once: a flood of proposals
/// waits for room instead of starting a thread (and reserving its stack) each.
pub const MAX_FRONT_END_THREADS: usize = 4;

static FRONT_END_ROOM: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_FRONT_END_THREADS);

/// Front-end threads of async callers running now.
pub fn front_end_threads() -> usize {
    MAX_FRONT_END_THREADS - FRONT_END_ROOM.available_permits()
}

/// Refuses a source too large or too deeply nested to analyze safely. Never parses.
pub fn check(source: &str) -> Result<(), Finding> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Finding::new(
            rule::LIMITS,
            format!(
                "the source is {} bytes; the limit is {MAX_SOURCE_BYTES}: split the tool",
                source.len()
            ),
            1,
            1,
        ));
    }
    // Tokens since the last statement break, per open bracket level (the outermost first).
    let mut runs: Vec<usize> = vec![0];
    let mut cost = 0usize;
    let mut previous: Option<(Token, usize)> = None;
    for item in deno_ast::lex(source, MediaType::TypeScript) {
        let TokenOrComment::Token(token) = item.inner else {
            continue;
        };
        let start = item.range.start;
        let text = &source[item.range.clone()];
        let after_break = match &previous {
            Some((Token::Semi | Token::Comma, _)) => true,
            Some((before, end)) => {
                source[*end..start].contains('\n')
                    && ends_expression(before)
                    && begins_statement(&token, text)
            }
            None => false,
        };
        // `else` continues the statement before it: `if(a)1;else if(a)1;else …` nests.
        let continues = matches!(token, Token::Word(Word::Keyword(Keyword::Else)));
        if let Some(top) = runs.last_mut() {
            if after_break && !continues {
                cost -= *top;
                *top = 0;
            }
            if !matches!(token, Token::Semi | Token::Comma) {
                *top += 1;
                cost += 1;
            }
        }
        match token {
            Token::LParen | Token::LBracket | Token::LBrace | Token::DollarLBrace => {
                runs.push(0);
                if runs.len() - 1 > MAX_NESTING {
                    return Err(at(
                        source,
                        start,
                        format!(
                            "brackets are nested more than {MAX_NESTING} levels deep; flatten \
                             the code or the literal"
                        ),
                    ));
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace if runs.len() > 1 => {
                cost -= runs.pop().unwrap_or(0);
            }
            _ => {}
        }
        if cost > MAX_DEPTH_COST {
            return Err(at(
                source,
                start,
                format!(
                    "an expression is nested more than {MAX_DEPTH_COST} tokens deep; break it \
                     into statements"
                ),
            ));
        }
        previous = Some((token, item.range.end));
    }
    Ok(())
}

/// Whether `token` can end an expression (so a line break after it may end the statement).
fn ends_expression(token: &Token) -> bool {
    matches!(
        token,
        Token::Word(_)
            | Token::Str { .. }
            | Token::Num { .. }
            | Token::BigInt { .. }
            | Token::Regex(..)
            | Token::BackQuote
            | Token::RParen
            | Token::RBracket
            | Token::RBrace
    )
}

/// Whether `token` (spelled `text`) after a line break must begin a new statement: a name
/// or a statement keyword, never an operator or a word that continues an expression.
fn begins_statement(token: &Token, text: &str) -> bool {
    match token {
        Token::Word(Word::Keyword(k)) => matches!(
            k,
            Keyword::Const
                | Keyword::Var
                | Keyword::Return
                | Keyword::If
                | Keyword::For
                | Keyword::While
                | Keyword::Do
                | Keyword::Function
                | Keyword::Class
                | Keyword::Throw
                | Keyword::Try
                | Keyword::Switch
                | Keyword::Break
                | Keyword::Continue
                | Keyword::Export
                | Keyword::Import
        ),
        Token::Word(Word::Ident(_)) => {
            !matches!(text, "as" | "satisfies" | "of" | "is" | "keyof" | "in")
        }
        _ => false,
    }
}

/// A finding at byte offset `offset` of `source`.
fn at(source: &str, offset: usize, message: String) -> Finding {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Finding::new(rule::LIMITS, message, line, column)
}

/// Runs `work` on a fresh thread with a [`FRONT_END_STACK`]-byte stack and waits for it.
/// A panic inside is returned as `Err` with its message.
pub fn on_front_end_thread<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("jit-front-end".into())
            .stack_size(FRONT_END_STACK)
            .spawn_scoped(scope, work)
            .map_err(|e| format!("cannot start the front end's thread: {e}"))?;
        handle
            .join()
            .map_err(|payload| panic_text(payload.as_ref()))
    })
}

/// Like [`on_front_end_thread`], without blocking the caller's (async) thread.
pub async fn on_front_end_thread_async<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let room = FRONT_END_ROOM
        .acquire()
        .await
        .map_err(|_| "the front end is closed".to_string())?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("jit-front-end".into())
        .stack_size(FRONT_END_STACK)
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .map_err(|payload| panic_text(payload.as_ref()));
            // The thread's place is given back when it ends, even if its caller gave up.
            drop(room);
            let _ = reply.send(outcome);
        })
        .map_err(|e| format!("cannot start the front end's thread: {e}"))?;
    answer
        .await
        .map_err(|_| "the front end's thread stopped".to_string())?
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    format!(
        "the front end failed: {}",
        crate::util::panic_message(payload)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::{analyze, AnalyzeOptions};

    fn analyze_source(source: &str) -> Result<(), Vec<Finding>> {
        analyze("t.ts", source, &AnalyzeOptions::default()).map(|_| ())
    }

    fn limits_finding(source: &str) -> Finding {
        let findings = analyze_source(source).expect_err("refused");
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].rule, rule::LIMITS, "{findings:?}");
        findings[0].clone()
    }

    #[test]
    fn deeply_nested_source_is_rejected_not_fatal() {
        let deep = format!("const x = {}1{};", "[".repeat(5000), "]".repeat(5000));
        let finding = limits_finding(&deep);
        assert!(
            finding.message.contains("nested more than 128"),
            "{finding}"
        );
        assert_eq!(
            (finding.line, finding.column),
            (1, 11 + MAX_NESTING),
            "{finding}"
        );
        for deep in [
            format!("let f = {}0{};", "(".repeat(5000), ")".repeat(5000)),
            format!("let o = {}{};", "{a:".repeat(5000), "}".repeat(5000)),
            format!("let t = `{}`;", "${`".repeat(3000)),
            format!("let n = {}1;", "!".repeat(100_000)),
            format!("let n = {}1;", "- ".repeat(50_000)),
            format!("let n = {}x;", "typeof ".repeat(20_000)),
            format!("let n = {}1;", "a=>".repeat(50_000)),
            format!("let n = 1{};", "+1".repeat(100_000)),
            format!("let n = a{};", "\n.b".repeat(50_000)),
        ] {
            let finding = limits_finding(&deep);
            assert!(finding.message.contains("nested more than"), "{finding}");
        }
        let big = format!("// {}\n", "x".repeat(MAX_SOURCE_BYTES));
        assert!(limits_finding(&big).message.contains("limit is"));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let text = "[".repeat(1000);
        let source = format!(
            "const a = \"{text}\"; const b = '{text}'; // {text}\n/* {text} */ const c = `{text}`;"
        );
        check(&source).unwrap();
        // Closers hidden in strings do not hide real openers either.
        let sneaky = format!("const x = {}1;", "[\"]\", ".repeat(200));
        assert!(check(&sneaky).is_err());
    }

    #[test]
    fn long_programs_of_short_statements_are_accepted() {
        let with_semicolons = "const a = b.c(d) + e;\n".repeat(5000);
        check(&with_semicolons).unwrap();
        let without = "const a = b.c(d) + e\nfoo(a)\nreturn a\n".repeat(3000);
        check(&without).unwrap();
        let object = format!("const o = {{{}}};", "k: [1, 2, 3], ".repeat(5000));
        check(&object).unwrap();
    }

    /// The largest `n` for which `make(n)` passes [`check`] (it must fail for some `n`).
    fn at_the_bound(make: &dyn Fn(usize) -> String) -> String {
        let (mut ok, mut refused) = (0, 1usize);
        while check(&make(refused)).is_ok() {
            ok = refused;
            refused *= 2;
            assert!(refused < 1 << 20, "{} is never refused", make(1));
        }
        while refused - ok > 1 {
            let mid = (ok + refused) / 2;
            if check(&make(mid)).is_ok() {
                ok = mid;
            } else {
                refused = mid;
            }
        }
        make(ok)
    }

    /// The front end runs on a thread of its own: on a single-threaded runtime, other tasks
    /// go on while the largest accepted source is analyzed.
    #[tokio::test(flavor = "current_thread")]
    async fn analysis_does_not_block_the_async_thread() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let mut source = String::from(
            "export const tool = { name: \"t\", description: \"d\", input: { type: \"object\" }, output: {} };\n\
             export default async function run() { return 1; }\n",
        );
        let mut i = 0;
        while source.len() < MAX_SOURCE_BYTES - 256 {
            source.push_str(&format!(
                "export const c{i} = [{i}, \"{i}\", {{ k: {i} }}];\n"
            ));
            i += 1;
        }
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let analyzed =
            crate::jit::analyze_async("t.ts".into(), source.into(), AnalyzeOptions::default())
                .await;
        ticker.abort();
        assert!(analyzed.is_ok(), "{:?}", analyzed.err());
        assert!(
            ticks.load(Ordering::SeqCst) > 0,
            "the runtime's only thread was blocked while the source was analyzed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_analyses_runs_a_bounded_number_of_threads() {
        let tool = |i: usize| {
            let mut source = format!(
                "export const tool = {{ name: \"t{i}\", description: \"d\", input: {{ type: \"object\" }}, output: {{}} }};\n\
                 export default async function run() {{ return {i}; }}\n"
            );
            for j in 0..500 {
                source.push_str(&format!("export const c{j} = [{j}, {{ k: {j} }}];\n"));
            }
            source
        };
        let analyses: Vec<_> = (0..8)
            .map(|i| {
                let source = tool(i);
                tokio::spawn(async move {
                    crate::jit::analyze_async(
                        "t.ts".into(),
                        source.into(),
                        AnalyzeOptions::default(),
                    )
                    .await
                })
            })
            .collect();
        let mut most = 0;
        while analyses.iter().any(|a| !a.is_finished()) {
            most = most.max(front_end_threads());
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(
            most <= MAX_FRONT_END_THREADS,
            "{most} front-end threads at once"
        );
        assert!(most >= 2, "the flood never ran concurrently: {most}");
        for analysis in analyses {
            assert!(analysis.await.unwrap().is_ok());
        }
    }

    /// Every shape of recursion, at the largest size [`check`] accepts, inside a valid tool
    /// (so the rules, the literal extraction, the emitter and the drop all run), analyzes
    /// without overflowing the front end's stack. A failure here aborts the test binary:
    /// that is the bug this guards against.
    #[test]
    fn the_largest_accepted_sources_fit_the_front_end_stack() {
        let tool = |expr: String| {
            format!(
                "export const tool = {{ name: \"t\", description: \"d\", input: {{ type: \"object\" }}, output: {{}} }};\n\
                 export default async function run(a: any, b: any, f: any) {{ return {expr}; }}\n"
            )
        };
        let chain = |head: &'static str, unit: &'static str, tail: &'static str| {
            move |n: usize| tool(format!("{head}{}{tail}", unit.repeat(n)))
        };
        let nested = |open: &'static str, unit: &'static str, close: &'static str| {
            move |n: usize| {
                let level = format!("{}{open}", unit.repeat(n));
                tool(format!(
                    "{}1{}",
                    level.repeat(MAX_NESTING - 2),
                    close.repeat(MAX_NESTING - 2)
                ))
            }
        };
        let shapes: Vec<Box<dyn Fn(usize) -> String>> = vec![
            Box::new(chain("1", "+1", "")),
            Box::new(chain("a", ".b", "")),
            Box::new(chain("f", "()", "")),
            Box::new(chain("a", "[0]", "")),
            Box::new(chain("a", " as any", "")),
            Box::new(chain("a", "!", "")),
            Box::new(chain("1", "**1", "")),
            Box::new(chain("a", "=a", "")),
            Box::new(chain("a", "?a:a", "")),
            Box::new(chain("", "a=>", "1")),
            Box::new(chain("", "async a=>", "1")),
            Box::new(chain("", "!", "1")),
            Box::new(chain("", "-", "1")),
            Box::new(chain("", "typeof ", "a")),
            Box::new(chain("", "new ", "f")),
            Box::new(chain("", "await ", "1")),
            Box::new(chain("", "void ", "1")),
            Box::new(chain("a", "??a", "")),
            Box::new(chain("a", "&&a", "")),
            Box::new(chain("`", "${1}", "`")),
            Box::new(chain("a", "`x`", "")),
            Box::new(nested("[", "a=>", "]")),
            Box::new(nested("(", "!", ")")),
            Box::new(nested("{a:", "1+", "}")),
            Box::new(nested("(b)=>{return ", "a=>", "}")),
            Box::new(nested("`${", "!", "}`")),
            Box::new(move |n: usize| tool(format!("(() => {{ {}1; }})()", "if(a)".repeat(n)))),
            Box::new(move |n: usize| tool(format!("(() => {{ {}1; }})()", "l:".repeat(n)))),
            Box::new(move |n: usize| {
                tool(format!(
                    "(() => {{ if(a)1;{} }})()",
                    "else if(a)1;".repeat(n)
                ))
            }),
            Box::new(move |n: usize| {
                format!("type T = {}B;\n{}", "A|".repeat(n), tool("1".into()))
            }),
            Box::new(move |n: usize| {
                format!("type T = A{};\n{}", "[]".repeat(n), tool("1".into()))
            }),
        ];
        for make in &shapes {
            let source = at_the_bound(make.as_ref());
            assert!(source.len() <= MAX_SOURCE_BYTES);
            let _ = analyze_source(&source);
        }
    }
}
