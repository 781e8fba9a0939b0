//! A minimal HTTP/1.1 client for invoking workers (no TLS: workers sit behind the FaaS
//! platform's gateway or on this host).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// The header that carries an invocation's expiry (ms since the Unix epoch).
pub const EXPIRES_HEADER: &str = "x-baton-expires";
/// The header that carries an invocation's signature (hex, Ed25519 over its expiry and body).
pub const SIGNATURE_HEADER: &str = "x-baton-signature";

/// An endpoint: `http://host:port` with an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// The path prefix (no trailing slash; empty for none).
    pub prefix: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadJob { reason: format!("worker endpoint {url:?}: {reason}") };
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("must start with http://"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("has no host"));
        }
        let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        Ok(Self { authority, prefix: prefix.to_string() })
    }

    /// POSTs `body` (JSON) to `path` under the prefix and returns the status and body.
    pub async fn post(&self, path: &str, body: Vec<u8>, timeout: Duration) -> Result<(StatusCode, Bytes)> {
        self.post_with(path, body, &[], timeout).await
    }

    /// [`Endpoint::post`] with extra `headers`.
    pub async fn post_with(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        tokio::time::timeout(timeout, self.request("POST", path, body, headers)).await.map_err(|_| {
            Error::WorkerLost {
                endpoint: self.to_string(),
                reason: format!("no answer within {:.1} s", timeout.as_secs_f64()),
            }
        })?
    }

    /// GETs `path` under the prefix.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<(StatusCode, Bytes)> {
        self.get_with(path, &[], timeout).await
    }

    /// GETs `path` under the prefix with extra `headers`.
    pub async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        tokio::time::timeout(timeout, self.request("GET", path, Vec::new(), headers)).await.map_err(|_| {
            Error::WorkerLost {
                endpoint: self.to_string(),
                reason: format!("no answer within {:.1} s", timeout.as_secs_f64()),
            }
        })?
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, Bytes)> {
        let lost = |reason: String| Error::WorkerLost { endpoint: self.to_string(), reason };
        let stream = TcpStream::connect(&self.authority).await.map_err(|e| lost(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| lost(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header("host", &self.authority)
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| lost(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| lost(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| lost(e.to_string()))?.to_bytes();
        driver.abort();
        Ok((status, body))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_and_without_prefix() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((e.authority.as_str(), e.prefix.as_str()), ("127.0.0.1:8080", ""));
        let e = Endpoint::parse("http://gateway/function/baton/").unwrap();
        assert_eq!((e.authority.as_str(), e.prefix.as_str()), ("gateway:80", "/function/baton"));
        assert!(Endpoint::parse("https://x").is_err());
        assert!(Endpoint::parse("http:///x").is_err());
    }
}
