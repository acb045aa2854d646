//! The parts of a containerd config (`config.toml`, schema versions 1 to 4) the doctor
//! needs: where the daemon keeps state and listens, and which runtime types it is set up to
//! use. Read with the `toml` crate into a generic value and walked, so unknown sections (and
//! the plugin renames between schema versions) cost nothing.

use serde::Serialize;
use toml::Value;

/// containerd's defaults when the config does not say.
pub const DEFAULT_ROOT: &str = "/var/lib/containerd";
pub const DEFAULT_STATE: &str = "/run/containerd";
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";

/// What the doctor takes from a config.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonConfig {
    pub version: Option<i64>,
    pub root: Option<String>,
    pub state: Option<String>,
    pub address: Option<String>,
    /// CRI's default runtime name (`default_runtime_name`), if any.
    pub default_runtime_name: Option<String>,
    /// Runtimes configured for CRI: (name, runtime_type).
    pub runtimes: Vec<(String, String)>,
    /// The legacy runtime's `shim` setting (`io.containerd.runtime.v1.linux` / `linux`).
    pub v1_shim: Option<String>,
    /// The legacy runtime's `runtime` setting (the runc binary).
    pub v1_runtime: Option<String>,
    pub disabled_plugins: Vec<String>,
}

impl DaemonConfig {
    /// Every runtime type the config names.
    pub fn runtime_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.runtimes.iter().map(|(_, t)| t.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str()
}

/// Find every table that configures runtimes (a `runtimes` table whose entries carry
/// `runtime_type`) and every `default_runtime_name`, wherever the schema version put them.
fn walk(v: &Value, out: &mut DaemonConfig) {
    let Some(t) = v.as_table() else {
        return;
    };
    if let Some(name) = t.get("default_runtime_name").and_then(Value::as_str) {
        out.default_runtime_name
            .get_or_insert_with(|| name.to_string());
    }
    if let Some(rts) = t.get("runtimes").and_then(Value::as_table) {
        for (name, rt) in rts {
            if let Some(ty) = rt.get("runtime_type").and_then(Value::as_str) {
                out.runtimes.push((name.clone(), ty.to_string()));
            }
        }
    }
    // Schema 1's `default_runtime` / `untrusted_workload_runtime` tables.
    for key in ["default_runtime", "untrusted_workload_runtime"] {
        if let Some(ty) = t
            .get(key)
            .and_then(|d| d.get("runtime_type"))
            .and_then(Value::as_str)
        {
            out.runtimes.push((key.to_string(), ty.to_string()));
        }
    }
    for (k, child) in t {
        if k != "runtimes" {
            walk(child, out);
        }
    }
}

/// A containerd config that is not TOML (doctor reports it as a finding, with this text).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfigError(#[from] toml::de::Error);

/// Parse a containerd config.
pub fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
    let v: Value = toml::from_str(text)?;
    let mut c = DaemonConfig {
        version: v.get("version").and_then(Value::as_integer),
        root: str_at(&v, &["root"]).map(str::to_string),
        state: str_at(&v, &["state"]).map(str::to_string),
        // Version 4 (containerd 2.3+) moved `[grpc]` into the grpc server plugin.
        address: str_at(&v, &["grpc", "address"])
            .or_else(|| str_at(&v, &["plugins", "io.containerd.server.v1.grpc", "address"]))
            .map(str::to_string),
        disabled_plugins: v
            .get("disabled_plugins")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    if let Some(plugins) = v.get("plugins") {
        // Schema 1 calls the legacy runtime plugin `linux`; 2 and 3 use the full id.
        for key in [crate::cli::LEGACY_RUNTIME, "linux"] {
            if let Some(p) = plugins.get(key) {
                c.v1_shim = c
                    .v1_shim
                    .or_else(|| p.get("shim").and_then(Value::as_str).map(str::to_string));
                c.v1_runtime = c
                    .v1_runtime
                    .or_else(|| p.get("runtime").and_then(Value::as_str).map(str::to_string));
            }
        }
        walk(plugins, &mut c);
    }
    c.runtimes.sort();
    c.runtimes.dedup();
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_2_with_cri_and_legacy_runtime() {
        let c = parse(
            r#"version = 2
root = "/r"
state = "/s"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "/s/c.sock"
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.old]
  runtime_type = "io.containerd.runtime.v1.linux"
[plugins."io.containerd.runtime.v1.linux"]
  shim = "/opt/bin/containerd-shim"
  runtime = "runc"
"#,
        )
        .unwrap();
        assert_eq!(c.version, Some(2));
        assert_eq!(c.state.as_deref(), Some("/s"));
        assert_eq!(c.address.as_deref(), Some("/s/c.sock"));
        assert_eq!(c.default_runtime_name.as_deref(), Some("runc"));
        assert_eq!(
            c.runtime_types(),
            ["io.containerd.runc.v2", "io.containerd.runtime.v1.linux"]
        );
        assert_eq!(c.v1_shim.as_deref(), Some("/opt/bin/containerd-shim"));
        assert_eq!(c.disabled_plugins, ["io.containerd.grpc.v1.cri"]);
    }

    #[test]
    fn schema_1_3_and_4() {
        let c = parse(
            r#"[plugins.cri.containerd.default_runtime]
  runtime_type = "io.containerd.runtime.v1.linux"
[plugins.linux]
  shim = "containerd-shim"
"#,
        )
        .unwrap();
        assert_eq!(c.runtime_types(), ["io.containerd.runtime.v1.linux"]);
        assert_eq!(c.v1_shim.as_deref(), Some("containerd-shim"));
        let c = parse(
            r#"version = 3
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
"#,
        )
        .unwrap();
        assert_eq!(c.version, Some(3));
        assert_eq!(c.runtime_types(), ["io.containerd.runc.v2"]);
        let c = parse(
            r#"version = 4
root = '/r'
[plugins.'io.containerd.server.v1.grpc']
  address = '/s/c.sock'
[plugins.'io.containerd.server.v1.ttrpc']
  address = '/s/c.sock.ttrpc'
"#,
        )
        .unwrap();
        assert_eq!(c.version, Some(4));
        assert_eq!(c.address.as_deref(), Some("/s/c.sock"));
        assert!(parse("not [ toml").is_err());
        assert!(parse("").unwrap().runtimes.is_empty());
    }
}
