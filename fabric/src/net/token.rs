//! Capability tokens: an Ed25519 signature over a job id, an expiry, scopes and an audience.
//!
//! Whoever holds the cluster's token key (the driver, an operator: where `baton certs` made the
//! cluster) mints a token per job and hands it to that job's functions. Nodes hold only the
//! public key, so a node that is broken into cannot mint tokens for other jobs. A node accepts
//! a request for a job's objects only with an unexpired token for that job, whose scopes cover
//! the operation (read, write, end) and whose audience is any node or this one. The clock is
//! passed in: `now_ms` is milliseconds since the Unix epoch.

use std::fmt;
use std::str::FromStr;

use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

use crate::ids::JobId;

/// Bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of a signature.
pub(crate) const SIGNATURE_LEN: usize = 64;
/// Hex digits of a token's text.
const TOKEN_HEX: usize = 2 * (8 + 8 + 1 + 8 + SIGNATURE_LEN);

/// What a token lets its holder do with the job's objects.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scopes(pub(crate) u8);

impl Scopes {
    /// Read objects: get, list, map for RDMA.
    pub const READ: Scopes = Scopes(1);
    /// Write objects: put, delete.
    pub const WRITE: Scopes = Scopes(2);
    /// Manage the job: open, renew and end its lease (which deletes its objects).
    pub const END: Scopes = Scopes(4);
    /// Everything.
    pub const ALL: Scopes = Scopes(7);
    /// Nothing (a `Hello` needs no token).
    pub const NONE: Scopes = Scopes(0);

    /// Whether these scopes include all of `other`.
    pub fn covers(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    fn names(self) -> Vec<&'static str> {
        [(Self::READ, "read"), (Self::WRITE, "write"), (Self::END, "end")]
            .into_iter()
            .filter(|(s, _)| self.covers(*s))
            .map(|(_, n)| n)
            .collect()
    }
}

impl std::ops::BitOr for Scopes {
    type Output = Scopes;
    fn bitor(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        f.write_str(if names.is_empty() { "none" } else { "" })?;
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Scopes {
    type Err = String;

    /// `read`, `write`, `end`, separated by commas, or `all`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut scopes = Scopes::NONE;
        for name in s.split(',').map(str::trim) {
            scopes = scopes
                | match name {
                    "read" => Scopes::READ,
                    "write" => Scopes::WRITE,
                    "end" => Scopes::END,
                    "all" => Scopes::ALL,
                    other => return Err(format!("unknown scope {other:?}: use read, write, end or all")),
                };
        }
        Ok(scopes)
    }
}

/// Which nodes a token is for: any node of the cluster, or the one with a given name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Audience(pub(crate) u64);

impl Audience {
    /// Every node of the cluster.
    pub const ANY: Audience = Audience(0);

    /// The node whose certificate names `name` (an address or a host name).
    pub fn node(name: &str) -> Audience {
        let digest = ring::digest::digest(&ring::digest::SHA256, name.trim().to_ascii_lowercase().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        // 0 means "any": a name never hashes there.
        Audience(u64::from_le_bytes(first).max(1))
    }
}

/// The key that mints tokens (an Ed25519 key pair). Only where the cluster was made.
pub struct TokenKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A fresh key from the system's generator.
    pub fn generate() -> crate::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| crate::Error::Config {
            field: "token key".into(),
            reason: "the system's random generator failed".into(),
        })?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A key from its PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> crate::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| crate::Error::Config {
            field: "token key".into(),
            reason: format!("not an Ed25519 key in PKCS#8: {e}"),
        })?;
        Ok(Self { pair, pkcs8: pkcs8.to_vec() })
    }

    /// The key's PKCS#8 document, to store it.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key that checks this key's tokens.
    pub fn public(&self) -> TokenPublicKey {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        TokenPublicKey(bytes)
    }

    /// The signature of an invocation: `body` (a task, as sent), valid until `expires_ms`.
    pub fn sign_invocation(&self, body: &[u8], expires_ms: u64) -> String {
        let signature = self.pair.sign(&invocation_message(body, expires_ms));
        signature.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A token for `job`, valid until `expires_ms`, for `scopes`, at `audience`.
    pub fn mint(&self, job: JobId, expires_ms: u64, scopes: Scopes, audience: Audience) -> Token {
        let mut token = Token { job, expires_ms, scopes, audience, signature: [0; SIGNATURE_LEN] };
        let signature = self.pair.sign(&token.message());
        token.signature.copy_from_slice(signature.as_ref());
        token
    }
}

/// The public key that checks tokens: what nodes hold.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenPublicKey([u8; PUBLIC_KEY_LEN]);

impl fmt::Debug for TokenPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenPublicKey({self})")
    }
}

impl fmt::Display for TokenPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for TokenPublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = unhex(s.trim()).filter(|b| b.len() == PUBLIC_KEY_LEN);
        let bytes = bytes.ok_or_else(|| format!("expected {} hex digits", 2 * PUBLIC_KEY_LEN))?;
        let mut key = [0u8; PUBLIC_KEY_LEN];
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }
}

/// What an invocation's signature covers: its expiry and its body's digest.
fn invocation_message(body: &[u8], expires_ms: u64) -> Vec<u8> {
    let mut m = b"batoninv".to_vec();
    m.extend_from_slice(&expires_ms.to_le_bytes());
    m.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
    m
}

/// Why an invocation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvocationError {
    /// It carried no signature.
    #[error("the invocation is not signed (this worker runs only invocations signed with its cluster's key)")]
    Unsigned,
    /// Its signature does not check.
    #[error("the invocation's signature does not check (another cluster's, or altered)")]
    BadSignature,
    /// Past its expiry.
    #[error("the invocation expired {0} ms ago")]
    Expired(u64),
}

impl TokenPublicKey {
    /// Checks an invocation's `signature` (hex) over `body` and `expires_ms`, at `now_ms`.
    pub fn verify_invocation(
        &self,
        body: &[u8],
        expires_ms: Option<u64>,
        signature: Option<&str>,
        now_ms: u64,
    ) -> Result<(), InvocationError> {
        let (Some(expires_ms), Some(signature)) = (expires_ms, signature) else {
            return Err(InvocationError::Unsigned);
        };
        let signature = unhex(signature.trim()).ok_or(InvocationError::BadSignature)?;
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(&invocation_message(body, expires_ms), &signature)
            .map_err(|_| InvocationError::BadSignature)?;
        if now_ms >= expires_ms {
            return Err(InvocationError::Expired(now_ms - expires_ms));
        }
        Ok(())
    }

    /// Checks that `token` was minted with this cluster's key, is for `job`, covers `needed`,
    /// is for one of `audiences` (this node's names) or any node, and has not expired.
    pub fn verify(
        &self,
        token: &Token,
        job: JobId,
        needed: Scopes,
        audiences: &[Audience],
        now_ms: u64,
    ) -> Result<(), TokenError> {
        self.verify_signature(token)?;
        Self::verify_claims(token, job, needed, audiences, now_ms)
    }

    /// Checks only that `token` was minted with this cluster's key (the costly part of
    /// [`TokenPublicKey::verify`]: a server that caches tokens whose signature checked runs
    /// [`TokenPublicKey::verify_claims`] for each request).
    pub fn verify_signature(&self, token: &Token) -> Result<(), TokenError> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(&token.message(), &token.signature)
            .map_err(|_| TokenError::BadSignature)
    }

    /// Checks what [`TokenPublicKey::verify`] checks but the signature: the job, the node, the
    /// scopes and the expiry.
    pub fn verify_claims(
        token: &Token,
        job: JobId,
        needed: Scopes,
        audiences: &[Audience],
        now_ms: u64,
    ) -> Result<(), TokenError> {
        if token.job != job {
            return Err(TokenError::OtherJob { token_job: token.job });
        }
        if token.audience != Audience::ANY && !audiences.contains(&token.audience) {
            return Err(TokenError::OtherNode);
        }
        if !token.scopes.covers(needed) {
            return Err(TokenError::Scope { needed, granted: token.scopes });
        }
        if now_ms >= token.expires_ms {
            return Err(TokenError::Expired { expired_ms_ago: now_ms - token.expires_ms });
        }
        Ok(())
    }
}

/// A capability for one job's objects until an expiry. Its `Debug` leaves out the signature,
/// so a token in a log line cannot be replayed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The job it grants access to.
    pub job: JobId,
    /// When it stops working, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// What it lets its holder do.
    pub scopes: Scopes,
    /// Which nodes accept it.
    pub audience: Audience,
    /// The Ed25519 signature of the rest.
    pub signature: [u8; SIGNATURE_LEN],
}

impl Token {
    fn message(&self) -> [u8; 40] {
        let mut m = [0u8; 40];
        m[..8].copy_from_slice(b"batontk1");
        m[8..16].copy_from_slice(&self.job.0.to_le_bytes());
        m[16..24].copy_from_slice(&self.expires_ms.to_le_bytes());
        m[24] = self.scopes.0;
        m[32..40].copy_from_slice(&self.audience.0.to_le_bytes());
        m
    }
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not minted with this cluster's key, or altered.
    #[error("the token's signature does not check (another cluster's, or altered)")]
    BadSignature,
    /// Minted for another job.
    #[error("the token is for {token_job}, not this job")]
    OtherJob {
        /// The job the token is for.
        token_job: JobId,
    },
    /// Minted for another node.
    #[error("the token is for another node (its audience names none of this node's names)")]
    OtherNode,
    /// Its scopes do not cover the operation.
    #[error("the token grants {granted}, and this needs {needed}")]
    Scope {
        /// What the operation needs.
        needed: Scopes,
        /// What the token grants.
        granted: Scopes,
    },
    /// Past its expiry.
    #[error("the token expired {expired_ms_ago} ms ago; ask for a new one")]
    Expired {
        /// How long ago.
        expired_ms_ago: u64,
    },
    /// Not a token at all.
    #[error("not a token (expected {TOKEN_HEX} hex digits)")]
    Malformed,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("job", &self.job)
            .field("expires_ms", &self.expires_ms)
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Token {
    /// Hex: job (16), expiry (16), scopes (2), audience (16), signature (128).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}{:02x}{:016x}", self.job.0, self.expires_ms, self.scopes.0, self.audience.0)?;
        self.signature.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.len() != TOKEN_HEX || !s.is_ascii() {
            return Err(TokenError::Malformed);
        }
        let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&s[r], 16).map_err(|_| TokenError::Malformed);
        let scopes = u8::from_str_radix(&s[32..34], 16).map_err(|_| TokenError::Malformed)?;
        let bytes = unhex(&s[50..]).ok_or(TokenError::Malformed)?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes);
        Ok(Token {
            job: JobId(hex(0..16)?),
            expires_ms: hex(16..32)?,
            scopes: Scopes(scopes),
            audience: Audience(hex(34..50)?),
            signature,
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// A job token on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireToken {
    job: u64,
    expires_ms: u64,
    scopes: u8,
    audience: u64,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

impl From<Token> for WireToken {
    fn from(t: Token) -> Self {
        Self {
            job: t.job.0,
            expires_ms: t.expires_ms,
            scopes: t.scopes.0,
            audience: t.audience.0,
            signature: t.signature.to_vec(),
        }
    }
}

impl TryFrom<WireToken> for Token {
    type Error = TokenError;

    /// A token whose signature is not 64 bytes is malformed (and could never check).
    fn try_from(t: WireToken) -> Result<Self, TokenError> {
        let signature = <[u8; SIGNATURE_LEN]>::try_from(t.signature.as_slice()).map_err(|_| TokenError::Malformed)?;
        Ok(Token {
            job: JobId(t.job),
            expires_ms: t.expires_ms,
            scopes: Scopes(t.scopes),
            audience: Audience(t.audience),
            signature,
        })
    }
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Audience] = &[];

    #[test]
    fn tokens_grant_one_job_until_they_expire() {
        let key = TokenKey::generate().unwrap();
        let public = key.public();
        let token = key.mint(JobId(7), 10_000, Scopes::ALL, Audience::ANY);
        public.verify(&token, JobId(7), Scopes::READ, ALL, 9_999).unwrap();
        assert_eq!(
            public.verify(&token, JobId(8), Scopes::READ, ALL, 0),
            Err(TokenError::OtherJob { token_job: JobId(7) })
        );
        assert_eq!(
            public.verify(&token, JobId(7), Scopes::READ, ALL, 10_500),
            Err(TokenError::Expired { expired_ms_ago: 500 })
        );
        let mut forged = token;
        forged.job = JobId(8);
        assert_eq!(public.verify(&forged, JobId(8), Scopes::READ, ALL, 0), Err(TokenError::BadSignature));
        let mut widened = key.mint(JobId(7), 10_000, Scopes::READ, Audience::ANY);
        widened.scopes = Scopes::ALL;
        assert_eq!(public.verify(&widened, JobId(7), Scopes::WRITE, ALL, 0), Err(TokenError::BadSignature));
        let other = TokenKey::generate().unwrap().public();
        assert_eq!(other.verify(&token, JobId(7), Scopes::READ, ALL, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn scopes_and_audiences_limit_a_token() {
        let key = TokenKey::generate().unwrap();
        let public = key.public();
        let reader = key.mint(JobId(1), 100, Scopes::READ, Audience::ANY);
        public.verify(&reader, JobId(1), Scopes::READ, ALL, 0).unwrap();
        assert_eq!(
            public.verify(&reader, JobId(1), Scopes::WRITE, ALL, 0),
            Err(TokenError::Scope { needed: Scopes::WRITE, granted: Scopes::READ })
        );
        let here = [Audience::node("10.0.0.5"), Audience::node("node-5")];
        let for_five = key.mint(JobId(1), 100, Scopes::ALL, Audience::node("Node-5"));
        public.verify(&for_five, JobId(1), Scopes::END, &here, 0).unwrap();
        let for_six = key.mint(JobId(1), 100, Scopes::ALL, Audience::node("10.0.0.6"));
        assert_eq!(public.verify(&for_six, JobId(1), Scopes::READ, &here, 0), Err(TokenError::OtherNode));
        assert_eq!("read, write".parse::<Scopes>().unwrap(), Scopes::READ | Scopes::WRITE);
        assert_eq!((Scopes::READ | Scopes::END).to_string(), "read,end");
        assert!("admin".parse::<Scopes>().is_err());
    }

    #[test]
    fn invocations_are_signed_over_their_body_and_expiry() {
        let key = TokenKey::generate().unwrap();
        let public = key.public();
        let body = br#"{"task":1}"#;
        let signature = key.sign_invocation(body, 1_000);
        public.verify_invocation(body, Some(1_000), Some(&signature), 999).unwrap();
        assert_eq!(public.verify_invocation(body, None, None, 0), Err(InvocationError::Unsigned));
        assert_eq!(
            public.verify_invocation(br#"{"task":2}"#, Some(1_000), Some(&signature), 0),
            Err(InvocationError::BadSignature)
        );
        assert_eq!(
            public.verify_invocation(body, Some(2_000), Some(&signature), 0),
            Err(InvocationError::BadSignature)
        );
        assert_eq!(
            public.verify_invocation(body, Some(1_000), Some(&signature), 1_500),
            Err(InvocationError::Expired(500))
        );
        let other = TokenKey::generate().unwrap().public();
        assert_eq!(other.verify_invocation(body, Some(1_000), Some(&signature), 0), Err(InvocationError::BadSignature));
    }

    #[test]
    fn tokens_and_keys_round_trip_as_text() {
        let key = TokenKey::generate().unwrap();
        let token = key.mint(JobId(0xabc), 123_456, Scopes::READ | Scopes::WRITE, Audience::node("a"));
        assert_eq!(token.to_string().parse::<Token>().unwrap(), token);
        assert_eq!("zz".parse::<Token>(), Err(TokenError::Malformed));
        assert_eq!(key.public().to_string().parse::<TokenPublicKey>().unwrap(), key.public());
        let again = TokenKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.public(), key.public());
        assert!(!format!("{token:?}").contains(&token.to_string()[50..60]));
    }
}
