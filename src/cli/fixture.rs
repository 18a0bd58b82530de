//! The fixture format replayed by `agent-libos replay` (documented in `fixtures/README.md`,
//! schema in `fixtures/fixture.schema.json`).
//!
//! One JSON file holds one case set: a tool (a path relative to the file, or inline source),
//! an optional workspace directory copied fresh for every case, an optional loopback HTTP
//! route, and cases. Each case has grants, scripted human answers, calls with expected
//! outcomes, and expected effects. These types are a boundary format, hence `Serialize`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::kernel::{Budget, CapabilitySpec, HumanAnswer};

/// One fixture file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureFile {
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The tool's source file, relative to the fixture file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The tool's source, inline (instead of `tool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_source: Option<String>,
    /// A directory (relative to the fixture file) copied into each case's fresh workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// A loopback HTTP route served while the file's cases run; `{{server}}` in the file
    /// becomes its `127.0.0.1:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<Serve>,
    /// Grants every case starts with (before its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    pub path: String,
    pub body: String,
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default = "text_plain")]
    pub content_type: String,
}

fn ok_status() -> u16 {
    200
}
fn text_plain() -> String {
    "text/plain".into()
}

/// A grant: `RESOURCE=RIGHTS[:POLICY]`, or a full capability spec (e.g. to make it
/// `delegable` for `proc.fork`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Grant {
    Text(String),
    Spec(CapabilitySpec),
}

impl Grant {
    pub fn spec(&self) -> Result<CapabilitySpec> {
        match self {
            Grant::Text(t) => super::grants::parse_grant(t),
            Grant::Spec(s) => {
                crate::kernel::capability::validate_resource(&s.resource)
                    .map_err(anyhow::Error::msg)?;
                Ok(s.clone())
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Skip this case, saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    /// What the case's process may ask a human for (`human.request_permission`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requestable: Vec<Grant>,
    /// `wait` (default: requests are answered by `human`) or `fail_fast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_mode: Option<HumanModeName>,
    /// Scripted answers, applied in order as requests appear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub human: Vec<Scripted>,
    /// Process budgets to start with (unset ones keep the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// Expect the tool to be rejected by `tool.validate` (then no call is made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationExpect>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<Call>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<Effects>,
}

/// Process budgets of a case; unset ones keep [`Budget::default`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
}

impl BudgetSpec {
    pub fn budget(&self) -> Budget {
        let d = Budget::default();
        Budget {
            tool_calls: self.tool_calls.unwrap_or(d.tool_calls),
            children: self.children.unwrap_or(d.children),
            syscalls: self.syscalls.unwrap_or(d.syscalls),
            wall_time_ms: self.wall_time_ms.unwrap_or(d.wall_time_ms),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HumanModeName {
    Wait,
    FailFast,
}

/// A scripted human answer, optionally checked against the request it answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scripted {
    /// The request kind expected: `approval`, `permission` or `question`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The resource the request must be about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `approve_once`, `approve_always`, `approve_pattern`, `reject` or `answer`.
    pub answer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
}

impl Scripted {
    pub fn to_answer(&self) -> Result<HumanAnswer> {
        Ok(match self.answer.as_str() {
            "approve_once" => HumanAnswer::ApproveOnce,
            "approve_always" => HumanAnswer::ApproveAlways,
            "approve_pattern" => HumanAnswer::ApprovePattern,
            "reject" => HumanAnswer::Reject {
                reason: self.reason.clone(),
            },
            "answer" => HumanAnswer::Answer {
                text: self.text.clone(),
            },
            other => bail!(
                "unknown scripted answer '{other}' (approve_once, approve_always, approve_pattern, reject or answer)"
            ),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationExpect {
    pub ok: bool,
    /// Rules that must be among the findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Declared tests that must have failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tests: Vec<String>,
}

/// One call: the tool with `args`, or one primitive in wire form as `syscall`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

/// An expected outcome. With neither `error` nor a result key, any success passes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The exact result (`null` is a value).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Value>,
    /// A JSON subset of the result: objects match key by key, arrays element by element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_subset: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExpectError>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectError {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// A substring of the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_contains: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effects {
    /// Workspace-relative path to what the file must be after the calls.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileExpect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectsExpect>,
    /// Audit records that must be present (each field that is given must match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditExpect>,
    /// Requests left pending in the human queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_human: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExpect {
    /// `false`: the file must not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectsExpect {
    /// Objects in the database (of `type`, if given).
    pub count: u64,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditExpect {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Deserializes a present field (even `null`) as `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A fixture file as loaded: parsed (after `{{server}}` substitution) with its paths.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub fixture: FixtureFile,
    /// The raw text (before substitution).
    pub raw: String,
}

impl Loaded {
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The tool's source, if the file has one.
    pub fn tool_source(&self) -> Result<Option<String>> {
        match (&self.fixture.tool, &self.fixture.tool_source) {
            (Some(_), Some(_)) => bail!("give either `tool` or `tool_source`, not both"),
            (Some(rel), None) => {
                let p = self.dir().join(rel);
                Ok(Some(std::fs::read_to_string(&p).with_context(|| {
                    format!("reading the tool {}", p.display())
                })?))
            }
            (None, Some(src)) => Ok(Some(src.clone())),
            (None, None) => Ok(None),
        }
    }

    pub fn workspace_dir(&self) -> Option<PathBuf> {
        self.fixture.workspace.as_ref().map(|w| self.dir().join(w))
    }
}

/// Reads and parses a fixture file, substituting `{{server}}` with `server` if given.
pub fn parse(path: &Path, raw: &str, server: Option<&str>) -> Result<FixtureFile> {
    let text = match server {
        Some(addr) => raw.replace("{{server}}", addr),
        None => raw.to_string(),
    };
    let fixture: FixtureFile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if fixture.cases.is_empty() {
        bail!("{}: no cases", path.display());
    }
    Ok(fixture)
}

/// The fixture files named by `paths` (directories: their `*.json`, not recursively,
/// skipping `*.schema.json`), sorted within each directory.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension().is_some_and(|e| e == "json")
                        && !f.to_string_lossy().ends_with(".schema.json")
                })
                .collect();
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!(
                "{}: no such file or directory; pass fixture files or a directory of them",
                p.display()
            );
        }
    }
    Ok(out)
}

/// Whether `subset` is contained in `value` (objects key by key, arrays element-wise with
/// equal length, everything else equal).
pub fn is_subset(subset: &Value, value: &Value) -> bool {
    match (subset, value) {
        (Value::Object(s), Value::Object(v)) => s
            .iter()
            .all(|(k, sv)| v.get(k).is_some_and(|vv| is_subset(sv, vv))),
        (Value::Array(s), Value::Array(v)) => {
            s.len() == v.len() && s.iter().zip(v).all(|(a, b)| is_subset(a, b))
        }
        (s, v) => s == v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subsets() {
        assert!(is_subset(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!is_subset(&json!({"a": 2}), &json!({"a": 1})));
        assert!(is_subset(&json!([{"x": 1}]), &json!([{"x": 1, "y": 2}])));
        assert!(!is_subset(&json!([1]), &json!([1, 2])));
    }

    #[test]
    fn null_result_is_present() {
        let e: Expect = serde_json::from_value(json!({"result": null})).unwrap();
        assert_eq!(e.result, Some(Value::Null));
        let e: Expect = serde_json::from_value(json!({})).unwrap();
        assert!(e.result.is_none());
    }
}
