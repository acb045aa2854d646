//! The `delete` action: containerd runs it after every disconnect from a shim (crash or normal
//! removal), and after a failed reconnect. It must always succeed and print a DeleteResponse,
//! however much of the bundle, the runc state or the socket is already gone, because a failure
//! makes containerd keep a stale bundle that blocks the next create with this id.
//!
//! stdout is only the protobuf; anything on stderr is logged by containerd as cleanup warnings.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use protobuf::Message;

use crate::cli::ShimV2Args;
use crate::engine::ops::read_bundle_options;
use crate::protos::task::DeleteResponse;
use crate::protos::time;
use crate::reaper::{Reaper, Spawner};

/// What containerd reports for a task whose shim died: killed.
const DEAD_SHIM_STATUS: u32 = 128 + libc::SIGKILL as u32;

fn warn(msg: impl std::fmt::Display) {
    eprint!(
        "{}",
        crate::logging::logrus_line(SystemTime::now(), "warning", &msg.to_string(), &[])
    );
}

/// Remove the socket named in `address` if no shim serves it any more (a group shim may still
/// serve other containers through it, and then it must stay).
fn remove_dead_socket(bundle: &Path) {
    let Ok(addr) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = PathBuf::from(addr.trim().strip_prefix("unix://").unwrap_or(addr.trim()));
    if !path.is_absolute() || UnixStream::connect(&path).is_ok() {
        return;
    }
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) {
            if let Err(e) = std::fs::remove_file(&path) {
                warn(format!("remove stale socket {}: {e}", path.display()));
            }
        }
    }
}

/// Why `delete` could not run at all (everything else it meets is reported and passed over).
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("getcwd: {0}")]
    Getcwd(std::io::Error),
    #[error("encode DeleteResponse: {0}")]
    Encode(protobuf::Error),
}

pub fn delete(args: &ShimV2Args) -> Result<Vec<u8>, DeleteError> {
    let _ = crate::reaper::set_subreaper();
    let bundle = match &args.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(DeleteError::Getcwd)?,
    };
    // The id becomes a runc argument: refuse anything that is not a containerd identifier.
    let id_ok = crate::engine::types::validate_identifier("container id", &args.id).is_ok()
        && crate::engine::types::validate_identifier("namespace", &args.namespace).is_ok();

    let opts = read_bundle_options(&bundle);
    // The runtime keeps a container's state in `<root>/<namespace>/<id>` (runc, crun and youki
    // alike). After an ordinary Delete it is gone already, and running the runtime only to
    // hear "does not exist" would cost a process per container lifecycle.
    let root = Path::new(opts.root_base()).join(&args.namespace);
    if id_ok && root.join(&args.id).exists() {
        let mut cmd = Command::new(opts.binary());
        cmd.arg("--root")
            .arg(&root)
            .arg("--log")
            .arg(bundle.join("log.json"))
            .arg("--log-format")
            .arg("json")
            .arg("delete")
            .arg("--force")
            .arg(&args.id);
        match Spawner::new(Reaper::new()).output_blocking(cmd) {
            Ok(o) if o.status == 0 => {}
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stderr);
                if !text.contains("does not exist") {
                    warn(format!("runc delete --force {}: {}", args.id, text.trim()));
                }
            }
            Err(e) => warn(format!("run {} delete: {e}", opts.binary())),
        }
    } else if !id_ok {
        warn(format!(
            "refusing runc cleanup for invalid id {:?}",
            args.id
        ));
    }
    if let Err(e) = crate::engine::mount::unmount_all(&bundle.join("rootfs")) {
        warn(format!("unmount rootfs: {e}"));
    }
    remove_dead_socket(&bundle);

    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    // The real exit when the container had already ended before its shim died (recorded by
    // the shim); otherwise the container was killed here: 137, now.
    let (status, at) = match crate::engine::exitfile::read(&bundle) {
        Some(r) if r.pid == pid && pid != 0 => (r.status, r.exited_at()),
        _ => (DEAD_SHIM_STATUS, SystemTime::now()),
    };
    let resp = DeleteResponse {
        pid,
        exit_status: status,
        exited_at: Some(time::timestamp(at)).into(),
        ..Default::default()
    };
    resp.write_to_bytes().map_err(DeleteError::Encode)
}
