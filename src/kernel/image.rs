//! AgentImage: what a process starts from, read from a TOML manifest.
//!
//! ```toml
//! id = "coder"
//! version = "1.0.0"
//! system_prompt = "You fix failing tests."
//! default_tools = ["fs.read_text", "fs.write_text"]
//! required_capabilities = ["fs:**=read"]
//!
//! [budget]
//! tool_calls = 200
//!
//! [limits]
//! cpu_ms = 1000
//!
//! [[capabilities]]
//! resource = "fs:**"
//! rights = ["read"]
//! policy = "always_allow"
//!
//! [[requestable]]            # what its processes may ask a human for
//! resource = "fs:src/**"
//! rights = ["write"]
//! ```

use serde::{Deserialize, Serialize};

use super::capability::{validate_resource, CapabilitySpec};
use super::syscall::Budget;

/// Per-call limits for tools run by processes of an image. The defaults are the operator's;
/// only an image the operator registers may raise them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolLimits {
    /// Time the call's JavaScript may run.
    pub cpu_ms: u64,
    /// Total wall-clock time of a call, waiting included.
    pub wall_ms: u64,
    pub heap_mb: u64,
    pub syscalls: u64,
    pub result_bytes: u64,
    pub console_bytes: u64,
}

impl Default for ToolLimits {
    fn default() -> Self {
        ToolLimits {
            cpu_ms: 1_000,
            wall_ms: 600_000,
            heap_mb: 64,
            syscalls: 1_000,
            result_bytes: 1 << 20,
            console_bytes: 64 << 10,
        }
    }
}

impl ToolLimits {
    /// An error naming the first limit of `self` above `ceiling`, if any.
    pub fn check_within(&self, ceiling: &ToolLimits) -> Result<(), String> {
        let pairs = [
            ("cpu_ms", self.cpu_ms, ceiling.cpu_ms),
            ("wall_ms", self.wall_ms, ceiling.wall_ms),
            ("heap_mb", self.heap_mb, ceiling.heap_mb),
            ("syscalls", self.syscalls, ceiling.syscalls),
            ("result_bytes", self.result_bytes, ceiling.result_bytes),
            ("console_bytes", self.console_bytes, ceiling.console_bytes),
        ];
        match pairs.iter().find(|(_, own, max)| own > max) {
            Some((name, own, max)) => Err(format!(
                "limits.{name} = {own} is above the operator's {max}; only the operator can register an image with higher limits"
            )),
            None => Ok(()),
        }
    }
}

/// A parsed image manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub id: String,
    pub version: String,
    #[serde(default)]
    pub system_prompt: String,
    #[serde(default)]
    pub default_tools: Vec<String>,
    /// Granted to a process spawned from this image by the operator (never by `exec`).
    #[serde(default)]
    pub capabilities: Vec<CapabilitySpec>,
    /// `RESOURCE=RIGHTS` strings the image needs to do its job; never granted implicitly.
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    /// What a process the operator spawns from this image may ask a human for
    /// (`human.request_permission`); nothing beyond it can even be asked.
    #[serde(default)]
    pub requestable: Vec<CapabilitySpec>,
    #[serde(default)]
    pub budget: Option<Budget>,
    #[serde(default)]
    pub limits: ToolLimits,
    #[serde(default)]
    pub metadata: toml::Table,
}

impl Image {
    /// Parses and checks a manifest.
    pub fn from_toml(text: &str) -> Result<Image, String> {
        let image: Image = toml::from_str(text).map_err(|e| format!("manifest: {e}"))?;
        image.check()?;
        Ok(image)
    }

    fn check(&self) -> Result<(), String> {
        let ok_id = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok_id {
            return Err(format!(
                "manifest: id '{}' must be 1-64 characters of letters, digits, '-', '_' or '.'",
                self.id
            ));
        }
        if self.version.is_empty() {
            return Err("manifest: version must not be empty".into());
        }
        for cap in self.capabilities.iter().chain(&self.requestable) {
            validate_resource(&cap.resource).map_err(|e| format!("manifest: {e}"))?;
        }
        for req in &self.required_capabilities {
            CapabilitySpec::parse_grant(req).map_err(|e| format!("manifest: {e}"))?;
        }
        Ok(())
    }

    /// The image processes start from when none is named.
    pub fn base() -> Image {
        Image {
            id: "base".into(),
            version: "1".into(),
            system_prompt: String::new(),
            default_tools: Vec::new(),
            capabilities: Vec::new(),
            required_capabilities: Vec::new(),
            requestable: Vec::new(),
            budget: None,
            limits: ToolLimits::default(),
            metadata: Default::default(),
        }
    }
}

/// Orders image versions: dot-separated parts compared numerically when both are numbers
/// (`1.10` > `1.9`), as text otherwise; a version with a `-` suffix (a pre-release, `2.0-rc1`)
/// comes before the same version without it; more parts beat fewer (`1.0.1` > `1.0`).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let split = |v: &str| -> (String, Option<String>) {
        let v = v.trim().trim_start_matches(['v', 'V']);
        let v = v.split_once('+').map_or(v, |(core, _build)| core);
        match v.split_once('-') {
            Some((core, pre)) => (core.to_string(), Some(pre.to_string())),
            None => (v.to_string(), None),
        }
    };
    let parts = |v: &str| -> Vec<String> { v.split('.').map(str::to_string).collect() };
    let part_cmp = |x: &str, y: &str| match (x.parse::<u64>(), y.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => x.cmp(y),
    };
    let list_cmp = |xs: &[String], ys: &[String]| {
        xs.iter()
            .zip(ys)
            .map(|(x, y)| part_cmp(x, y))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| xs.len().cmp(&ys.len()))
    };
    let ((a_core, a_pre), (b_core, b_pre)) = (split(a), split(b));
    list_cmp(&parts(&a_core), &parts(&b_core)).then_with(|| match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => list_cmp(&parts(&x), &parts(&y)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_manifest() {
        let image = Image::from_toml(
            r#"
id = "coder"
version = "1.0.0"
system_prompt = "fix tests"
required_capabilities = ["fs:**=read"]
[limits]
cpu_ms = 500
[[capabilities]]
resource = "fs:**"
rights = ["read"]
"#,
        )
        .unwrap();
        assert_eq!(image.limits.cpu_ms, 500);
        assert_eq!(image.limits.heap_mb, 64);
        assert_eq!(image.capabilities.len(), 1);
    }

    #[test]
    fn limits_above_the_operators_are_named() {
        let mut limits = ToolLimits::default();
        assert_eq!(limits.check_within(&ToolLimits::default()), Ok(()));
        limits.cpu_ms = 600_000;
        let err = limits.check_within(&ToolLimits::default()).unwrap_err();
        assert!(err.contains("limits.cpu_ms = 600000"), "{err}");
    }

    #[test]
    fn versions_order_by_number_not_by_text() {
        use std::cmp::Ordering::*;
        for (a, b, want) in [
            ("1.10", "1.9", Greater),
            ("2", "10", Less),
            ("1.0.1", "1.0", Greater),
            ("1.0", "1.0", Equal),
            ("2.0-rc1", "2.0", Less),
            ("2.0-rc.2", "2.0-rc.10", Less),
            ("v1.2", "1.3", Less),
            ("1.0+build5", "1.0", Equal),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn rejects_bad_manifests() {
        assert!(Image::from_toml("id = 'a b'\nversion='1'").is_err());
        assert!(Image::from_toml("id = 'a'\nversion='1'\nunknown = 1").is_err());
        let err = Image::from_toml(
            "id='a'\nversion='1'\n[[capabilities]]\nresource='nokind'\nrights=['read']",
        )
        .unwrap_err();
        assert!(err.contains("kind:name"), "{err}");
    }
}
