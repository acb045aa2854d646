//! The compatibility matrix (`compat/matrix.toml`, compiled in): containerd version ranges ->
//! runtimes offered, accepted `start` replies, task API versions, known quirks.
//!
//! Two readers: `shimgate doctor` explains a host with it, and the v2 `start` action asks
//! [`start_reply_for`] what to print. Keeping the facts as data means a new containerd release
//! is a table edit, and the same table is what the doctor shows the operator.

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

/// The matrix as shipped in this build.
pub const BUILTIN: &str = include_str!("../compat/matrix.toml");

/// What `start` prints for containerd to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartReply {
    /// `unix:///run/containerd/s/<hex>`.
    Plain,
    /// `{"version":2,"address":…,"protocol":"ttrpc"}` (1.7+).
    JsonV2,
    /// `{"version":3,"address":…,"protocol":"ttrpc"}` (2.0+).
    JsonV3,
    /// protobuf `BootstrapResult{version 3, address, protocol "ttrpc"}` (2.3+).
    BootstrapResult,
}

/// One containerd release series.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Release {
    pub series: String,
    pub versions: Vec<String>,
    pub runtimes: Vec<String>,
    pub default_runtime: String,
    pub accepts: Vec<StartReply>,
    pub start_reply: StartReply,
    pub task_api: Vec<u32>,
    #[serde(default)]
    pub clients: Vec<String>,
}

/// How much a quirk matters to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warn,
    Problem,
}

/// A known behaviour of some containerd versions.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Quirk {
    pub id: String,
    pub versions: Vec<String>,
    /// The quirk matters only on hosts using one of these runtimes (empty: any).
    #[serde(default)]
    pub runtimes: Vec<String>,
    pub severity: Severity,
    pub summary: String,
    pub shimgate: String,
    #[serde(default)]
    pub advice: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Defaults {
    pub start_reply: StartReply,
}

/// The whole matrix.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Matrix {
    pub schema: u32,
    pub defaults: Defaults,
    pub containerd: Vec<Release>,
    #[serde(default)]
    pub quirk: Vec<Quirk>,
}

/// Why a compatibility matrix is unusable (doctor then refuses: exit code 3). The texts are
/// what `shimgate doctor` prints after its prefix.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("compat matrix: {0}")]
    Toml(toml::de::Error),
    #[error("compat matrix: unsupported schema {0}")]
    Schema(u32),
    /// A version requirement that does not parse, with where it is (`containerd 1.6`,
    /// `quirk some-id`).
    #[error("{place}: version requirement {requirement:?}: {source}")]
    Requirement {
        place: String,
        requirement: String,
        source: semver::Error,
    },
}

/// The requirements of `list`; on failure, the one that does not parse and why.
fn reqs(list: &[String]) -> Result<Vec<VersionReq>, (String, semver::Error)> {
    list.iter()
        .map(|r| VersionReq::parse(r).map_err(|e| (r.clone(), e)))
        .collect()
}

fn matches(list: &[String], v: &Version) -> bool {
    // Validated at load; an unparsable requirement simply does not match.
    reqs(list).is_ok_and(|rs| rs.iter().any(|r| r.matches(v)))
}

impl Matrix {
    /// Parse and validate a matrix (every version requirement must parse).
    pub fn parse(text: &str) -> Result<Matrix, MatrixError> {
        let m: Matrix = toml::from_str(text).map_err(MatrixError::Toml)?;
        if m.schema != 1 {
            return Err(MatrixError::Schema(m.schema));
        }
        let bad = |place: String| {
            move |(requirement, source)| MatrixError::Requirement {
                place,
                requirement,
                source,
            }
        };
        for r in &m.containerd {
            reqs(&r.versions).map_err(bad(format!("containerd {}", r.series)))?;
        }
        for q in &m.quirk {
            reqs(&q.versions).map_err(bad(format!("quirk {}", q.id)))?;
        }
        Ok(m)
    }

    /// The matrix compiled into this binary.
    pub fn builtin() -> Result<Matrix, MatrixError> {
        Matrix::parse(BUILTIN)
    }

    /// The release series `v` belongs to.
    pub fn release(&self, v: &Version) -> Option<&Release> {
        self.containerd.iter().find(|r| matches(&r.versions, v))
    }

    /// The quirks of `v` (all runtimes).
    pub fn quirks(&self, v: &Version) -> Vec<&Quirk> {
        self.quirk
            .iter()
            .filter(|q| matches(&q.versions, v))
            .collect()
    }
}

/// The numeric core of a containerd version string: `1.6.20~ds1` -> 1.6.20, `v1.7.27` ->
/// 1.7.27, `2.0.0-rc.1` -> 2.0.0, `1.7` -> 1.7.0. Distribution suffixes and pre-releases are
/// dropped on purpose: a 2.3.0 release candidate speaks 2.3's protocol.
pub fn parse_containerd_version(s: &str) -> Option<Version> {
    let s = s.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    let core: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut nums = core
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u64>());
    let major = nums.next()?.ok()?;
    let minor = nums.next().unwrap_or(Ok(0)).ok()?;
    let patch = nums.next().unwrap_or(Ok(0)).ok()?;
    Some(Version::new(major, minor, patch))
}

/// What `start` should print for a containerd that announced `containerd_version` (2.3+, in
/// BootstrapParams) or nothing (`None`, every older version). Falls back to the plain address
/// whenever the version is unknown, unparsable or not in the matrix, because every containerd
/// accepts that form.
pub fn start_reply_for(containerd_version: Option<&str>) -> StartReply {
    let Some(v) = containerd_version.and_then(parse_containerd_version) else {
        return StartReply::Plain;
    };
    let Ok(m) = Matrix::builtin() else {
        return StartReply::Plain;
    };
    match m.release(&v) {
        // Only ever answer in a form the matrix says this version accepts.
        Some(r) if r.accepts.contains(&r.start_reply) => r.start_reply,
        Some(_) | None => m.defaults.start_reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_every_series_is_consistent() {
        let m = Matrix::builtin().unwrap();
        assert_eq!(m.defaults.start_reply, StartReply::Plain);
        for r in &m.containerd {
            assert!(r.accepts.contains(&r.start_reply), "{}", r.series);
            assert!(r.runtimes.contains(&r.default_runtime), "{}", r.series);
            assert!(r.task_api.contains(&2), "{}: v2 is always served", r.series);
        }
        for q in &m.quirk {
            assert!(!q.summary.is_empty() && !q.shimgate.is_empty(), "{}", q.id);
            if q.severity != Severity::Info {
                assert!(!q.advice.is_empty(), "{} needs advice", q.id);
            }
        }
    }

    #[test]
    fn series_do_not_overlap_and_cover_1_2_to_3() {
        let m = Matrix::builtin().unwrap();
        for minor in [
            (1, 2),
            (1, 3),
            (1, 4),
            (1, 5),
            (1, 6),
            (1, 7),
            (2, 0),
            (2, 2),
            (2, 3),
        ] {
            for patch in [0, 3, 9, 50] {
                let v = Version::new(minor.0, minor.1, patch);
                let hits: Vec<_> = m
                    .containerd
                    .iter()
                    .filter(|r| matches(&r.versions, &v))
                    .collect();
                assert_eq!(hits.len(), 1, "{v}: {hits:?}");
            }
        }
        assert!(m.release(&Version::new(1, 1, 0)).is_none());
    }

    #[test]
    fn version_strings_from_the_field() {
        let p = |s| parse_containerd_version(s).map(|v| v.to_string());
        assert_eq!(p("1.6.20~ds1").as_deref(), Some("1.6.20"));
        assert_eq!(p("v1.7.27").as_deref(), Some("1.7.27"));
        assert_eq!(p("2.0.0-rc.1").as_deref(), Some("2.0.0"));
        assert_eq!(p("1.7").as_deref(), Some("1.7.0"));
        assert_eq!(p("1.2.13-1").as_deref(), Some("1.2.13"));
        assert_eq!(p("").as_deref(), None);
        assert_eq!(p("dev").as_deref(), None);
    }

    #[test]
    fn start_reply_follows_the_matrix() {
        assert_eq!(start_reply_for(None), StartReply::Plain);
        assert_eq!(start_reply_for(Some("1.6.20")), StartReply::Plain);
        assert_eq!(start_reply_for(Some("2.2.1")), StartReply::Plain);
        assert_eq!(start_reply_for(Some("v2.3.0")), StartReply::BootstrapResult);
        assert_eq!(
            start_reply_for(Some("2.4.0-beta.0")),
            StartReply::BootstrapResult
        );
        assert_eq!(start_reply_for(Some("garbage")), StartReply::Plain);
    }

    #[test]
    fn quirks_by_version() {
        let m = Matrix::builtin().unwrap();
        let ids = |s: &str| -> Vec<String> {
            m.quirks(&parse_containerd_version(s).unwrap())
                .iter()
                .map(|q| q.id.clone())
                .collect()
        };
        assert!(ids("1.3.8").contains(&"abstract-sockets".to_string()));
        assert!(!ids("1.3.9").contains(&"abstract-sockets".to_string()));
        assert!(ids("1.4.2").contains(&"abstract-sockets".to_string()));
        assert!(!ids("1.4.3").contains(&"abstract-sockets".to_string()));
        assert!(ids("1.6.20").contains(&"criu-path-flag".to_string()));
        assert!(!ids("1.7.0").contains(&"criu-path-flag".to_string()));
        assert!(ids("2.0.0").contains(&"legacy-runtimes-removed".to_string()));
        assert!(ids("2.3.4").contains(&"runc-v1-not-shipped".to_string()));
        assert!(!ids("1.7.34").contains(&"runc-v1-not-shipped".to_string()));
    }
}
