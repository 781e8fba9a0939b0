//! Capability tokens: an HMAC-SHA256 over a job id and an expiry, keyed by the cluster secret.
//!
//! Whoever holds the cluster secret (the driver, an operator) mints a token per job and hands it
//! to that job's functions; a node accepts a request for a job's objects only with an unexpired
//! token for that job. The clock is passed in: `now_ms` is milliseconds since the Unix epoch.

use std::fmt;
use std::str::FromStr;

use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::ids::JobId;

/// Bytes of a cluster secret.
pub const SECRET_LEN: usize = 32;

/// The key that signs and checks tokens.
#[derive(Clone)]
pub struct ClusterSecret(hmac::Key, [u8; SECRET_LEN]);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A secret from its bytes.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, &bytes), bytes)
    }

    /// A fresh random secret from the system's generator.
    pub fn generate() -> crate::Result<Self> {
        let mut bytes = [0u8; SECRET_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
            crate::Error::Config {
                field: "cluster secret".into(),
                reason: "the system's random generator failed".into(),
            }
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// The secret's bytes, to store it.
    pub fn to_bytes(&self) -> [u8; SECRET_LEN] {
        self.1
    }

    fn message(job: JobId, expires_ms: u64) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&job.0.to_le_bytes());
        m[8..].copy_from_slice(&expires_ms.to_le_bytes());
        m
    }

    /// A token for `job` valid until `expires_ms`.
    pub fn mint(&self, job: JobId, expires_ms: u64) -> Token {
        let tag = hmac::sign(&self.0, &Self::message(job, expires_ms));
        let mut mac = [0u8; 32];
        mac.copy_from_slice(tag.as_ref());
        Token { job, expires_ms, mac }
    }

    /// Checks that `token` was minted with this secret, is for `job`, and has not expired.
    pub fn verify(&self, token: &Token, job: JobId, now_ms: u64) -> Result<(), TokenError> {
        hmac::verify(&self.0, &Self::message(token.job, token.expires_ms), &token.mac)
            .map_err(|_| TokenError::BadSignature)?;
        if token.job != job {
            return Err(TokenError::OtherJob { token_job: token.job });
        }
        if now_ms >= token.expires_ms {
            return Err(TokenError::Expired { expired_ms_ago: now_ms - token.expires_ms });
        }
        Ok(())
    }
}

/// A capability for one job's objects until an expiry. Its `Debug` leaves out the MAC, so a
/// token in a log line cannot be replayed.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The job it grants access to.
    pub job: JobId,
    /// When it stops working, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// The HMAC-SHA256 of job and expiry.
    pub mac: [u8; 32],
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not minted with this cluster's secret, or altered.
    #[error("the token's signature does not check (another cluster's, or altered)")]
    BadSignature,
    /// Minted for another job.
    #[error("the token is for {token_job}, not this job")]
    OtherJob {
        /// The job the token is for.
        token_job: JobId,
    },
    /// Past its expiry.
    #[error("the token expired {expired_ms_ago} ms ago; ask for a new one")]
    Expired {
        /// How long ago.
        expired_ms_ago: u64,
    },
    /// Not a token at all.
    #[error("not a token (expected 96 hex digits)")]
    Malformed,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("job", &self.job).field("expires_ms", &self.expires_ms).finish_non_exhaustive()
    }
}

impl fmt::Display for Token {
    /// Hex: job (16), expiry (16), mac (64).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.job.0, self.expires_ms)?;
        self.mac.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.len() != 96 || !s.is_ascii() {
            return Err(TokenError::Malformed);
        }
        let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&s[r], 16).map_err(|_| TokenError::Malformed);
        let mut mac = [0u8; 32];
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[32 + 2 * i..34 + 2 * i], 16).map_err(|_| TokenError::Malformed)?;
        }
        Ok(Token { job: JobId(hex(0..16)?), expires_ms: hex(16..32)?, mac })
    }
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_one_job_until_they_expire() {
        let secret = ClusterSecret::generate().unwrap();
        let token = secret.mint(JobId(7), 10_000);
        secret.verify(&token, JobId(7), 9_999).unwrap();
        assert_eq!(secret.verify(&token, JobId(8), 0), Err(TokenError::OtherJob { token_job: JobId(7) }));
        assert_eq!(secret.verify(&token, JobId(7), 10_500), Err(TokenError::Expired { expired_ms_ago: 500 }));
        let mut forged = token;
        forged.job = JobId(8);
        assert_eq!(secret.verify(&forged, JobId(8), 0), Err(TokenError::BadSignature));
        let other = ClusterSecret::generate().unwrap();
        assert_eq!(other.verify(&token, JobId(7), 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn tokens_round_trip_as_text() {
        let token = ClusterSecret::generate().unwrap().mint(JobId(0xabc), 123_456);
        assert_eq!(token.to_string().parse::<Token>().unwrap(), token);
        assert_eq!("zz".parse::<Token>(), Err(TokenError::Malformed));
    }
}
