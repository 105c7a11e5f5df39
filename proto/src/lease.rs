//! Lease tokens: what the broker grants, in a form a GPU server can check
//! on its own.
//!
//! The broker signs a [`LeaseClaims`] with its ed25519 key; a GPU server that
//! knows the broker's public key verifies the token a client presents in its
//! `Hello` without asking the broker anything. The text form is
//!
//! ```text
//! gpl1.<base64url(claims as JSON)>.<base64url(ed25519 signature)>
//! ```
//!
//! with unpadded URL-safe base64, the signature taken over the ASCII bytes
//! `gpl1.<base64url(claims)>` (everything before the second dot). Public keys
//! are written `ed25519:<base64url(32 key bytes)>`.
//!
//! Plain functions over bytes and values; no I/O, no clock: callers pass the
//! time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version prefix of the token text.
pub const TOKEN_PREFIX: &str = "gpl1";
/// Prefix of the public key text.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";
/// Longest token text accepted; a real one is a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 16 << 10;

/// One GPU (or slice of one) a lease grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGpu {
    /// GPU UUID as the server reported it to the broker.
    pub uuid: String,
    /// Compute share in thousandths of the GPU (1000 = the whole GPU).
    pub compute_milli: u16,
    /// Device memory the holder may allocate on it.
    pub memory_mib: u64,
}

/// What a lease token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseClaims {
    /// The broker's lease identifier.
    pub lease_id: String,
    /// The GPU server the lease is for (its `GPUPOOL_SERVER_ID`).
    pub server_id: String,
    pub gpus: Vec<LeaseGpu>,
    pub tenant: String,
    /// When the token was issued, milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// When it stops being valid, milliseconds since the Unix epoch. Renewing
    /// the lease at the broker gives a new token with a later expiry.
    pub expires_at_ms: u64,
}

/// Why a token or key was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LeaseTokenError {
    #[error("lease token is malformed: {0}")]
    Malformed(String),
    #[error("lease token signature does not verify with the broker's public key (tampered with, or issued by another broker)")]
    BadSignature,
    #[error(
        "lease {lease_id} expired at {expires_at_ms} ms (now {now_ms} ms); renew it at the broker for a fresh token"
    )]
    Expired {
        lease_id: String,
        expires_at_ms: u64,
        now_ms: u64,
    },
    #[error("lease {lease_id} is for server {token_server:?}, not this server {this_server:?}; ask the broker for a lease on this server")]
    WrongServer {
        lease_id: String,
        token_server: String,
        this_server: String,
    },
    #[error("public key is malformed: {0} (expected ed25519:<base64url of 32 bytes>)")]
    BadPublicKey(String),
    #[error("signing key is malformed: {0}")]
    BadSigningKey(String),
}

/// The broker's side: issues tokens.
pub struct LeaseSigner {
    key: SigningKey,
}

impl std::fmt::Debug for LeaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSigner")
            .field("public_key", &self.public_key().to_text())
            .finish_non_exhaustive()
    }
}

impl LeaseSigner {
    /// A signer from a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> LeaseSigner {
        LeaseSigner {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The secret seed, for storing the key.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The seed as text (`ed25519-secret:<base64url>`), for a key file.
    pub fn to_text(&self) -> String {
        format!("ed25519-secret:{}", URL_SAFE_NO_PAD.encode(self.key.to_bytes()))
    }

    /// Reads what [`to_text`](Self::to_text) wrote.
    pub fn from_text(text: &str) -> Result<LeaseSigner, LeaseTokenError> {
        let body = text
            .trim()
            .strip_prefix("ed25519-secret:")
            .ok_or_else(|| LeaseTokenError::BadSigningKey("does not start with ed25519-secret:".into()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| LeaseTokenError::BadSigningKey(format!("not base64url: {e}")))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| LeaseTokenError::BadSigningKey(format!("{} bytes, expected 32", b.len())))?;
        Ok(LeaseSigner::from_seed(seed))
    }

    pub fn public_key(&self) -> LeasePublicKey {
        LeasePublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// Signs `claims` into the token text.
    pub fn sign(&self, claims: &LeaseClaims) -> String {
        // Serialising a plain struct of strings and integers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let mut text = String::with_capacity(TOKEN_PREFIX.len() + json.len() * 4 / 3 + 96);
        text.push_str(TOKEN_PREFIX);
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(&json, &mut text);
        let signature = self.key.sign(text.as_bytes());
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut text);
        text
    }
}

/// A GPU server's side: checks tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePublicKey {
    key: VerifyingKey,
}

impl LeasePublicKey {
    /// Parses `ed25519:<base64url>`.
    pub fn from_text(text: &str) -> Result<LeasePublicKey, LeaseTokenError> {
        let body = text
            .trim()
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or_else(|| LeaseTokenError::BadPublicKey(format!("does not start with {PUBLIC_KEY_PREFIX}")))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| LeaseTokenError::BadPublicKey(format!("not base64url: {e}")))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| LeaseTokenError::BadPublicKey(format!("{} bytes, expected 32", b.len())))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| LeaseTokenError::BadPublicKey("not a point on the curve".into()))?;
        Ok(LeasePublicKey { key })
    }

    pub fn to_text(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.key.to_bytes()))
    }

    /// Checks the signature only and returns the claims, whatever their
    /// expiry or server.
    pub fn verify_signature(&self, token: &str) -> Result<LeaseClaims, LeaseTokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(LeaseTokenError::Malformed(format!(
                "{} bytes, more than the {MAX_TOKEN_LEN} allowed",
                token.len()
            )));
        }
        let (signed, signature) = token
            .rsplit_once('.')
            .ok_or_else(|| LeaseTokenError::Malformed("expected gpl1.<claims>.<signature>".into()))?;
        let (prefix, claims) = signed
            .split_once('.')
            .ok_or_else(|| LeaseTokenError::Malformed("expected gpl1.<claims>.<signature>".into()))?;
        if prefix != TOKEN_PREFIX {
            return Err(LeaseTokenError::Malformed(format!(
                "version {prefix:?}, this build reads {TOKEN_PREFIX:?}"
            )));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|e| LeaseTokenError::Malformed(format!("signature is not base64url: {e}")))?;
        let signature = Signature::from_slice(&signature)
            .map_err(|_| LeaseTokenError::Malformed("signature is not 64 bytes".into()))?;
        self.key
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| LeaseTokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|e| LeaseTokenError::Malformed(format!("claims are not base64url: {e}")))?;
        serde_json::from_slice(&json).map_err(|e| LeaseTokenError::Malformed(format!("claims are not valid: {e}")))
    }

    /// Full check a GPU server makes: signature, expiry against `now_ms`, and
    /// that the lease names `server_id`.
    pub fn verify(&self, token: &str, server_id: &str, now_ms: u64) -> Result<LeaseClaims, LeaseTokenError> {
        let claims = self.verify_signature(token)?;
        if claims.server_id != server_id {
            return Err(LeaseTokenError::WrongServer {
                lease_id: claims.lease_id,
                token_server: claims.server_id,
                this_server: server_id.to_string(),
            });
        }
        if now_ms >= claims.expires_at_ms {
            return Err(LeaseTokenError::Expired {
                lease_id: claims.lease_id,
                expires_at_ms: claims.expires_at_ms,
                now_ms,
            });
        }
        Ok(claims)
    }
}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> LeaseClaims {
        LeaseClaims {
            lease_id: "L7".into(),
            server_id: "gpu-a".into(),
            gpus: vec![LeaseGpu {
                uuid: "GPU-1".into(),
                compute_milli: 250,
                memory_mib: 4096,
            }],
            tenant: "team".into(),
            issued_at_ms: 1_000,
            expires_at_ms: 2_000,
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let signer = LeaseSigner::from_seed([7; 32]);
        let key = LeasePublicKey::from_text(&signer.public_key().to_text()).unwrap();
        let token = signer.sign(&claims());
        assert!(token.starts_with("gpl1."));
        assert_eq!(key.verify(&token, "gpu-a", 1_500).unwrap(), claims());
        assert!(matches!(
            key.verify(&token, "gpu-a", 2_000),
            Err(LeaseTokenError::Expired { .. })
        ));
        assert!(matches!(
            key.verify(&token, "gpu-b", 1_500),
            Err(LeaseTokenError::WrongServer { .. })
        ));
        let other = LeaseSigner::from_seed([8; 32]).public_key();
        assert_eq!(other.verify(&token, "gpu-a", 1_500), Err(LeaseTokenError::BadSignature));
    }

    #[test]
    fn tampered_tokens_fail() {
        let signer = LeaseSigner::from_seed([7; 32]);
        let key = signer.public_key();
        let token = signer.sign(&claims());
        // Swap the claims for others, keeping the signature.
        let mut forged = claims();
        forged.gpus[0].compute_milli = 1000;
        let forged_text = signer.sign(&forged);
        let (_, forged_claims) = forged_text.split_once('.').unwrap();
        let forged_claims = forged_claims.rsplit_once('.').unwrap().0;
        let signature = token.rsplit_once('.').unwrap().1;
        let spliced = format!("gpl1.{forged_claims}.{signature}");
        assert_eq!(key.verify(&spliced, "gpu-a", 1_500), Err(LeaseTokenError::BadSignature));
        for bad in [
            "",
            "gpl1",
            "gpl1.x",
            "gpl2.a.b",
            "gpl1.!!.??",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                matches!(key.verify(bad, "gpu-a", 0), Err(LeaseTokenError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn key_texts_round_trip_and_reject_junk() {
        let signer = LeaseSigner::from_seed([9; 32]);
        let again = LeaseSigner::from_text(&signer.to_text()).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        assert!(LeasePublicKey::from_text("ed25519:AAAA").is_err());
        assert!(LeasePublicKey::from_text("rsa:AAAA").is_err());
        assert!(LeaseSigner::from_text("nonsense").is_err());
    }
}
