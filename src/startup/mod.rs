//! Process start-up, not the wire: what turns this program into a serving shim daemon and
//! what hands a serving shim over to a new program image. `daemon`: the inherited listener
//! (fd 3), signals, the tokio runtime, the reaper and spawner, the serve loop shared by both
//! APIs; `upgrade`: the live upgrade (the new binary checked and loaded into a memfd, the
//! hand-over file, `execve`, adoption or rollback). The API adapters (`api::v1`, `api::v2`)
//! call into it to start; `resident`: what a serving shim drops from memory when quiet. It knows the server (`api::server`) and the `admin` service, but no
//! API's messages.

pub mod daemon;
pub mod resident;
pub mod upgrade;
