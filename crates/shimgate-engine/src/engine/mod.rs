//! The engine: containers, processes, the runc driver, exit routing and event ordering.
//! Knows nothing of protobuf, ttrpc or which API called it.

pub mod cgroup;
pub mod container;
pub mod error;
pub mod event;
pub mod exitfile;
mod guards;
pub mod handover;
pub mod lifecycle;
pub mod mount;
pub mod ops;
mod private_file;
pub mod runc;
pub mod runtime;
pub mod state;
pub mod types;

pub use error::{Error, Kind, Result};
pub use ops::{
    Addressing, ApiProfile, Engine, ProcessName, RuncFactory, RuntimeFactory, ShutdownPolicy,
};

#[cfg(test)]
mod tests;
