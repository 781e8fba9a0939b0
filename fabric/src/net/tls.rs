//! A cluster's TLS material: a cluster CA, a node certificate it signs, and the key pair that
//! signs and checks job tokens, kept as files in one directory (each 0600).
//!
//! | file | what | where |
//! | --- | --- | --- |
//! | `ca.pem` | the cluster CA's certificate: what clients and nodes trust | everywhere |
//! | `ca.key` | the CA's key | only where the cluster was made |
//! | `node.pem`, `node.key` | a node certificate for the names given, `baton-node` among them | each node its own |
//! | `node.names` | the names given, one per line: the audiences of tokens this node accepts | each node its own |
//! | `token.key` | the Ed25519 key that mints job tokens (PKCS#8, hex) | only where the cluster was made |
//! | `token.pub` | its public key (hex), which checks them | everywhere |

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};
use crate::net::token::{TokenKey, TokenPublicKey};
use crate::net::transport::Limits;

/// The name every node certificate carries, which clients verify by default.
pub const NODE_NAME: &str = "baton-node";

/// The application protocol nodes speak over QUIC, as negotiated with ALPN. QUIC requires one:
/// a client that offers it (any off-the-shelf QUIC client must offer some) is accepted.
pub const ALPN: &[u8] = b"baton/1";

/// How long a node certificate is valid unless told otherwise.
pub const NODE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a cluster CA is valid: it signs node certificates for its whole life.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Names every node certificate holds besides those given: the shared cluster name, and this
/// host's loopback names (a client on the node's own host reaches it there).
const DEFAULT_NAMES: [&str; 4] = [NODE_NAME, "localhost", "127.0.0.1", "::1"];

/// The files of a cluster's TLS material.
#[derive(Clone, Debug)]
pub struct TlsDir {
    dir: PathBuf,
    validity: Duration,
}

fn config(field: &str, reason: impl Into<String>) -> Error {
    Error::Config { field: field.into(), reason: reason.into() }
}

fn tls_error(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| config(what, e.to_string())
}

impl TlsDir {
    /// The material in `dir` (which may not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), validity: NODE_VALIDITY }
    }

    /// Node certificates made from here on are valid for `validity` from now (default
    /// [`NODE_VALIDITY`]).
    pub fn with_validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the directory holds a complete set.
    pub fn exists(&self) -> bool {
        ["ca.pem", "node.pem", "node.key", "token.pub"].iter().all(|f| self.file(f).is_file())
    }

    /// Makes a new cluster: a CA (valid ten years), a node certificate for `names` (plus
    /// `baton-node` and the loopback names) valid for this directory's validity, and the token
    /// key pair. Refuses to overwrite an existing set.
    pub fn generate(&self, names: &[String]) -> Result<()> {
        self.refuse_existing()?;
        let ca_key = KeyPair::generate().map_err(tls_error("CA key"))?;
        let mut ca_params = ca_params()?;
        valid_for(&mut ca_params, CA_VALIDITY.max(self.validity))?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_error("CA"))?;
        let (node_pem, node_key) = node_certificate(&Issuer::new(ca_params, &ca_key), names, self.validity)?;
        let token = TokenKey::generate()?;
        let token_key: String = token.pkcs8().iter().map(|b| format!("{b:02x}")).collect();
        self.write_all(&[
            ("ca.pem", ca_cert.pem()),
            ("ca.key", ca_key.serialize_pem()),
            ("node.pem", node_pem),
            ("node.key", node_key),
            ("node.names", names_file(names)),
            ("token.key", token_key),
            ("token.pub", token.public().to_string()),
        ])
    }

    /// Issues another node its own certificate for `names`, signed by this cluster's CA, into
    /// `out`: the CA certificate, the token public key and the new node key and certificate.
    /// The CA's key and the token key stay here: a node can check tokens but not mint them.
    /// Refuses to overwrite an existing set.
    pub fn issue_node(&self, out: &TlsDir, names: &[String]) -> Result<()> {
        out.refuse_existing()?;
        let ca_pem = String::from_utf8(self.read("ca.pem")?).map_err(|e| config("ca.pem", e.to_string()))?;
        let ca_key = String::from_utf8(self.read("ca.key")?).map_err(|e| config("ca.key", e.to_string()))?;
        let ca_key = KeyPair::from_pem(&ca_key).map_err(tls_error("ca.key"))?;
        // The CA's subject and key identify it as an issuer; both are rebuilt exactly.
        let issuer = Issuer::new(ca_params()?, &ca_key);
        let (node_pem, node_key) = node_certificate(&issuer, names, out.validity)?;
        let public = self.verifier()?.to_string();
        out.write_all(&[
            ("ca.pem", ca_pem),
            ("node.pem", node_pem),
            ("node.key", node_key),
            ("node.names", names_file(names)),
            ("token.pub", public),
        ])
    }

    fn refuse_existing(&self) -> Result<()> {
        if self.exists() {
            return Err(config("tls dir", format!("{} already holds a cluster; remove it first", self.dir.display())));
        }
        crate::private::ensure_dir(&self.dir, "tls dir")
    }

    /// Writes each file new, 0600 from the start (keys are never readable by others, not even
    /// for a moment), through no symlink; a file already there is an error, not overwritten.
    fn write_all(&self, files: &[(&str, String)]) -> Result<()> {
        for (name, text) in files {
            let path = self.file(name);
            std::io::Write::write_all(&mut crate::private::create_file(&path)?, text.as_bytes())
                .map_err(|e| Error::io("write", &path, e))?;
        }
        Ok(())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.file(name);
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => config(
                "tls dir",
                format!(
                    "{} is missing: make a cluster with `baton certs --out {}`",
                    path.display(),
                    self.dir.display()
                ),
            ),
            _ => Error::io("read", &path, e),
        })
    }

    /// The key that mints job tokens: only in the directory the cluster was made in.
    pub fn signer(&self) -> Result<TokenKey> {
        let path = self.file("token.key");
        if !path.is_file() && self.file("token.pub").is_file() {
            return Err(config(
                "token.key",
                format!(
                    "{} holds the public key only (a node's material): mint tokens where the cluster was made",
                    self.dir.display()
                ),
            ));
        }
        let text = String::from_utf8(self.read("token.key")?).unwrap_or_default();
        let text = text.trim();
        let bytes: Option<Vec<u8>> = (text.len().is_multiple_of(2) && text.is_ascii())
            .then(|| (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect())
            .flatten();
        let bytes = bytes.ok_or_else(|| config("token.key", "expected an Ed25519 key in PKCS#8, as hex"))?;
        TokenKey::from_pkcs8(&bytes)
    }

    /// The public key that checks job tokens.
    pub fn verifier(&self) -> Result<TokenPublicKey> {
        let text = String::from_utf8(self.read("token.pub")?).unwrap_or_default();
        text.parse().map_err(|e: String| config("token.pub", e))
    }

    /// The names this node was issued for (token audiences it accepts; none for an older set).
    pub fn names(&self) -> Result<Vec<String>> {
        match std::fs::read_to_string(self.file("node.names")) {
            Ok(text) => Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("read", self.file("node.names"), e)),
        }
    }

    /// The node's certificate chain and key (`node.pem`, `node.key`).
    fn node_identity(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let certs = CertificateDer::pem_slice_iter(&self.read("node.pem")?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| config("node.pem", e.to_string()))?;
        let key =
            PrivateKeyDer::from_pem_slice(&self.read("node.key")?).map_err(|e| config("node.key", e.to_string()))?;
        Ok((certs, key))
    }

    /// The QUIC server configuration of a node.
    pub fn server_config(&self, limits: &Limits) -> Result<quinn::ServerConfig> {
        let (certs, key) = self.node_identity()?;
        let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config("tls", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| config("node.pem", e.to_string()))?;
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(crypto).map_err(|e| config("tls", e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        server.transport_config(Arc::new(limits.transport()));
        Ok(server)
    }

    /// The HTTPS server configuration of a worker on a host: the host's node certificate
    /// (`node.pem`, `node.key`), TLS 1.2 and 1.3, HTTP/2 or HTTP/1.1 by ALPN.
    pub fn https_server_config(&self) -> Result<rustls::ServerConfig> {
        let (certs, key) = self.node_identity()?;
        let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config("tls", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| config("node.pem", e.to_string()))?;
        crypto.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(crypto)
    }

    /// The cluster CA's certificates (`ca.pem`), for clients that trust it.
    pub fn ca_certificates(&self) -> Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_slice_iter(&self.read("ca.pem")?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| config("ca.pem", e.to_string()))
    }

    /// The QUIC client configuration that trusts this cluster's CA.
    pub fn client_config(&self, limits: &Limits) -> Result<quinn::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.read("ca.pem")?) {
            let cert = cert.map_err(|e| config("ca.pem", e.to_string()))?;
            roots.add(cert).map_err(|e| config("ca.pem", e.to_string()))?;
        }
        let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| config("tls", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        crypto.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(crypto).map_err(|e| config("tls", e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        client.transport_config(Arc::new(limits.transport()));
        Ok(client)
    }
}

/// ring's cipher suites, AES-128-GCM first: as strong as the others for this use, and the
/// cheapest per byte with AES instructions (QUIC protects every packet with the suite the
/// handshake picks).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// `names`, one per line.
fn names_file(names: &[String]) -> String {
    names.iter().map(|n| format!("{n}\n")).collect()
}

/// The cluster CA's parameters: the same for every cluster, so that a CA's certificate can be
/// rebuilt as an issuer from its key alone.
fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error("CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "Baton cluster CA");
    Ok(params)
}

/// Makes `params` valid from a minute ago (clocks differ a little) for `validity`.
fn valid_for(params: &mut CertificateParams, validity: Duration) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let validity = time::Duration::try_from(validity).map_err(|e| config("validity", e.to_string()))?;
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now.checked_add(validity).ok_or_else(|| config("validity", "too far in the future"))?;
    Ok(())
}

/// A node certificate for `names` plus [`DEFAULT_NAMES`], signed by `issuer`, valid for
/// `validity`: its PEM and its key's PEM.
fn node_certificate(
    issuer: &Issuer<'_, impl rcgen::SigningKey>,
    names: &[String],
    validity: Duration,
) -> Result<(String, String)> {
    let node_key = KeyPair::generate().map_err(tls_error("node key"))?;
    let mut all: Vec<String> = DEFAULT_NAMES.iter().map(|n| n.to_string()).collect();
    all.extend(names.iter().filter(|n| !all.contains(n)).cloned().collect::<Vec<_>>());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error("node"))?;
    valid_for(&mut params, validity)?;
    params.distinguished_name.push(DnType::CommonName, NODE_NAME);
    for name in &all {
        params.subject_alt_names.push(match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into().map_err(tls_error("node name"))?),
        });
    }
    let node_cert = params.signed_by(&node_key, issuer).map_err(tls_error("node"))?;
    Ok((node_cert.pem(), node_key.serialize_pem()))
}
