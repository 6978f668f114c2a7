//! The cluster key: the 32-byte secret every node of one cluster shares.
//!
//! It seals gossip datagrams (see `seal.rs`) and keys libp2p's private
//! network. On disk and on the command line it is standard base64 (44
//! characters), as printed by `agora keygen`; reading it accepts surrounding
//! whitespace so `agora keygen > FILE` round-trips.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;
use std::path::Path;

/// Length of the key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of the key's base64 text (`agora keygen` output without newline).
pub const KEY_BASE64_LEN: usize = 44;

/// The 32-byte secret shared by every node of a cluster (base64 in files).
#[derive(Clone)]
pub struct ClusterKey(pub [u8; 32]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret itself, not even in debug logs.
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl ClusterKey {
    /// A fresh random key, from the thread-local CSPRNG (ChaCha seeded and
    /// periodically reseeded from the operating system).
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::fill(&mut bytes[..]);
        ClusterKey(bytes)
    }

    /// Standard base64 of the 32 bytes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses base64 text (surrounding whitespace ignored).
    ///
    /// # Errors
    /// A message saying what is wrong and how to make a key (`agora keygen`).
    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            bail!(
                "the cluster key is empty: expected {KEY_BASE64_LEN} characters of base64 \
                 from `agora keygen`"
            );
        }
        if text.len() != KEY_BASE64_LEN {
            bail!(
                "expected {KEY_BASE64_LEN} characters of base64 from `agora keygen`, found {} \
                 characters; make a key with `agora keygen > FILE`",
                text.chars().count()
            );
        }
        let bytes = STANDARD.decode(text).map_err(|err| {
            anyhow::anyhow!(
                "the cluster key is not valid base64 ({err}); expected {KEY_BASE64_LEN} \
                 characters from `agora keygen`"
            )
        })?;
        let bytes: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "the cluster key decodes to {} bytes, expected {KEY_LEN}; make a key with \
                 `agora keygen`",
                bytes.len()
            )
        })?;
        Ok(ClusterKey(bytes))
    }

    /// Reads a key file written by `agora keygen > FILE`.
    ///
    /// On Unix, a file that other users can read is accepted with a warning
    /// in the log (anyone holding the key can join the cluster).
    ///
    /// # Errors
    /// Unreadable file or bad content, with the path in the message.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cluster key file {}: cannot read it", path.display()))?;
        let key = ClusterKey::from_base64(&text)
            .with_context(|| format!("cluster key file {}", path.display()))?;
        warn_if_shared(path);
        Ok(key)
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "cluster key file is readable by other users; consider `chmod 600`"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_base64() {
        let key = ClusterKey::generate();
        let text = key.to_base64();
        assert_eq!(text.len(), KEY_BASE64_LEN);
        let back = ClusterKey::from_base64(&format!("  {text}\n")).unwrap();
        assert_eq!(back.0, key.0);
        assert_ne!(ClusterKey::generate().0, key.0, "two keys should differ");
    }

    #[test]
    fn bad_text_is_explained() {
        let err = ClusterKey::from_base64("abc").unwrap_err().to_string();
        assert!(err.contains("expected 44 characters"), "{err}");
        assert!(err.contains("agora keygen"), "{err}");
        let err = ClusterKey::from_base64(&"!".repeat(44))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid base64"), "{err}");
        let err = ClusterKey::from_base64("\n").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("agora-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.key");
        let key = ClusterKey::generate();
        std::fs::write(&good, format!("{}\n", key.to_base64())).unwrap();
        assert_eq!(ClusterKey::load(&good).unwrap().0, key.0);

        let bad = dir.join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        let err = format!("{:#}", ClusterKey::load(&bad).unwrap_err());
        assert!(err.contains("bad.key"), "{err}");
        assert!(err.contains("expected 44 characters"), "{err}");

        let missing = dir.join("missing.key");
        let err = format!("{:#}", ClusterKey::load(&missing).unwrap_err());
        assert!(err.contains("missing.key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_does_not_leak_the_key() {
        let key = ClusterKey([7u8; 32]);
        assert_eq!(format!("{key:?}"), "ClusterKey(<redacted>)");
    }
}
