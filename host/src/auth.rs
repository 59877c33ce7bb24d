//! API tokens with roles. A token is `vg_<id>_<secret>`: the id (12 hex digits) names it in
//! lists and revocations, the secret (48 hex digits, 192 random bits) is shown once and stored
//! only as its SHA-256. Checks run against an in-memory copy of the table, updated on every
//! change, so a revoked token is refused from the next request on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{NewToken, Role, TokenInfo};
use crate::store::{Store, StoredToken};

/// Why a request's token was refused. The texts go back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("this request needs an API token (pass --token or set VEKTAGRAF_TOKEN)")]
    Missing,
    #[error("the API token is malformed (expected vg_<id>_<secret>)")]
    Malformed,
    #[error("the API token is not valid on this node (unknown or revoked)")]
    Unknown,
    #[error("the token's role `{has}` may not {what} (needs `{needs}`)")]
    Forbidden {
        has: Role,
        needs: Role,
        what: &'static str,
    },
}

struct Entry {
    info: TokenInfo,
    secret_sha256: [u8; 32],
}

pub struct Tokens {
    store: Arc<Store>,
    by_id: RwLock<HashMap<String, Entry>>,
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| Error::Storage(format!("no randomness for a token: {e}")))?;
    Ok(hex(&buf))
}

/// Splits `vg_<id>_<secret>`.
fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("vg_")?;
    let (id, secret) = rest.split_once('_')?;
    let hexy = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hexy(id, 12) && hexy(secret, 48)).then_some((id, secret))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Tokens {
    pub(crate) fn load(store: Arc<Store>) -> Result<Self> {
        let mut by_id = HashMap::new();
        for (id, t) in store.tokens()? {
            let role = t.role.parse().map_err(|_| {
                Error::Storage(format!("token `{id}` has unknown role `{}`", t.role))
            })?;
            by_id.insert(
                id.clone(),
                Entry {
                    info: TokenInfo {
                        id,
                        name: t.name,
                        role,
                        created_ms: t.created_ms,
                    },
                    secret_sha256: t.secret_sha256,
                },
            );
        }
        Ok(Self {
            store,
            by_id: RwLock::new(by_id),
        })
    }

    /// Creates a token; its secret is in the answer and nowhere else.
    pub fn create(&self, name: &str, role: Role) -> Result<NewToken> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "a token name must be 1 to 128 characters without control characters",
            ));
        }
        let id = random_hex(6)?;
        let secret = random_hex(24)?;
        let info = self.insert(&id, &secret, name, role)?;
        Ok(NewToken {
            info,
            token: format!("vg_{id}_{secret}"),
        })
    }

    /// Accepts a token made elsewhere (another node, a secret store) with this role, keeping
    /// only its hash. A token already known keeps its entry.
    pub fn ensure(&self, token: &str, name: &str, role: Role) -> Result<()> {
        let (id, secret) = split(token).ok_or_else(|| {
            Error::invalid("the admin token file must hold a token like vg_<12 hex>_<48 hex>")
        })?;
        if self.check(token).is_ok() {
            return Ok(());
        }
        self.insert(id, secret, name, role).map(drop)
    }

    /// Stores a token's hash durably, then makes it valid.
    fn insert(&self, id: &str, secret: &str, name: &str, role: Role) -> Result<TokenInfo> {
        let stored = StoredToken {
            name: name.to_owned(),
            role: role.to_string(),
            secret_sha256: sha256(secret),
            created_ms: now_ms(),
        };
        self.store.put_token(id, &stored)?;
        let info = TokenInfo {
            id: id.to_owned(),
            name: stored.name,
            role,
            created_ms: stored.created_ms,
        };
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.to_owned(),
                Entry {
                    info: info.clone(),
                    secret_sha256: stored.secret_sha256,
                },
            );
        Ok(info)
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Vec<TokenInfo> {
        let map = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<TokenInfo> = map.values().map(|e| e.info.clone()).collect();
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Revokes by id (or by the whole token). False if there was no such token.
    pub fn revoke(&self, id_or_token: &str) -> Result<bool> {
        let id = split(id_or_token).map_or(id_or_token, |(id, _)| id);
        let existed = self.store.delete_token(id)?;
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(existed)
    }

    /// The role of a presented token.
    pub fn check(&self, token: &str) -> Result<Role, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let (id, secret) = split(token).ok_or(AuthError::Malformed)?;
        let map = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        let entry = map.get(id).ok_or(AuthError::Unknown)?;
        // Compare every byte, so the time taken says nothing about how much matched.
        let presented = sha256(secret);
        let diff = presented
            .iter()
            .zip(entry.secret_sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(AuthError::Unknown);
        }
        Ok(entry.info.role)
    }

    /// Checks a token against the role an operation needs.
    pub fn authorize(
        &self,
        token: &str,
        needs: Role,
        what: &'static str,
    ) -> Result<Role, AuthError> {
        let has = self.check(token)?;
        if has < needs {
            return Err(AuthError::Forbidden { has, needs, what });
        }
        Ok(has)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_roles_and_revocation() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let store = Arc::new(Store::open(dir.path())?);
        let tokens = Tokens::load(store.clone())?;
        let reader = tokens.create("app", Role::Read)?;
        assert_eq!(tokens.check(&reader.token), Ok(Role::Read));
        assert_eq!(
            tokens.authorize(&reader.token, Role::Write, "write"),
            Err(AuthError::Forbidden {
                has: Role::Read,
                needs: Role::Write,
                what: "write"
            })
        );
        // A wrong secret with a real id, a malformed token, none at all.
        let forged = format!("{}{}", &reader.token[..reader.token.len() - 1], "0");
        let forged = if forged == reader.token {
            format!("{}1", &reader.token[..reader.token.len() - 1])
        } else {
            forged
        };
        assert_eq!(tokens.check(&forged), Err(AuthError::Unknown));
        assert_eq!(tokens.check("secret"), Err(AuthError::Malformed));
        assert_eq!(tokens.check(""), Err(AuthError::Missing));
        // Tokens survive a reopen (hashed), and revocation takes effect at once.
        drop(tokens);
        let tokens = Tokens::load(store)?;
        assert_eq!(tokens.check(&reader.token), Ok(Role::Read));
        assert_eq!(tokens.list().len(), 1);
        assert!(tokens.revoke(&reader.info.id)?);
        assert_eq!(tokens.check(&reader.token), Err(AuthError::Unknown));
        assert!(!tokens.revoke(&reader.info.id)?);
        Ok(())
    }
}
