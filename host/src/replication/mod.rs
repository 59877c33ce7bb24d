//! Versions, conflicts and replication between regions: the hybrid logical clock that stamps
//! every logged batch (`hlc`), per-key versions and the conflict policies (`version`), and the
//! replication protocol as a state machine without I/O (`core`), driven over QUIC by the node.

pub mod core;
pub mod driver;
pub mod hlc;
pub mod state_sync;
pub mod tls;
pub mod version;
