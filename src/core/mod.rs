//! The engine: containers, processes, the runc driver, exit routing and event ordering.
//! Knows nothing of protobuf, ttrpc or which API called it.

pub mod cgroup;
pub mod mount;
