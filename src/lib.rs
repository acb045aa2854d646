//! shimgate: one containerd shim binary with three wire personalities (shim v1, runc.v1,
//! runc.v2) over one runc-driving core. `main.rs` only picks the personality from argv[0] and
//! calls [`run`]; everything else lives in the modules below (see README's architecture section).

pub mod cli;
pub mod core;
pub mod protos;
