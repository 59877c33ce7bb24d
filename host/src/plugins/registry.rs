//! The plugins of one database in memory (being written).

/// The plugins of one database.
#[derive(Default)]
pub struct Registry {}
