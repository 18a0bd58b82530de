//! Lexical normalization of agent-supplied paths against a process's working directory.
//!
//! Normalization happens before any capability check and never touches the host, so a
//! denial cannot reveal whether a path exists. Symlinks are handled by the filesystem
//! provider, which refuses to follow them.

/// Why a path cannot name anything inside the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathEscape {
    Absolute,
    AboveRoot,
    Empty,
    Invalid(&'static str),
}

impl std::fmt::Display for PathEscape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathEscape::Absolute => f.write_str("absolute paths are outside the workspace"),
            PathEscape::AboveRoot => f.write_str("the path leads above the workspace root"),
            PathEscape::Empty => f.write_str("the path is empty"),
            PathEscape::Invalid(why) => f.write_str(why),
        }
    }
}

/// Joins `path` to `cwd` (both workspace-relative) and normalizes `.` and `..`.
/// Returns `"."` for the root.
pub fn normalize(cwd: &str, path: &str) -> Result<String, PathEscape> {
    if path.is_empty() {
        return Err(PathEscape::Empty);
    }
    if path.contains('\0') {
        return Err(PathEscape::Invalid("the path contains a NUL byte"));
    }
    if path.starts_with('/') || path.starts_with('\\') || path.contains(":\\") {
        return Err(PathEscape::Absolute);
    }
    if path.contains('\\') {
        return Err(PathEscape::Invalid(
            "backslashes are not path separators here",
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in cwd.split('/').chain(path.split('/')) {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathEscape::AboveRoot);
                }
            }
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        Ok(".".to_string())
    } else {
        Ok(parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_inside_the_workspace() {
        assert_eq!(normalize(".", "a/./b/../c").unwrap(), "a/c");
        assert_eq!(normalize("src", "../README.md").unwrap(), "README.md");
        assert_eq!(normalize("src", ".").unwrap(), "src");
        assert_eq!(normalize(".", "a/..").unwrap(), ".");
    }

    #[test]
    fn rejects_escapes() {
        assert_eq!(normalize(".", "../etc/passwd"), Err(PathEscape::AboveRoot));
        assert_eq!(normalize("src", "../../x"), Err(PathEscape::AboveRoot));
        assert_eq!(normalize(".", "/etc/passwd"), Err(PathEscape::Absolute));
        assert_eq!(normalize(".", ""), Err(PathEscape::Empty));
    }
}

/// No path panics the normalizer, and what it returns stays inside the workspace: relative,
/// without `.`/`..`/empty segments, and a fixed point.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::proptest_support::{config, tricky_string};
    use proptest::prelude::*;

    fn path_like() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just(String::new()),
            Just(".".to_string()),
            Just("..".to_string()),
            "[a-z]{1,3}",
            tricky_string(),
        ];
        prop::collection::vec(segment, 0..8).prop_map(|segments| segments.join("/"))
    }

    proptest! {
        #![proptest_config(config(2048))]

        #[test]
        fn normalized_paths_stay_in_the_workspace(cwd in path_like(), path in path_like()) {
            let cwd = normalize(".", &cwd).unwrap_or_else(|_| ".".into());
            if let Ok(out) = normalize(&cwd, &path) {
                prop_assert!(!out.is_empty());
                prop_assert!(!out.starts_with('/'), "{out}");
                prop_assert!(!out.contains('\0') && !out.contains('\\'), "{out:?}");
                if out != "." {
                    prop_assert!(
                        out.split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
                        "{out:?}"
                    );
                }
                prop_assert_eq!(normalize(".", &out), Ok(out.clone()));
            }
        }

        #[test]
        fn any_string_is_normalized_or_refused(cwd in tricky_string(), path in tricky_string()) {
            let _ = normalize(&cwd, &path);
        }
    }
}
