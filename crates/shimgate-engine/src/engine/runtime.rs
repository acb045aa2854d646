//! The OCI runtime seen by the core: the operations it needs, whatever binary provides them.
//! `runc/` implements this by driving a runc-compatible CLI (runc, crun, youki); tests of the
//! core can implement it with a fake.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::error::Result;
use super::types::CheckpointSpec;

/// The stdio a runtime invocation hands to the container process.
pub use crate::io::ContainerStdio as RuntimeStdio;

/// Options of `create` (init) and `restore`.
#[derive(Default)]
pub struct CreateOpts {
    pub pid_file: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub stdio: RuntimeStdio,
}

/// Options of `exec --detach`.
#[derive(Default)]
pub struct ExecOpts {
    pub pid_file: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub stdio: RuntimeStdio,
}

/// Options of `restore` beyond the create ones.
#[derive(Default)]
pub struct RestoreOpts {
    pub create: CreateOpts,
    pub checkpoint: CheckpointSpec,
}

#[async_trait]
pub trait OciRuntime: Send + Sync {
    /// `create`: the init process exists, stopped before the user command, when this returns.
    async fn create(&self, id: &str, bundle: &Path, opts: CreateOpts) -> Result<()>;
    async fn start(&self, id: &str) -> Result<()>;
    /// `exec --detach` of the OCI `Process` JSON `process`.
    async fn exec(&self, id: &str, bundle: &Path, process: &[u8], opts: ExecOpts) -> Result<()>;
    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()>;
    async fn delete(&self, id: &str, force: bool) -> Result<()>;
    async fn pause(&self, id: &str) -> Result<()>;
    async fn resume(&self, id: &str) -> Result<()>;
    async fn ps(&self, id: &str) -> Result<Vec<u32>>;
    /// `update --resources -` with the LinuxResources JSON.
    async fn update(&self, id: &str, resources: &[u8]) -> Result<()>;
    async fn checkpoint(&self, id: &str, bundle: &Path, spec: &CheckpointSpec) -> Result<()>;
    async fn restore(&self, id: &str, bundle: &Path, opts: RestoreOpts) -> Result<()>;
}
