//! The v1 runtime's options, turned into core types: the shim's flags plus the `runtime` field
//! and `containerd.linux.runc.CreateOptions` of `Create` become the core's `RuncOptions`;
//! `containerd.linux.runc.CheckpointOptions` becomes a `CheckpointSpec`; ListPids labels
//! processes with `containerd.linux.runc.ProcessDetails`.

use std::path::{Path, PathBuf};

use crate::api::convert;
use crate::cli::ShimV1Args;
use crate::engine::types::{CheckpointSpec, RuncOptions};
use crate::engine::Result;
use crate::protos::runc_linux::{CheckpointOptions, CreateOptions, ProcessDetails};
use crate::protos::{any_bare, Any};

/// What the shim's command line says about every container it runs. containerd turns the
/// container's `containerd.linux.runc.RuncOptions` into these flags (protocols.md 5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `-runtime-root`: runc's state root (the namespace is appended).
    pub runtime_root: PathBuf,
    /// `-criu` / `-criu-path`.
    pub criu: Option<PathBuf>,
    /// `-systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `-workdir`: containerd's per-container directory for large temporary data.
    pub work_dir: Option<PathBuf>,
    /// The host runs the unified cgroup hierarchy alone (cgroup v2). containerd's legacy
    /// runtime loads every task's cgroup as v1 right after `Create` and fails there ("cgroups:
    /// cgroup mountpoint does not exist"), then kills the shim with the container already
    /// created, so the shim refuses such a `Create` before the runtime runs.
    pub cgroup_v2: bool,
}

impl Settings {
    pub fn from_args(a: &ShimV1Args) -> Settings {
        Settings {
            runtime_root: a.runtime_root.clone(),
            criu: a.criu.clone(),
            systemd_cgroup: a.systemd_cgroup,
            work_dir: a.workdir.clone(),
            cgroup_v2: crate::engine::cgroup::is_v2_unified(),
        }
    }
}

/// Why a `Create` is refused on a cgroup v2 host (see [`Settings::cgroup_v2`]).
pub const CGROUP_V2_REFUSAL: &str = "io.containerd.runtime.v1.linux cannot run containers on a cgroup v2 (unified) host: containerd's legacy runtime supports cgroup v1 only; use io.containerd.runc.v2";

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The core options of a `Create`: `runtime` names the runc binary (containerd fills it from
/// `RuncOptions.runtime` or its `runtime` setting), the flags give root, CRIU and cgroup driver,
/// and the task options give the rest. `shim_cgroup` is containerd's business for v1 (it places
/// the shim itself) and is not passed on.
pub fn create_options(runtime: &str, any: Option<&Any>, s: &Settings) -> Result<RuncOptions> {
    let o = convert::decode_options::<CreateOptions>(any)?.unwrap_or_default();
    Ok(RuncOptions {
        no_pivot_root: o.no_pivot_root,
        no_new_keyring: o.no_new_keyring,
        shim_cgroup: String::new(),
        io_uid: o.io_uid,
        io_gid: o.io_gid,
        binary_name: runtime.to_string(),
        root: text(&s.runtime_root),
        criu_path: s.criu.as_deref().map(text).unwrap_or_default(),
        systemd_cgroup: s.systemd_cgroup,
        criu_image_path: o.criu_image_path,
        // Empty: a restore works in the container's work directory, the Go shim's default.
        criu_work_path: o.criu_work_path,
    })
}

/// A `Checkpoint` into `path` with the v1 options (if any).
pub fn checkpoint_spec(path: &str, any: Option<&Any>) -> Result<CheckpointSpec> {
    let mut spec = CheckpointSpec {
        image_path: PathBuf::from(path),
        ..Default::default()
    };
    if let Some(o) = convert::decode_options::<CheckpointOptions>(any)? {
        convert::apply_checkpoint_options!(spec, o);
    }
    Ok(spec)
}

/// The `info` of a ListPids entry: v1 labels every process of the shim, init included (with
/// the container id, its id in this API).
pub fn process_details(id: &str) -> Option<Any> {
    any_bare(&ProcessDetails {
        exec_id: id.to_string(),
        ..Default::default()
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Kind;

    fn settings() -> Settings {
        Settings {
            runtime_root: "/run/docker/runtime-runc".into(),
            criu: Some("/usr/sbin/criu".into()),
            systemd_cgroup: true,
            work_dir: Some("/var/lib/containerd/w/c1".into()),
            cgroup_v2: false,
        }
    }

    #[test]
    fn flags_runtime_and_create_options_become_runc_options() {
        let co = CreateOptions {
            no_pivot_root: true,
            no_new_keyring: true,
            shim_cgroup: "/shims".into(),
            io_uid: 1000,
            io_gid: 1001,
            criu_work_path: "/cw".into(),
            ..Default::default()
        };
        let any = any_bare(&co).unwrap();
        let o = create_options("/usr/bin/crun", Some(&any), &settings()).unwrap();
        assert_eq!(
            o,
            RuncOptions {
                no_pivot_root: true,
                no_new_keyring: true,
                shim_cgroup: String::new(),
                io_uid: 1000,
                io_gid: 1001,
                binary_name: "/usr/bin/crun".into(),
                root: "/run/docker/runtime-runc".into(),
                criu_path: "/usr/sbin/criu".into(),
                systemd_cgroup: true,
                criu_image_path: String::new(),
                criu_work_path: "/cw".into(),
            }
        );
        // No options at all (ctr without --runc-* flags): flags only.
        let o = create_options("runc", None, &Settings::default()).unwrap();
        assert_eq!((o.binary(), o.io_uid, o.no_pivot_root), ("runc", 0, false));
        // A prefixed type URL is fine; another type is not.
        let mut any = any;
        any.type_url = format!("type.googleapis.com/{}", any.type_url);
        assert!(create_options("runc", Some(&any), &settings()).is_ok());
        any.type_url = "containerd.runc.v1.Options".into();
        let e = create_options("runc", Some(&any), &settings()).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidArgument);
    }

    #[test]
    fn checkpoint_options_v1_numbering() {
        let co = CheckpointOptions {
            exit: true,
            open_tcp: true,
            file_locks: true,
            empty_namespaces: vec!["network".into()],
            work_path: "/w".into(),
            ..Default::default()
        };
        let spec = checkpoint_spec("/img", Some(&any_bare(&co).unwrap())).unwrap();
        assert_eq!(spec.image_path, PathBuf::from("/img"));
        assert_eq!(spec.work_path, Some(PathBuf::from("/w")));
        assert!(spec.exit && spec.open_tcp && spec.file_locks && !spec.terminal);
        assert_eq!(spec.empty_namespaces, ["network"]);
        let spec = checkpoint_spec("/img", None).unwrap();
        assert!(spec.work_path.is_none() && !spec.exit);
    }

    #[test]
    fn details_are_linux_runc_process_details() {
        let a = process_details("c1").unwrap();
        assert_eq!(a.type_url, "containerd.linux.runc.ProcessDetails");
        let d = <ProcessDetails as protobuf::Message>::parse_from_bytes(&a.value).unwrap();
        assert_eq!(d.exec_id, "c1");
    }
}
