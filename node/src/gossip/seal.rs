//! Sealing of gossip datagrams with the cluster key.
//!
//! Every datagram that leaves the machine is one XChaCha20-Poly1305 AEAD
//! message:
//!
//! ```text
//! [ version: 1 byte = 1 ][ nonce: 24 random bytes ][ ciphertext ][ tag: 16 bytes ]
//! ```
//!
//! The associated data binds the format and the cluster id
//! (`"agora-gossip/1\0" || cluster_id`), so a datagram of another cluster
//! that happens to share the key, or of another format version, fails to
//! open. Nonces are random: 192 bits make collisions negligible without any
//! per-peer counter state. A datagram that fails to open is an error value,
//! never a panic, whatever its bytes.

use super::key::ClusterKey;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};

/// The format version byte at the start of every sealed datagram.
pub const SEAL_VERSION: u8 = 1;
/// Nonce length (XChaCha20).
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

const AAD_PREFIX: &[u8] = b"agora-gossip/1\0";

/// Why a datagram did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than a version byte, a nonce and a tag.
    #[error("datagram of {len} bytes is too short to be sealed gossip")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The version byte is not one this node speaks.
    #[error("datagram has seal version {version}, expected {SEAL_VERSION}")]
    Version {
        /// The version byte found.
        version: u8,
    },
    /// Authentication failed: another key, another cluster id, or tampering.
    #[error("datagram failed authentication (another cluster key or cluster id, or tampered)")]
    Auth,
}

/// Why a datagram could not be sealed (the AEAD refuses only absurd sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot seal a datagram of {len} bytes")]
pub struct SealError {
    /// The plaintext length.
    pub len: usize,
}

/// Seals and opens datagrams for one cluster.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
}

impl Sealer {
    /// A sealer for the cluster `cluster_id` keyed by `key`.
    pub fn new(key: &ClusterKey, cluster_id: &str) -> Self {
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&key.0));
        let mut aad = Vec::with_capacity(AAD_PREFIX.len() + cluster_id.len());
        aad.extend_from_slice(AAD_PREFIX);
        aad.extend_from_slice(cluster_id.as_bytes());
        Sealer { cipher, aad }
    }

    /// Seals `plain` into `out` (cleared first) with a fresh random nonce.
    ///
    /// # Errors
    /// [`SealError`] only if the AEAD refuses the length (far above any
    /// UDP datagram).
    pub fn seal(&self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce[..]);
        out.clear();
        out.reserve(plain.len() + OVERHEAD);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                &self.aad,
                &mut out[1 + NONCE_LEN..],
            )
            .map_err(|_| SealError { len: plain.len() })?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens a sealed `datagram` into `out` (cleared first).
    ///
    /// # Errors
    /// [`OpenError`] for anything that is not a datagram sealed by this
    /// cluster's key and id; `out` then holds no plaintext.
    pub fn open(&self, datagram: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        out.clear();
        if datagram.len() < OVERHEAD {
            return Err(OpenError::TooShort {
                len: datagram.len(),
            });
        }
        if datagram[0] != SEAL_VERSION {
            return Err(OpenError::Version {
                version: datagram[0],
            });
        }
        let nonce = XNonce::from_slice(&datagram[1..1 + NONCE_LEN]);
        let tag_start = datagram.len() - TAG_LEN;
        let tag = Tag::from_slice(&datagram[tag_start..]);
        out.extend_from_slice(&datagram[1 + NONCE_LEN..tag_start]);
        if self
            .cipher
            .decrypt_in_place_detached(nonce, &self.aad, out, tag)
            .is_err()
        {
            out.clear();
            return Err(OpenError::Auth);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8, cluster: &str) -> Sealer {
        Sealer::new(&ClusterKey([byte; 32]), cluster)
    }

    #[test]
    fn round_trip() {
        let s = sealer(1, "c");
        let mut sealed = Vec::new();
        let mut opened = Vec::new();
        for plain in [&b""[..], b"hello", &[0xAB; 65_000][..]] {
            s.seal(plain, &mut sealed).unwrap();
            assert_eq!(sealed.len(), plain.len() + OVERHEAD);
            s.open(&sealed, &mut opened).unwrap();
            assert_eq!(opened, plain);
        }
    }

    #[test]
    fn nonces_differ_between_seals() {
        let s = sealer(1, "c");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s.seal(b"same", &mut a).unwrap();
        s.seal(b"same", &mut b).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let s = sealer(1, "c");
        let mut sealed = Vec::new();
        s.seal(b"some gossip payload", &mut sealed).unwrap();
        let mut opened = Vec::new();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = s.open(&bad, &mut opened).unwrap_err();
            assert!(opened.is_empty());
            if i == 0 {
                assert_eq!(err, OpenError::Version { version: 0 });
            } else {
                assert_eq!(err, OpenError::Auth, "byte {i}");
            }
        }
    }

    #[test]
    fn wrong_key_or_cluster_is_rejected() {
        let mut sealed = Vec::new();
        sealer(1, "c").seal(b"payload", &mut sealed).unwrap();
        let mut opened = Vec::new();
        assert_eq!(
            sealer(2, "c").open(&sealed, &mut opened),
            Err(OpenError::Auth)
        );
        assert_eq!(
            sealer(1, "other").open(&sealed, &mut opened),
            Err(OpenError::Auth)
        );
        assert!(opened.is_empty());
    }

    #[test]
    fn short_and_garbage_datagrams_are_rejected_without_panic() {
        let s = sealer(1, "c");
        let mut opened = Vec::new();
        for len in 0..OVERHEAD {
            let d = vec![SEAL_VERSION; len];
            assert_eq!(s.open(&d, &mut opened), Err(OpenError::TooShort { len }));
        }
        // Deterministic pseudo-random garbage of many lengths.
        let mut x: u32 = 0x1234_5678;
        for len in 0..300 {
            let d: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert!(s.open(&d, &mut opened).is_err());
            let mut versioned = d.clone();
            if let Some(b) = versioned.first_mut() {
                *b = SEAL_VERSION;
            }
            assert!(s.open(&versioned, &mut opened).is_err());
        }
        // A plaintext chitchat-looking datagram is not gossip either.
        assert!(s.open(&[0x53, 0xB0, 0, 0, 1, 2, 3], &mut opened).is_err());
    }
}
