//! Versions and (in later issues) replication. For now: the hybrid logical clock that stamps
//! every logged batch.

pub mod hlc;
