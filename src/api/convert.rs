//! Translations between wire messages and core types that both APIs need. Each conversion
//! exists once, here; the adapters only pick which ones to call.

use std::path::PathBuf;

use crate::engine::types::{
    CheckpointSpec, ContainerId, ExecId, MountSpec, PidInfo, ProcessRef, RuncOptions, Status,
    StdioRequest,
};
use crate::engine::{Error, Result};
use crate::protos::mount::Mount;
use crate::protos::task_types::{ProcessInfo, Status as PbStatus};
use crate::protos::{any_bare, runc_options, type_url_is, Any, Named};

pub fn container_id(s: &str) -> Result<ContainerId> {
    ContainerId::new(s)
}

/// An empty exec id addresses init.
pub fn process_ref(exec_id: &str) -> Result<ProcessRef> {
    if exec_id.is_empty() {
        Ok(ProcessRef::Init)
    } else {
        Ok(ProcessRef::Exec(ExecId::new(exec_id)?))
    }
}

pub fn mounts(m: &[Mount]) -> Vec<MountSpec> {
    m.iter()
        .map(|m| MountSpec {
            kind: m.type_.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            options: m.options.clone(),
        })
        .collect()
}

pub fn stdio(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> StdioRequest {
    StdioRequest {
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        terminal,
    }
}

pub fn status(s: Status) -> PbStatus {
    match s {
        Status::Unknown => PbStatus::UNKNOWN,
        Status::Created => PbStatus::CREATED,
        Status::Running => PbStatus::RUNNING,
        Status::Stopped => PbStatus::STOPPED,
        Status::Paused => PbStatus::PAUSED,
        Status::Pausing => PbStatus::PAUSING,
    }
}

/// A `StateResponse` of either API from a core process state. Both messages use these field
/// names (the task API's also has `exec_id`, which the Go shims leave empty, and so do we).
/// `exited_at` is Go's zero time until the process exits (protocols.md 1.7).
macro_rules! state_response {
    ($ty:path, $state:expr) => {{
        let s: $crate::engine::types::ProcessState = $state;
        $ty {
            id: s.id,
            bundle: s.bundle.to_string_lossy().into_owned(),
            pid: s.pid,
            status: $crate::api::convert::status(s.status).into(),
            stdin: s.stdio.stdin,
            stdout: s.stdio.stdout,
            stderr: s.stdio.stderr,
            terminal: s.stdio.terminal,
            exit_status: s.exit.map_or(0, |e| e.status),
            exited_at: Some($crate::protos::time::timestamp_or_zero(
                s.exit.map(|e| e.at),
            ))
            .into(),
            ..Default::default()
        }
    }};
}
pub(crate) use state_response;

/// A `DeleteResponse` of either API from what a core delete returned.
macro_rules! delete_response {
    ($ty:path, $deleted:expr) => {{
        let d: $crate::engine::types::Deleted = $deleted;
        $ty {
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: Some($crate::protos::time::timestamp_or_zero(d.exited_at)).into(),
            ..Default::default()
        }
    }};
}
pub(crate) use delete_response;

/// A `WaitResponse` of either API from an exit.
macro_rules! wait_response {
    ($ty:path, $exit:expr) => {{
        let e: $crate::engine::types::Exit = $exit;
        $ty {
            exit_status: e.status,
            exited_at: Some($crate::protos::time::timestamp(e.at)).into(),
            ..Default::default()
        }
    }};
}
pub(crate) use wait_response;

pub fn path_opt(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// The `CreateSpec` of a Create request of either API: both `CreateTaskRequest`s name these
/// fields alike. The options (each API has its own message) and the work directory are the
/// caller's. Evaluates to `Result<CreateSpec>`.
macro_rules! create_spec {
    ($req:expr, $options:expr, $work_dir:expr, $deadline:expr) => {{
        let r = &$req;
        $crate::api::convert::container_id(&r.id).map(|id| $crate::engine::types::CreateSpec {
            id,
            bundle: r.bundle.clone().into(),
            rootfs: $crate::api::convert::mounts(&r.rootfs),
            stdio: $crate::api::convert::stdio(&r.stdin, &r.stdout, &r.stderr, r.terminal),
            checkpoint: $crate::api::convert::path_opt(&r.checkpoint),
            parent_checkpoint: $crate::api::convert::path_opt(&r.parent_checkpoint),
            options: $options,
            work_dir: $work_dir,
            deadline: $deadline,
        })
    }};
}
pub(crate) use create_spec;

/// When the caller stops waiting for a request (its `timeout_nano`), if it said.
pub fn deadline(ctx: &ttrpc::r#async::TtrpcContext) -> Option<std::time::Instant> {
    (ctx.timeout_nano > 0).then(|| {
        std::time::Instant::now() + std::time::Duration::from_nanos(ctx.timeout_nano as u64)
    })
}

/// The payload of an `Any` carrying JSON (an OCI `Process` or `LinuxResources`); `absent`
/// when the request has none.
pub fn json_payload(any: Option<&Any>, absent: &[u8]) -> Vec<u8> {
    any.map_or_else(|| absent.to_vec(), |a| a.value.clone())
}

/// Decode an options `Any` expected to hold `M`: `None` when the request carries none (absent
/// or empty), an InvalidArgument error when it holds another type or does not decode. Type
/// URLs are matched with or without a prefix.
pub fn decode_options<M: Named>(any: Option<&Any>) -> Result<Option<M>> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(None);
    };
    let name = M::FULL_NAME;
    if !any.type_url.is_empty() && !type_url_is(&any.type_url, name) {
        return Err(Error::invalid_argument(format!(
            "unsupported options type {:?}, expected {name}",
            any.type_url
        )));
    }
    M::parse_from_bytes(&any.value)
        .map(Some)
        .map_err(|e| Error::invalid_argument(format!("decode {name}: {e}")))
}

/// Copy the checkpoint options both APIs' `CheckpointOptions` messages share (same field
/// names, different numbers and packages) into a `CheckpointSpec`.
macro_rules! apply_checkpoint_options {
    ($spec:expr, $o:expr) => {{
        let (spec, o) = (&mut $spec, &$o);
        if !o.image_path.is_empty() {
            spec.image_path = std::path::PathBuf::from(&o.image_path);
        }
        spec.work_path = $crate::api::convert::path_opt(&o.work_path);
        spec.exit = o.exit;
        spec.open_tcp = o.open_tcp;
        spec.external_unix_sockets = o.external_unix_sockets;
        spec.terminal = o.terminal;
        spec.file_locks = o.file_locks;
        spec.empty_namespaces = o.empty_namespaces.clone();
        spec.cgroups_mode = o.cgroups_mode.clone();
    }};
}
pub(crate) use apply_checkpoint_options;

/// `containerd.runc.v1.Options` to core options.
pub fn runc_options(o: &runc_options::Options) -> RuncOptions {
    RuncOptions {
        no_pivot_root: o.no_pivot_root,
        no_new_keyring: o.no_new_keyring,
        shim_cgroup: o.shim_cgroup.clone(),
        io_uid: o.io_uid,
        io_gid: o.io_gid,
        binary_name: o.binary_name.clone(),
        root: o.root.clone(),
        criu_path: o.criu_path.clone(),
        systemd_cgroup: o.systemd_cgroup,
        criu_image_path: o.criu_image_path.clone(),
        criu_work_path: o.criu_work_path.clone(),
    }
}

/// The options `Any` of a task Create. containerd always sends `containerd.runc.v1.Options` to
/// runc shims; an absent or empty `Any` means defaults.
pub fn create_options(any: Option<&Any>) -> Result<RuncOptions> {
    Ok(decode_options::<runc_options::Options>(any)?
        .map(|o| runc_options(&o))
        .unwrap_or_default())
}

/// `containerd.runc.v1.CheckpointOptions` (or none) into a checkpoint request for `path`.
pub fn checkpoint_spec(path: &str, any: Option<&Any>) -> Result<CheckpointSpec> {
    let mut spec = CheckpointSpec {
        image_path: PathBuf::from(path),
        ..Default::default()
    };
    if let Some(o) = decode_options::<runc_options::CheckpointOptions>(any)? {
        apply_checkpoint_options!(spec, o);
        spec.parent_path = path_opt(&o.parent_path);
    }
    Ok(spec)
}

/// `Pids` entries. `details` builds the per-process info `Any` (each API has its own
/// ProcessDetails message and its own rule for which processes get one).
pub fn process_infos(
    pids: Vec<PidInfo>,
    details: impl Fn(&PidInfo) -> Option<Any>,
) -> Vec<ProcessInfo> {
    pids.iter()
        .map(|p| ProcessInfo {
            pid: p.pid,
            info: details(p).into(),
            ..Default::default()
        })
        .collect()
}

/// The v2 rule: execs carry `containerd.runc.v1.ProcessDetails{exec_id}`, init carries nothing.
pub fn runc_v1_details(p: &PidInfo) -> Option<Any> {
    let exec_id = p.exec_id.as_ref()?;
    any_bare(&runc_options::ProcessDetails {
        exec_id: exec_id.clone(),
        ..Default::default()
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_any_forms() {
        assert_eq!(create_options(None).unwrap(), RuncOptions::default());
        let o = runc_options::Options {
            binary_name: "crun".into(),
            io_uid: 5,
            ..Default::default()
        };
        let mut any = any_bare(&o).unwrap();
        assert_eq!(create_options(Some(&any)).unwrap().binary_name, "crun");
        any.type_url = format!("type.googleapis.com/{}", any.type_url);
        assert_eq!(create_options(Some(&any)).unwrap().io_uid, 5);
        any.type_url = "runtimeoptions.v1.Options".into();
        assert!(create_options(Some(&any)).is_err());
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = vec![0xff, 0xff];
        assert!(create_options(Some(&any)).is_err());
    }

    #[test]
    fn pids_carry_exec_details_only_for_execs() {
        let infos = process_infos(
            vec![
                PidInfo {
                    pid: 1,
                    exec_id: None,
                    init: true,
                },
                PidInfo {
                    pid: 2,
                    exec_id: Some("e1".into()),
                    init: false,
                },
            ],
            runc_v1_details,
        );
        assert!(infos[0].info.is_none());
        let any = infos[1].info.as_ref().unwrap();
        assert_eq!(any.type_url, "containerd.runc.v1.ProcessDetails");
    }

    #[test]
    fn exec_ref() {
        assert_eq!(process_ref("").unwrap(), ProcessRef::Init);
        assert!(process_ref("../x").is_err());
    }
}
