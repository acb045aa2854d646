//! shimgate's wire-free layer: the [`engine`] (containers, processes, the runc driver, exit
//! routing and event ordering), a process's stdio ([`io`]), the one owner of `waitpid`
//! ([`reaper`]), the critical tasks' lifelines ([`supervise`]) and the poison-tolerant lock
//! ([`sync`]).
//!
//! Must not depend on protobuf, ttrpc or the generated wire types (shimgate-protos), nor on the
//! APIs above it: that is why it is a crate of its own, so a wire type here fails to compile
//! instead of waiting for a review. The root package re-exports these modules under the same
//! names (`shimgate::engine`, ...), and the module paths inside are the ones they had there.

pub mod engine;
pub mod io;
pub mod reaper;
pub mod supervise;
/// Public only because the root package's modules take the same lock helper; not an API.
#[doc(hidden)]
pub mod sync;
