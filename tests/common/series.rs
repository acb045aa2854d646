//! containerd series: the four generations of containerd the tests run shimgate under, and a
//! private [`Ctd`] of any of them.
//!
//! | series | binaries | config | runtime types it starts |
//! |---|---|---|---|
//! | 1.6 | Debian's `/usr/bin/containerd` 1.6.20 and `ctr` | version 2 | v1.linux, runc.v1, runc.v2 |
//! | 1.7 | peers' 1.7.34 (all three Go shims) | version 2, NRI off | v1.linux, runc.v1, runc.v2 |
//! | 2.2 | peers' 2.2.7 (Go runc.v2 shim) | version 3, NRI off | runc.v1, runc.v2 |
//! | 2.3 | peers' 2.3.4 (Go runc.v2 shim) | version 4 (native), NRI off | runc.v1, runc.v2 |
//!
//! containerd 2.x still starts `containerd-shim-runc-v1` by name (the runtime name maps to the
//! binary name; 2.3 even special-cases it in `pkg/shim/util.go` and hands it the options Any
//! instead of `BootstrapParams`); only the Go binary of that name is no longer shipped. The
//! legacy `io.containerd.runtime.v1.linux` is a containerd plugin that 2.x no longer has.
//!
//! A ctr-only daemon has CRI disabled (1.x: one plugin; 2.x: the three CRI plugins and the
//! pod-sandbox controller); with [`CriConfig`] CRI is on, configured for this kind of machine
//! (see the peers README). Every daemon uses the series' own `ctr`, with ctr 2.x's cgroup v1
//! deprecation warning suppressed so that stderr carries only what the container wrote.
//!
//! The API is meant to stay small and stable for other suites (the cgroup v2 guest):
//! `Ctd::start_series(Series::V2_3, Shims::Ours)`.

use std::path::{Path, PathBuf};

use super::peers::{peer_file, peers};
use super::{go_shim, which, Ctd, Runtime, Shims, RUNC_V1, RUNC_V2, V1_LINUX};

/// A containerd series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Series {
    /// Debian's containerd 1.6.20 (installed on the host).
    V1_6,
    /// Upstream 1.7.34 (peers).
    V1_7,
    /// Upstream 2.2.7 (peers).
    V2_2,
    /// Upstream 2.3.4 (peers).
    V2_3,
}

impl Series {
    pub const ALL: [Series; 4] = [Series::V1_6, Series::V1_7, Series::V2_2, Series::V2_3];

    /// "1.6", "1.7", "2.2", "2.3".
    pub fn name(self) -> &'static str {
        match self {
            Series::V1_6 => "1.6",
            Series::V1_7 => "1.7",
            Series::V2_2 => "2.2",
            Series::V2_3 => "2.3",
        }
    }

    /// The directory of this series inside the peers (None: the host's own containerd).
    fn peer_dir(self) -> Option<&'static str> {
        match self {
            Series::V1_6 => None,
            Series::V1_7 => Some("containerd-1.7.34"),
            Series::V2_2 => Some("containerd-2.2.7"),
            Series::V2_3 => Some("containerd-2.3.4"),
        }
    }

    /// A binary of this series (`containerd`, `ctr`, a Go shim); None when the series is not
    /// available (peers missing and not required) or, for the host's series, not installed.
    fn bin(self, name: &str) -> Option<PathBuf> {
        match self.peer_dir() {
            None => match name {
                "containerd" | "ctr" => which(name),
                shim => go_shim(shim),
            },
            Some(d) => {
                let root = peers()?;
                let p = root.join(d).join("bin").join(name);
                p.is_file().then_some(p)
            }
        }
    }

    /// The version a daemon of this series reports (`ctr version`'s server version starts so).
    pub fn version(self) -> &'static str {
        match self {
            Series::V1_6 => "1.6.",
            Series::V1_7 => "1.7.34",
            Series::V2_2 => "2.2.7",
            Series::V2_3 => "2.3.4",
        }
    }

    /// Whether this series can run here (the host's containerd, or the peers).
    pub fn available(self) -> bool {
        self.containerd().is_some()
    }

    pub fn containerd(self) -> Option<PathBuf> {
        match self.peer_dir() {
            None => which("containerd"),
            Some(d) => peer_file(&format!("{d}/bin/containerd")),
        }
    }

    pub fn ctr(self) -> Option<PathBuf> {
        match self.peer_dir() {
            None => which("ctr"),
            Some(d) => peer_file(&format!("{d}/bin/ctr")),
        }
    }

    /// The Go shim this series ships under `name` (2.x ships only `containerd-shim-runc-v2`).
    pub fn go_shim(self, name: &str) -> Option<PathBuf> {
        self.bin(name)
    }

    /// The runtime types this series starts (see the module docs).
    pub fn runtimes(self) -> &'static [Runtime] {
        match self {
            Series::V1_6 | Series::V1_7 => &[RUNC_V1, RUNC_V2, V1_LINUX],
            Series::V2_2 | Series::V2_3 => &[RUNC_V1, RUNC_V2],
        }
    }

    /// containerd's config format for this series.
    pub fn config_version(self) -> u32 {
        match self {
            Series::V1_6 | Series::V1_7 => 2,
            Series::V2_2 => 3,
            Series::V2_3 => 4,
        }
    }

    pub fn is_2x(self) -> bool {
        matches!(self, Series::V2_2 | Series::V2_3)
    }

    /// The containerd config for a private daemon of this series.
    pub fn config(self, p: &ConfigParams) -> String {
        let d = p.dir.display();
        let a = p.addr.display();
        let mut disabled: Vec<&str> = Vec::new();
        if p.cri.is_none() {
            if self.is_2x() {
                disabled.extend([
                    "io.containerd.grpc.v1.cri",
                    "io.containerd.cri.v1.images",
                    "io.containerd.cri.v1.runtime",
                    "io.containerd.podsandbox.controller.v1.podsandbox",
                ]);
            } else {
                disabled.push("io.containerd.grpc.v1.cri");
            }
        }
        let disabled = disabled
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = format!(
            "version = {v}\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [{disabled}]\n",
            v = self.config_version()
        );
        if self.config_version() >= 4 {
            s += &format!(
                "[plugins.\"io.containerd.server.v1.grpc\"]\n  address = \"{a}\"\n\
                 [plugins.\"io.containerd.server.v1.ttrpc\"]\n  address = \"{a}.ttrpc\"\n"
            );
        } else {
            s += &format!("[grpc]\n  address = \"{a}\"\n[ttrpc]\n  address = \"{a}.ttrpc\"\n");
        }
        s += &format!("[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n");
        if self != Series::V1_6 {
            // 1.7 has NRI off by default, 2.x on (on the machine-wide /var/run/nri/nri.sock).
            s += "[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n";
        }
        if self.runtimes().contains(&V1_LINUX) {
            s += &format!(
                "[plugins.\"io.containerd.runtime.v1.linux\"]\n  shim = \"{}/containerd-shim\"\n  runtime = \"runc\"\n",
                p.shims.display()
            );
        }
        if let Some(socket_dir) = &p.socket_dir {
            assert!(self == Series::V2_3, "socket_dir is a 2.3+ setting");
            s += &format!(
                "[plugins.\"io.containerd.shim.v1.manager\"]\n  socket_dir = \"{}\"\n",
                socket_dir.display()
            );
        }
        if let Some(cri) = p.cri {
            s += &self.cri_config(p.dir, cri);
        }
        s
    }

    fn cri_config(self, dir: &Path, cri: &CriConfig) -> String {
        let d = dir.display();
        let img = &cri.sandbox_image;
        let runtimes = |table: &str| {
            cri.handlers
                .iter()
                .map(|(h, rt)| {
                    format!(
                        "[{table}.containerd.runtimes.{h}]\n  runtime_type = \"{}\"\n",
                        rt.name
                    )
                })
                .collect::<String>()
        };
        let default = cri.handlers.first().map(|h| h.0.as_str()).unwrap_or("runc");
        // Root here lacks CAP_SYS_RESOURCE and has no AppArmor, no CNI plugins (host-network
        // pods only) and no registry: see the peers README.
        if self.is_2x() {
            let rt = "plugins.\"io.containerd.cri.v1.runtime\"";
            format!(
                "[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"overlayfs\"\n\
                 [plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = \"{img}\"\n\
                 [{rt}]\n  restrict_oom_score_adj = true\n  disable_apparmor = true\n\
                 [{rt}.cni]\n  bin_dirs = [\"{d}/cni/bin\"]\n  conf_dir = \"{d}/cni/conf\"\n\
                 [{rt}.containerd]\n  default_runtime_name = \"{default}\"\n{}\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n",
                runtimes(rt)
            )
        } else {
            let t = "plugins.\"io.containerd.grpc.v1.cri\"";
            format!(
                "[{t}]\n  sandbox_image = \"{img}\"\n  restrict_oom_score_adj = true\n  disable_apparmor = true\n\
                 \x20 stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n\
                 [{t}.cni]\n  bin_dir = \"{d}/cni/bin\"\n  conf_dir = \"{d}/cni/conf\"\n\
                 [{t}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"{default}\"\n{}",
                runtimes(t)
            )
        }
    }
}

impl std::fmt::Display for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// crictl from the peers (None when peers are missing and not required).
pub fn crictl() -> Option<PathBuf> {
    peer_file("cri-tools/bin/crictl")
}

/// CRI settings of a private daemon.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// The sandbox ("pause") image, imported by the test before any pod runs.
    pub sandbox_image: String,
    /// Runtime handlers (`crictl runp --runtime NAME`) and their runtime types; the first is the
    /// default.
    pub handlers: Vec<(String, Runtime)>,
}

/// What a config is written for.
pub struct ConfigParams<'a> {
    pub dir: &'a Path,
    pub addr: &'a Path,
    pub shims: &'a Path,
    pub cri: Option<&'a CriConfig>,
    /// 2.3+: the shim manager's `socket_dir` (sent to shims in `BootstrapParams`).
    pub socket_dir: Option<PathBuf>,
}

/// How to start a private containerd: [`Ctd::start_opts`].
#[derive(Debug, Clone)]
pub struct CtdOpts {
    pub series: Series,
    pub shims: Shims,
    /// Extra environment for containerd (and so its shims).
    pub env: Vec<(String, String)>,
    /// CRI on (namespace `k8s.io`), or off for a ctr-only daemon.
    pub cri: Option<CriConfig>,
    /// 2.3+: a shim socket directory (relative paths are taken inside the daemon's directory).
    pub socket_dir: Option<PathBuf>,
}

impl CtdOpts {
    pub fn new(series: Series, shims: Shims) -> CtdOpts {
        CtdOpts {
            series,
            shims,
            env: Vec::new(),
            cri: None,
            socket_dir: None,
        }
    }
}

impl Ctd {
    /// A private containerd of `series` running `shims`. None when the series is not available
    /// here (peers missing and not required; the skip is said once) or, with [`Shims::Go`], when
    /// the series ships no Go shim to compare with.
    pub fn start_series(series: Series, shims: Shims) -> Option<Ctd> {
        Self::start_opts(CtdOpts::new(series, shims))
    }

    /// The shim binaries of a daemon: (name, binary). shimgate under every name, or the Go
    /// shims of `series` for a [`Shims::Go`] daemon: 1.6 and 1.7 ship all three, 2.x only
    /// runc.v2 (a 2.x Go daemon asked for runc.v1 would find Debian's 1.6 binary in `PATH`:
    /// compare runc.v2 there).
    pub(super) fn shim_targets(
        series: Series,
        shims: Shims,
    ) -> Option<Vec<(&'static str, PathBuf)>> {
        let names = [
            "containerd-shim",
            "containerd-shim-runc-v1",
            "containerd-shim-runc-v2",
        ];
        let mut out = Vec::new();
        for n in names {
            match shims {
                Shims::Ours => out.push((n, super::shimgate_bin())),
                Shims::Go => match series.go_shim(n) {
                    Some(p) => out.push((n, p)),
                    None if series.is_2x() && n != "containerd-shim-runc-v2" => {}
                    None => return None,
                },
            }
        }
        Some(out)
    }
}
