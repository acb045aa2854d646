//! The engine: containers, processes, the runc driver, exit routing and event ordering.
//! Knows nothing of protobuf, ttrpc or which API called it.

pub mod cgroup;
pub mod container;
pub mod engine;
pub mod error;
pub mod event;
pub mod exitfile;
mod guards;
pub mod handover;
pub mod lifecycle;
pub mod mount;
mod private_file;
pub mod runc;
pub mod runtime;
pub mod state;
pub mod types;

pub use engine::{
    Addressing, ApiProfile, Core, ProcessName, RuncFactory, RuntimeFactory, ShutdownPolicy,
};
pub use error::{Error, Kind, Result};

#[cfg(test)]
mod tests;
