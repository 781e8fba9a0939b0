//! The HTTP client that invokes workers: `http://` (a worker on this host, or behind a gateway
//! that terminates TLS) and `https://` (workers on other hosts, Knative and OpenFaaS gateways,
//! Lambda function URLs). reqwest over rustls: pooled connections, HTTP/2 where the server
//! offers it, a timeout per request; it trusts the system's roots and, when given, a cluster's
//! CA.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;

use crate::error::{Error, Result};

/// The header that carries an invocation's expiry (ms since the Unix epoch).
pub const EXPIRES_HEADER: &str = "x-baton-expires";
/// The header that carries an invocation's signature (hex, Ed25519 over its expiry and body).
pub const SIGNATURE_HEADER: &str = "x-baton-signature";

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled HTTP(S) client (cheap to clone: clones share the pool).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    /// A client that trusts the system's roots and, with `ca`, the cluster CA of that TLS
    /// directory (the CA that signed its hosts' certificates).
    pub fn new(ca: Option<&Path>) -> Result<Self> {
        let bad = |reason: String| Error::BadJob { reason: format!("the HTTPS client: {reason}") };
        let mut roots = rustls::RootCertStore::empty();
        // The system's roots, for gateways with public certificates; one that does not parse is
        // skipped, as browsers do.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(dir) = ca {
            for cert in baton_fabric::net::TlsDir::new(dir).ca_certificates()? {
                roots.add(cert).map_err(|e| bad(format!("{}/ca.pem: {e}", dir.display())))?;
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(baton_fabric::net::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let inner = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { inner })
    }

    /// The process's client without a cluster CA (built once).
    pub fn shared() -> Result<Self> {
        static SHARED: OnceLock<std::result::Result<HttpClient, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| HttpClient::new(None).map_err(|e| e.to_string()))
            .clone()
            .map_err(|reason| Error::BadJob { reason })
    }
}

/// An endpoint: `http[s]://host[:port][/prefix]`, and the client that reaches it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `scheme://host:port` and the prefix, without a trailing slash.
    base: String,
    client: HttpClient,
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
    }
}

impl Endpoint {
    /// Parses `http[s]://host[:port][/prefix]`, reached with the process's shared client.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadJob { reason: format!("worker endpoint {url:?}: {reason}") };
        let (scheme, rest, port) = if let Some(rest) = url.strip_prefix("https://") {
            ("https", rest, 443)
        } else if let Some(rest) = url.strip_prefix("http://") {
            ("http", rest, 80)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.starts_with(':') {
            return Err(bad("has no host"));
        }
        if authority.contains('@') {
            return Err(bad("carries credentials (invocations are signed; give none in the URL)"));
        }
        let has_port =
            authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !authority.ends_with(']');
        let authority = if has_port { authority.to_string() } else { format!("{authority}:{port}") };
        let base = format!("{scheme}://{authority}{prefix}");
        reqwest::Url::parse(&base).map_err(|e| bad(&e.to_string()))?;
        Ok(Self { base, client: HttpClient::shared()? })
    }

    /// The same endpoint, reached with `client` (one that trusts a cluster's CA).
    pub fn with_client(mut self, client: HttpClient) -> Self {
        self.client = client;
        self
    }

    /// Whether it is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
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
        let answer = self.post_answer(path, body, headers, timeout).await?;
        Ok((answer.status, answer.body))
    }

    /// [`Endpoint::post_with`], the whole answer (its headers too).
    pub async fn post_answer(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<Answer> {
        let request = self.client.inner.post(format!("{}{path}", self.base)).body(body);
        execute(request.header("content-type", "application/json"), headers, timeout, &self.to_string()).await
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
        self.send(self.client.inner.get(format!("{}{path}", self.base)), headers, timeout).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        let answer = execute(request, headers, timeout, &self.to_string()).await?;
        Ok((answer.status, answer.body))
    }
}

/// An answer: its status, headers and body.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl HttpClient {
    /// POSTs `body` to `url` with `headers`; the whole answer.
    pub async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<Answer> {
        execute(self.inner.post(url).body(body), headers, timeout, url).await
    }
}

/// Sends `request` with `headers`, within `timeout`; a failure to reach `name` or to hear from
/// it in time is [`Error::WorkerLost`].
async fn execute(
    mut request: reqwest::RequestBuilder,
    headers: &[(&str, String)],
    timeout: Duration,
    name: &str,
) -> Result<Answer> {
    for (header, value) in headers {
        request = request.header(*header, value);
    }
    let lost = |e: reqwest::Error| Error::WorkerLost {
        endpoint: name.to_string(),
        reason: if e.is_timeout() {
            format!("no answer within {:.1} s", timeout.as_secs_f64())
        } else {
            // The whole chain: "error sending request" alone says nothing of why.
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason.push_str(&format!(": {s}"));
                source = s.source();
            }
            reason
        },
    };
    let response = request.timeout(timeout).send().await.map_err(lost)?;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(lost)?;
    Ok(Answer { status, headers, body })
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_and_without_prefix_and_tls() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:8080");
        let e = Endpoint::parse("http://gateway/function/baton/").unwrap();
        assert_eq!(e.to_string(), "http://gateway:80/function/baton");
        let e = Endpoint::parse("https://abc.lambda-url.us-east-1.on.aws/").unwrap();
        assert_eq!(e.to_string(), "https://abc.lambda-url.us-east-1.on.aws:443");
        assert!(e.is_https());
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http:///x").is_err());
        assert!(Endpoint::parse("https://user:pw@host").is_err());
    }
}
