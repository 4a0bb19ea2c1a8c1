//! `ckptguard.toml`: a project's additions to the policy. Unknown keys and malformed values
//! are errors, never ignored.

use serde::Deserialize;

use crate::finding::Severity;
use crate::policy::Policy;
use crate::Limits;

/// The configuration file name looked for from the scanned path upwards.
pub const FILE_NAME: &str = "ckptguard.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    allow: RawAllow,
    #[serde(default)]
    scan: RawScan,
    #[serde(default)]
    limits: Option<Limits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    globals: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScan {
    fail_on: Option<String>,
}

/// A validated configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Globals added to the allowlist, as (module, qualname).
    pub allow: Vec<(String, String)>,
    /// `[scan] fail_on`.
    pub fail_on: Option<Severity>,
    /// `[limits]`.
    pub limits: Option<Limits>,
}

/// A configuration error, with enough context for a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or schema error.
    #[error("{0}")]
    Toml(String),
    /// A value that parses but is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// Splits `module:qualname` or `module.name` (last dot) into its parts.
pub fn split_global(g: &str) -> Option<(String, String)> {
    let (m, n) = match g.split_once(':') {
        Some(p) => p,
        None => g.rsplit_once('.')?,
    };
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    (ident(m) && ident(n)).then(|| (m.to_string(), n.to_string()))
}

impl Config {
    /// Parses and validates the text of a `ckptguard.toml`.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: Raw =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.message().to_string()))?;
        let mut allow = Vec::new();
        for g in raw.allow.globals {
            let pair = split_global(&g).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "allow.globals: {g:?} is not `module.name` or `module:qualname`"
                ))
            })?;
            if let Some(d) = crate::policy::danger(&pair.0, &pair.1) {
                return Err(ConfigError::Invalid(format!(
                    "allow.globals: {g:?} is a known {} primitive and cannot be allowed",
                    d.category
                )));
            }
            allow.push(pair);
        }
        let fail_on = raw
            .scan
            .fail_on
            .map(|s| {
                Severity::parse(&s).ok_or_else(|| {
                    ConfigError::Invalid(format!("scan.fail_on: unknown severity {s:?}"))
                })
            })
            .transpose()?;
        Ok(Config {
            allow,
            fail_on,
            limits: raw.limits,
        })
    }

    /// Applies the allowlist additions to a policy.
    pub fn apply(&self, policy: &mut Policy) {
        for (m, n) in &self.allow {
            policy.allow(m, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let c = Config::parse("[allow]\nglobals = [\"mypkg.models.Net\", \"mypkg.config:Config.Inner\"]\n[scan]\nfail_on = \"critical\"\n").unwrap();
        assert_eq!(c.allow[0], ("mypkg.models".into(), "Net".into()));
        assert_eq!(c.allow[1], ("mypkg.config".into(), "Config.Inner".into()));
        assert_eq!(c.fail_on, Some(Severity::Critical));
        assert!(Config::parse("[allow]\nglobal = []").is_err());
        let e = Config::parse("[allow]\nglobals = [\"posix.system\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be allowed"), "{e}");
        assert!(Config::parse("[allow]\nglobals = [\"builtins:getattr\"]").is_err());
        assert!(Config::parse("[allow]\nglobals = [\"nodot\"]").is_err());
        assert!(Config::parse("[scan]\nfail_on = \"bad\"").is_err());
        assert_eq!(
            Config::parse("[limits.pickle]\nmax_ops = 5\n")
                .unwrap()
                .limits
                .unwrap()
                .pickle
                .max_ops,
            5
        );
        assert!(Config::parse("[limits]\nmax_opz = 5\n").is_err());
        assert!(Config::parse("not toml [").is_err());
    }
}
