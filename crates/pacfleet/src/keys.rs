//! Minisign public keys: reading them from `.pub` files, fleet.yaml's `keys:` and a Host
//! manifest's `key:`, and the key ids minisign's tools print. A leaf: what keys mean (who may
//! sign what) is `trust`'s business; the manifest checks use this module to say a key is
//! malformed.

use std::path::Path;

use minisign::{PublicKey, SignatureBox};

/// A public key and the name it is known by.
#[derive(Debug, Clone)]
pub struct Key {
    /// File stem or fleet.yaml name.
    pub name: String,
    /// The key.
    pub key: PublicKey,
}

impl Key {
    /// minisign's key id, as its tools print it (16 uppercase hex digits).
    pub fn id(&self) -> String {
        key_id(&self.key)
    }

    /// What makes two keys the same key: the Ed25519 public key bytes (not the key id).
    pub(crate) fn identity(&self) -> Vec<u8> {
        let bytes = self.key.to_bytes();
        bytes[bytes.len().saturating_sub(32)..].to_vec()
    }

    /// The public key as the base64 line of a `.pub` file.
    pub fn to_base64(&self) -> String {
        self.key.to_base64()
    }
}

/// minisign's key id of `pk` (16 uppercase hex digits).
pub(crate) fn key_id(pk: &PublicKey) -> String {
    let bytes = pk.to_bytes();
    // sig_alg (2 bytes) then the key id (8 bytes, little endian).
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[2..10]);
    format!("{:016X}", u64::from_le_bytes(id))
}

/// The key id a signature names, as [`Key::id`] prints key ids.
pub(crate) fn sig_key_id(sig: &SignatureBox) -> String {
    let mut id = [0u8; 8];
    id.copy_from_slice(&sig.keynum()[..8]);
    format!("{:016X}", u64::from_le_bytes(id))
}

/// Reading a key failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use {what} as a minisign public key: {detail}; it must be a `.pub` file made by `fleetctl keygen` or `minisign -G`"
)]
pub struct KeyError {
    what: String,
    detail: String,
}

/// Parses a public key from the text of a `.pub` file or its base64 line alone.
pub fn parse_key(name: &str, text: &str) -> Result<Key, KeyError> {
    let err = |detail: String| KeyError {
        what: name.to_owned(),
        detail,
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or_else(|| err("it is empty".into()))?;
    if !line.starts_with("RW") {
        return Err(err(format!(
            "`{line}` is not a minisign Ed25519 public key (those start with RW)"
        )));
    }
    let key = PublicKey::from_base64(line).map_err(|e| err(e.to_string()))?;
    Ok(Key {
        name: name.to_owned(),
        key,
    })
}

/// Reads a `.pub` file; the key's name is the file stem.
pub fn load_key(path: &Path) -> Result<Key, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyError {
        what: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let name = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    parse_key(&name, &text).map_err(|e| KeyError {
        what: path.display().to_string(),
        detail: e.detail,
    })
}
