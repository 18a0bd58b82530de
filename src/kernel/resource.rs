//! Resource names and the patterns capabilities name them with: the grammar, escaping,
//! matching, containment and overlap. Pure: no I/O.
//!
//! A resource is `kind:name`. A capability's name is a pattern of exactly one of five forms:
//!
//! | form        | matches                                         |
//! |-------------|-------------------------------------------------|
//! | `a/b`       | exactly `a/b`                                   |
//! | `dir/*`     | the direct children of `dir` (`dir/x`)          |
//! | `dir/**`    | every descendant of `dir` (`dir/x`, `dir/x/y`)  |
//! | `*`         | every name without a `/`                        |
//! | `**`        | every name                                      |
//!
//! Nothing else is a wildcard, and nothing that looks like one is accepted silently: `*.env`,
//! `a*b`, `?`, `[…]`, `{a,b}` and `**` in the middle are refused where a capability is
//! created. A concrete name that contains one of the special characters `* ? [ ] { } \` is
//! written with a backslash before each ([`exact`]), so a file literally named `**` is the
//! resource `fs:\*\*` — an exact name, never a pattern. `net:` names are hosts (see
//! [`super::netid`]); they never contain special characters.

use std::borrow::Cow;

/// Characters that a concrete name escapes with a backslash.
const SPECIAL: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

/// The resource for a concrete `name` of `kind`: special characters escaped, so the result
/// matches only that name.
pub fn exact(kind: &str, name: &str) -> String {
    format!("{kind}:{}", escape_name(name))
}

/// `name` with a backslash before every special character.
pub fn escape_name(name: &str) -> Cow<'_, str> {
    if !name.contains(SPECIAL) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// A pattern's name, parsed into its form. Prefixes and exact names stay escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern<'a> {
    Exact(&'a str),
    /// `prefix/*`
    Children(&'a str),
    /// `prefix/**`
    Descendants(&'a str),
    /// `*`
    TopLevel,
    /// `**`
    All,
}

impl<'a> Pattern<'a> {
    /// The form of a (validated or concrete) name. A name ending in `\*` is exact.
    pub fn parse(name: &'a str) -> Pattern<'a> {
        match name {
            "**" => Pattern::All,
            "*" => Pattern::TopLevel,
            _ => {
                if let Some(prefix) = name.strip_suffix("/**") {
                    if !ends_with_escape(prefix) {
                        return Pattern::Descendants(prefix);
                    }
                }
                if let Some(prefix) = name.strip_suffix("/*") {
                    if !ends_with_escape(prefix) {
                        return Pattern::Children(prefix);
                    }
                }
                Pattern::Exact(name)
            }
        }
    }

    /// Whether this pattern matches the concrete (escaped) `name`.
    fn matches(self, name: &str) -> bool {
        match self {
            Pattern::Exact(n) => n == name,
            Pattern::All => true,
            Pattern::TopLevel => !name.contains('/'),
            Pattern::Children(p) => child_of(p, name).is_some_and(|rest| !rest.contains('/')),
            Pattern::Descendants(p) => child_of(p, name).is_some(),
        }
    }

    fn specificity(self) -> Specificity {
        match self {
            Pattern::Exact(n) => Specificity(3, n.len()),
            Pattern::Children(p) => Specificity(2, p.len() + 1),
            Pattern::TopLevel => Specificity(2, 0),
            Pattern::Descendants(p) => Specificity(1, p.len() + 1),
            Pattern::All => Specificity(1, 0),
        }
    }

    /// Whether every name this pattern matches is also matched by `outer`.
    fn within(self, outer: Pattern<'_>) -> bool {
        use Pattern::*;
        match (outer, self) {
            (All, _) => true,
            (_, Exact(n)) => outer.matches(n),
            (TopLevel, TopLevel) => true,
            (Children(o), Children(i)) => o == i,
            (Descendants(o), Children(i) | Descendants(i)) => o == i || child_of(o, i).is_some(),
            _ => false,
        }
    }

    /// Whether some name is matched by both patterns. The five forms are nested or
    /// disjoint, so two patterns overlap exactly when one lies within the other.
    fn overlaps(self, other: Pattern<'_>) -> bool {
        self.within(other) || other.within(self)
    }
}

/// The non-empty rest of `name` below `prefix/`, if `name` lies below it.
fn child_of<'n>(prefix: &str, name: &'n str) -> Option<&'n str> {
    name.strip_prefix(prefix)?
        .strip_prefix('/')
        .filter(|rest| !rest.is_empty())
}

/// Whether `text` ends in an unpaired backslash (so the next character is escaped).
fn ends_with_escape(text: &str) -> bool {
    text.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// How specifically a pattern matches; larger is more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity(u8, usize);

/// A resource split into its kind and its name, with `net:` names in canonical form.
fn split(resource: &str) -> Option<(&str, Cow<'_, str>)> {
    let (kind, name) = resource.split_once(':')?;
    let name = if kind == "net" {
        super::netid::canonical_name(name)
    } else {
        Cow::Borrowed(name)
    };
    Some((kind, name))
}

/// Whether `pattern` (a capability's resource) covers the concrete `resource`, and how
/// specifically. Kinds must be equal.
pub fn match_resource(pattern: &str, resource: &str) -> Option<Specificity> {
    let (pkind, pname) = split(pattern)?;
    let (rkind, rname) = split(resource)?;
    if pkind != rkind {
        return None;
    }
    let pattern = Pattern::parse(&pname);
    pattern.matches(&rname).then(|| pattern.specificity())
}

/// Whether every resource matched by `inner` is also matched by `outer` (used to attenuate).
pub fn pattern_within(outer: &str, inner: &str) -> bool {
    let (Some((okind, oname)), Some((ikind, iname))) = (split(outer), split(inner)) else {
        return false;
    };
    okind == ikind && Pattern::parse(&iname).within(Pattern::parse(&oname))
}

/// Whether some resource is matched by both patterns.
pub fn patterns_overlap(a: &str, b: &str) -> bool {
    let (Some((akind, aname)), Some((bkind, bname))) = (split(a), split(b)) else {
        return false;
    };
    akind == bkind && Pattern::parse(&aname).overlaps(Pattern::parse(&bname))
}

/// How specific a pattern is (see [`match_resource`]).
pub fn specificity(pattern: &str) -> Specificity {
    match split(pattern) {
        Some((_, name)) => Pattern::parse(&name).specificity(),
        None => Specificity(0, 0),
    }
}

/// Checks a capability's resource: `kind:name`, the name one of the five pattern forms, with
/// special characters escaped, and for `fs:` a normalized workspace path.
pub fn validate_resource(resource: &str) -> Result<(), String> {
    let shape = || {
        format!(
            "resource '{resource}' must look like kind:name (e.g. fs:src/**, shell:git, net:example.org)"
        )
    };
    let (kind, name) = resource.split_once(':').ok_or_else(shape)?;
    if kind.is_empty()
        || name.is_empty()
        || !kind.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    {
        return Err(shape());
    }
    if kind == "net" {
        return super::netid::validate_name(name)
            .map_err(|why| format!("resource '{resource}': {why}"));
    }
    validate_name(kind, name).map_err(|why| format!("resource '{resource}': {why}"))
}

/// The name rules of every kind but `net:`.
fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let literal = match Pattern::parse(name) {
        Pattern::All | Pattern::TopLevel => return Ok(()),
        Pattern::Exact(n) => n,
        Pattern::Children(p) | Pattern::Descendants(p) => p,
    };
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) if SPECIAL.contains(&next) => {}
                _ => return Err(
                    "a backslash escapes only one of * ? [ ] { } \\ (write \\* for a literal *)"
                        .into(),
                ),
            },
            '*' => {
                return Err(
                    "'*' is a wildcard only as a whole last segment (dir/*, dir/**, *, **); \
                     patterns like *.env or a*b are not supported — name the files, or escape a \
                     literal * as \\*"
                        .into(),
                )
            }
            '?' | '[' | ']' | '{' | '}' => {
                return Err(format!(
                    "'{c}' is not pattern syntax here (only dir/*, dir/**, * and ** are); \
                     escape a literal {c} as \\{c}"
                ))
            }
            _ => {}
        }
    }
    if kind == "fs" {
        validate_fs_path(literal)?;
    }
    Ok(())
}

/// An `fs:` name must be a normalized workspace path, or it would never match a request.
fn validate_fs_path(path: &str) -> Result<(), String> {
    if path == "." {
        return Ok(());
    }
    let normalized = !path.starts_with('/')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if normalized {
        Ok(())
    } else {
        Err("an fs path is relative to the workspace and normalized (no leading /, no empty, '.' or '..' segments)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn patterns_match_segments() {
        assert!(match_resource("fs:src/*", "fs:src/a.rs").is_some());
        assert!(match_resource("fs:src/*", "fs:src/a/b.rs").is_none());
        assert!(match_resource("fs:src/**", "fs:src/a/b.rs").is_some());
        assert!(match_resource("fs:src/**", "fs:src").is_none());
        assert!(match_resource("fs:src/**", "fs:srcx/a").is_none());
        assert!(match_resource("fs:**", "shell:git").is_none());
        assert!(match_resource("shell:curl", "shell:/usr/bin/curl").is_none());
        assert!(match_resource("fs:*", "fs:a").is_some());
        assert!(match_resource("fs:*", "fs:a/b").is_none());
    }

    #[test]
    fn escaped_names_are_exact() {
        assert_eq!(exact("fs", "**"), r"fs:\*\*");
        assert_eq!(exact("fs", "a/*"), r"fs:a/\*");
        assert_eq!(exact("shell", r"a\b"), r"shell:a\\b");
        assert_eq!(exact("fs", "plain.txt"), "fs:plain.txt");
        // The literal file `**` is not a pattern: it matches itself and nothing else.
        let literal = exact("fs", "**");
        assert!(match_resource(&literal, &literal).is_some());
        assert!(match_resource(&literal, "fs:secret.txt").is_none());
        assert_eq!(Pattern::parse(r"a/\*"), Pattern::Exact(r"a/\*"));
        assert_eq!(Pattern::parse(r"a\\/*"), Pattern::Children(r"a\\"));
        // A wildcard still covers a literal star name.
        assert!(match_resource("fs:**", &literal).is_some());
        assert!(match_resource("fs:a/*", &exact("fs", "a/*")).is_some());
    }

    #[test]
    fn unsupported_patterns_are_refused() {
        for bad in [
            "fs:*.env",
            "fs:a*b",
            "fs:src/*.rs",
            "fs:**/x",
            "fs:a/**/b",
            "fs:***",
            "fs:a?",
            "fs:[ab]",
            "fs:{a,b}",
            "fs:a\\x",
            "fs:a\\",
            "fs:/etc/passwd",
            "fs:./a",
            "fs:a/../b",
            "fs:a//b",
            "fs:a/",
            "shell:g*t",
            "object:obj_*",
            "namespace:proc/*/x",
            "net:*.example.org",
            "net:example.org:*",
            "net:exa mple.org",
            "net:example.org:99999",
            "nokind",
            ":x",
            "fs:",
        ] {
            assert!(validate_resource(bad).is_err(), "{bad} was accepted");
        }
        for good in [
            "fs:**",
            "fs:*",
            "fs:.",
            "fs:src",
            "fs:src/*",
            "fs:src/**",
            r"fs:\*\*",
            r"fs:notes/\[draft\].md",
            "shell:git",
            "shell:/usr/bin/git",
            "shell:python3 -c",
            "namespace:proc/7/**",
            "net:example.org",
            "net:example.org:443",
            "net:127.0.0.1:8080",
            "net:[::1]:8080",
            "net:loopback",
            "net:*",
            "object:obj_01",
        ] {
            assert!(validate_resource(good).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn containment_is_exact() {
        assert!(pattern_within("fs:**", "fs:src/**"));
        assert!(pattern_within("fs:src/**", "fs:src/a/**"));
        assert!(pattern_within("fs:src/**", "fs:src/a.rs"));
        assert!(pattern_within("fs:src/**", "fs:src/*"));
        assert!(!pattern_within("fs:src/*", "fs:src/**"));
        assert!(!pattern_within("fs:src/a.rs", "fs:src/**"));
        assert!(!pattern_within("fs:src/**", "net:src/a"));
        assert!(!pattern_within("fs:*", "fs:**"));
        assert!(!pattern_within("fs:*", "fs:src/*"));
        assert!(pattern_within("fs:*", "fs:a"));
        assert!(!pattern_within("fs:src/**", "fs:src"));
        assert!(!pattern_within("fs:**", r"shell:\*\*"));
        assert!(!pattern_within(&exact("fs", "**"), "fs:**"));
    }

    /// Segments from which generated patterns and names are built. `z` appears only in
    /// names, so every pattern form has a witness name its literal parts never mention.
    const SEGMENTS: [&str; 3] = ["a", "b", r"\*"];

    fn names() -> Vec<String> {
        let mut names = vec![".".to_string()];
        let mut level: Vec<String> = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &level {
                for seg in SEGMENTS.iter().chain(["z"].iter()) {
                    let name = if prefix.is_empty() {
                        seg.to_string()
                    } else {
                        format!("{prefix}/{seg}")
                    };
                    names.push(name.clone());
                    next.push(name);
                }
            }
            level = next;
        }
        names
    }

    fn pattern_strategy() -> impl Strategy<Value = String> {
        let prefix = proptest::collection::vec(proptest::sample::select(&SEGMENTS[..]), 1..3)
            .prop_map(|segs| segs.join("/"));
        prop_oneof![
            prefix.clone().prop_map(|p| format!("fs:{p}")),
            prefix.clone().prop_map(|p| format!("fs:{p}/*")),
            prefix.prop_map(|p| format!("fs:{p}/**")),
            Just("fs:*".to_string()),
            Just("fs:**".to_string()),
        ]
    }

    fn covered_by(pattern: &str, names: &[String]) -> Vec<bool> {
        names
            .iter()
            .map(|n| match_resource(pattern, &format!("fs:{n}")).is_some())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// `pattern_within` agrees with `match_resource` on every generated name: containment
        /// holds exactly when no name is matched by the inner pattern and not the outer one.
        #[test]
        fn containment_agrees_with_matching(outer in pattern_strategy(), inner in pattern_strategy()) {
            let names = names();
            let o = covered_by(&outer, &names);
            let i = covered_by(&inner, &names);
            let subset = o.iter().zip(&i).all(|(o, i)| !*i || *o);
            prop_assert_eq!(pattern_within(&outer, &inner), subset, "{} within {}", inner, outer);
            let overlap = o.iter().zip(&i).any(|(o, i)| *o && *i);
            prop_assert_eq!(patterns_overlap(&outer, &inner), overlap, "{} overlaps {}", inner, outer);
        }

        /// Every generated pattern is valid, and every escaped concrete name is an exact
        /// pattern that matches itself only.
        #[test]
        fn escaped_names_match_only_themselves(pattern in pattern_strategy(), raw in "[a-z*?{}/\\[\\]\\\\]{1,8}") {
            prop_assert!(validate_resource(&pattern).is_ok(), "{}", pattern);
            let name = exact("shell", &raw);
            prop_assert!(validate_resource(&name).is_ok(), "{}", name);
            prop_assert!(match_resource(&name, &name).is_some());
            let other = exact("shell", &format!("{raw}x"));
            prop_assert!(match_resource(&name, &other).is_none());
        }

        /// No input makes matching, containment or validation panic.
        #[test]
        fn arbitrary_resources_never_panic(a in "\\PC{0,24}", b in "\\PC{0,24}") {
            let _ = validate_resource(&a);
            let _ = match_resource(&a, &b);
            let _ = pattern_within(&a, &b);
            let _ = patterns_overlap(&a, &b);
        }
    }
}
