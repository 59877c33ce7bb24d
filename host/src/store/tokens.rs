//! The `tokens` table: API tokens by id, each with the SHA-256 of its secret and its role.
//! Token changes are node-local (not in the operation log).

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::records::{decode, encode};
use super::{Store, TOKENS};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub name: String,
    /// `read`, `write` or `admin`.
    pub role: String,
    pub secret_sha256: [u8; 32],
    pub created_ms: u64,
}

impl Store {
    pub fn tokens(&self) -> Result<Vec<(String, StoredToken)>> {
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(TOKENS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, v) = row?;
            out.push((id.value().to_owned(), decode("token", v.value())?));
        }
        Ok(out)
    }

    /// Stores a token durably.
    pub fn put_token(&self, id: &str, token: &StoredToken) -> Result<()> {
        let txn = self.redb_write()?;
        txn.open_table(TOKENS)?
            .insert(id, encode(token)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Removes a token durably; false if there was none.
    pub fn delete_token(&self, id: &str) -> Result<bool> {
        let txn = self.redb_write()?;
        let existed = txn.open_table(TOKENS)?.remove(id)?.is_some();
        txn.commit()?;
        Ok(existed)
    }
}
