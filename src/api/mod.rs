//! The wire adapters: the ttrpc server loop, the status table and conversions shared by both
//! APIs, and one adapter per API (`v1`: legacy shim API, `v2`: task API). The adapters never
//! import each other. Next to either API every shim serves shimgate's own `admin` service,
//! whose `Upgrade` hands the running shim over to a new binary (`crate::startup::upgrade`).

pub mod admin;
pub mod convert;
pub mod metrics;
pub mod server;
pub mod status;
pub mod v1;
pub mod v2;
