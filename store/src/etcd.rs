//! A small client of etcd's v3 API through its JSON gateway (`POST /v3/...`, keys and values
//! in base64): what the elastic store keeps in etcd — membership under leases, the block map,
//! jobs' leases, the controllers' election — needs puts, ranges, deletes, transactions and
//! leases, and nothing else. etcd is the consensus engine; this is only its client.
//!
//! An etcd with authentication on (reachable beyond loopback, it must be) takes a user and a
//! password from `BATON_ETCD_USER` and `BATON_ETCD_PASSWORD` — never from the URL, which the
//! process table shows: the client authenticates once, sends the token etcd hands out with each
//! request, and authenticates again when etcd says the token expired.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// How long one request to etcd may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An etcd endpoint: `http://host:port` (the client URL etcd advertises).
#[derive(Clone)]
pub struct Etcd {
    url: String,
    authority: String,
    /// A user and password, for an etcd with authentication on.
    credentials: Option<(String, String)>,
    /// The token etcd handed out for them.
    token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.credentials.as_ref().map(|(user, _)| user.as_str());
        f.debug_struct("Etcd").field("url", &self.url).field("user", &user).finish()
    }
}

/// A key and its value, as a range returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that last changed it.
    pub mod_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// A condition of a transaction.
#[derive(Clone, Debug)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key was last changed at this revision.
    ModRevision(String, i64),
    /// The key holds this value.
    Value(String, Vec<u8>),
}

/// An operation of a transaction.
#[derive(Clone, Debug)]
pub enum Op {
    /// Put the value at the key, attached to a lease (0: none).
    Put(String, Vec<u8>, i64),
    /// Delete the key.
    Delete(String),
    /// Delete every key under the prefix.
    DeletePrefix(String),
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// The key one past every key with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// etcd's JSON renders 64-bit numbers as strings; absent ones are zero.
fn number(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

#[derive(Deserialize)]
struct RawKv {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    mod_revision: Value,
    #[serde(default)]
    lease: Value,
}

impl Etcd {
    /// The etcd at `url` (`http://127.0.0.1:2379`). Nothing is asked until a request.
    pub fn new(url: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Config { what: format!("etcd URL {url:?}"), reason: reason.into() };
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("must start with http:// (etcd's client URL)"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("give host:port, without a path"));
        }
        let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:2379") };
        if authority.contains('@') {
            return Err(bad("give the user and password in BATON_ETCD_USER and BATON_ETCD_PASSWORD, not the URL"));
        }
        let credentials = match (std::env::var("BATON_ETCD_USER"), std::env::var("BATON_ETCD_PASSWORD")) {
            (Ok(user), Ok(password)) if !user.is_empty() => Some((user, password)),
            _ => None,
        };
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            authority,
            credentials,
            token: std::sync::Arc::default(),
        })
    }

    /// The same endpoint, authenticating as `user` with `password`.
    pub fn with_credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.to_string(), password.to_string()));
        self.token = std::sync::Arc::default();
        self
    }

    /// The same endpoint, authenticating with the `user:password` in the file at `path` (a
    /// private file a cluster keeps beside its TLS material; its text is never shown).
    pub fn with_credentials_file(self, path: &std::path::Path) -> Result<Self> {
        let bad = |reason: String| Error::Config { what: format!("etcd credentials {}", path.display()), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let (user, password) = text
            .trim_end_matches(['\n', '\r'])
            .split_once(':')
            .filter(|(user, _)| !user.is_empty())
            .ok_or_else(|| bad("not of the form user:password".into()))?;
        Ok(self.with_credentials(user, password))
    }

    /// Turns authentication on: a `root` user with `password` may do everything, and a client
    /// without credentials nothing. Asked of an etcd that has it off.
    pub async fn enable_root_auth(&self, password: &str) -> Result<()> {
        self.send("/v3/auth/role/add", json!({ "name": "root" }), None).await?;
        self.send("/v3/auth/user/add", json!({ "name": "root", "password": password }), None).await?;
        self.send("/v3/auth/user/grant", json!({ "user": "root", "role": "root" }), None).await?;
        self.send("/v3/auth/enable", json!({}), None).await.map(drop)
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a request, with the auth token when there are credentials (fetched, and fetched
    /// again once when etcd says it expired).
    async fn call(&self, path: &str, body: Value) -> Result<Value> {
        let Some((user, password)) = &self.credentials else { return self.send(path, body, None).await };
        for fresh in [false, true] {
            let cached = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let token = match cached {
                Some(token) if !fresh => token,
                _ => {
                    let v =
                        self.send("/v3/auth/authenticate", json!({ "name": user, "password": password }), None).await?;
                    let token = v["token"].as_str().unwrap_or_default().to_string();
                    *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
                    token
                }
            };
            match self.send(path, body.clone(), Some(&token)).await {
                Err(Error::Etcd { reason, .. }) if !fresh && reason.contains("auth token") => continue,
                other => return other,
            }
        }
        Err(Error::Etcd { url: self.url.clone(), reason: format!("{path}: its auth token was refused twice") })
    }

    pub(crate) async fn send(&self, path: &str, body: Value, token: Option<&str>) -> Result<Value> {
        let unreachable = |reason: String| Error::Etcd { url: self.url.clone(), reason };
        let request = async {
            let stream = TcpStream::connect(&self.authority).await.map_err(|e| unreachable(e.to_string()))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(connection);
            let mut request =
                Request::post(path).header("host", &self.authority).header("content-type", "application/json");
            if let Some(token) = token {
                request = request.header("authorization", token);
            }
            let request =
                request.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| unreachable(e.to_string()))?;
            let response = sender.send_request(request).await.map_err(|e| unreachable(e.to_string()))?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| unreachable(format!("{path} answered {status} with no JSON: {e}")))?;
            if let Some(message) = value.get("error").or_else(|| value.get("message")).and_then(Value::as_str) {
                let hint = if message.contains("user name is empty") {
                    " (this etcd has authentication on: give a user and password in BATON_ETCD_USER and \
                     BATON_ETCD_PASSWORD)"
                } else {
                    ""
                };
                return Err(Error::Etcd { url: self.url.clone(), reason: format!("{path}: {message}{hint}") });
            }
            if !status.is_success() {
                return Err(unreachable(format!("{path} answered {status}")));
            }
            Ok(value)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
    }

    /// Whether etcd answers (its current revision).
    pub async fn revision(&self) -> Result<i64> {
        let v = self.call("/v3/kv/range", json!({ "key": b64(b"\0"), "count_only": true })).await?;
        Ok(number(&v["header"]["revision"]))
    }

    /// Puts `value` at `key`, attached to `lease` (0: none).
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<()> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", body).await.map(drop)
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let v = self.call("/v3/kv/range", json!({ "key": b64(key.as_bytes()) })).await?;
        Ok(self.kvs(&v)?.into_iter().next())
    }

    /// Every key under `prefix`, in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        Ok(self.list_at(prefix).await?.0)
    }

    /// Every key under `prefix`, in key order, and the revision of the store they were read at.
    pub async fn list_at(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let body = json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) });
        let v = self.call("/v3/kv/range", body).await?;
        Ok((self.kvs(&v)?, number(&v["header"]["revision"])))
    }

    /// Deletes `key`; whether it was there.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let v = self.call("/v3/kv/deleterange", json!({ "key": b64(key.as_bytes()) })).await?;
        Ok(number(&v["deleted"]) > 0)
    }

    /// Runs `ops` if every comparison holds; whether they held (and the ops ran).
    pub async fn txn(&self, compare: &[Compare], ops: &[Op]) -> Result<bool> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::Absent(key) => json!({
                    "key": b64(key.as_bytes()), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
                }),
                Compare::ModRevision(key, rev) => json!({
                    "key": b64(key.as_bytes()), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()
                }),
                Compare::Value(key, value) => json!({
                    "key": b64(key.as_bytes()), "target": "VALUE", "result": "EQUAL", "value": b64(value)
                }),
            })
            .collect();
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put(key, value, lease) => {
                    let mut put = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
                    if *lease != 0 {
                        put["lease"] = json!(lease.to_string());
                    }
                    json!({ "request_put": put })
                }
                Op::Delete(key) => json!({ "request_delete_range": { "key": b64(key.as_bytes()) } }),
                Op::DeletePrefix(prefix) => json!({ "request_delete_range": {
                    "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))
                } }),
            })
            .collect();
        let v = self.call("/v3/kv/txn", json!({ "compare": compare, "success": success })).await?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// A lease of `ttl`; its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64> {
        let v = self.call("/v3/lease/grant", json!({ "TTL": ttl.as_secs().max(1).to_string() })).await?;
        match number(&v["ID"]) {
            0 => Err(Error::Etcd { url: self.url.clone(), reason: "granted a lease with no id".into() }),
            id => Ok(id),
        }
    }

    /// Renews lease `id`; whether it was still alive (a lapsed lease's keys are gone).
    pub async fn keep_alive(&self, id: i64) -> Result<bool> {
        let v = self.call("/v3/lease/keepalive", json!({ "ID": id.to_string() })).await?;
        // The gateway streams its answers: one JSON object, under "result".
        Ok(number(&v["result"]["TTL"]) > 0)
    }

    /// Ends lease `id` now: its keys go at once.
    pub async fn revoke(&self, id: i64) -> Result<()> {
        match self.call("/v3/lease/revoke", json!({ "ID": id.to_string() })).await {
            Err(Error::Etcd { reason, .. }) if reason.contains("lease not found") => Ok(()),
            other => other.map(drop),
        }
    }

    fn kvs(&self, v: &Value) -> Result<Vec<KeyValue>> {
        let raw: Vec<RawKv> = match v.get("kvs") {
            Some(kvs) => serde_json::from_value(kvs.clone())
                .map_err(|e| Error::Etcd { url: self.url.clone(), reason: format!("a range's keys: {e}") })?,
            None => Vec::new(),
        };
        raw.into_iter()
            .map(|kv| {
                let decode = |s: &str| {
                    BASE64.decode(s).map_err(|e| Error::Etcd { url: self.url.clone(), reason: format!("base64: {e}") })
                };
                let key = String::from_utf8(decode(&kv.key)?)
                    .map_err(|_| Error::Etcd { url: self.url.clone(), reason: "a key that is not UTF-8".into() })?;
                Ok(KeyValue {
                    key,
                    value: decode(&kv.value)?,
                    mod_revision: number(&kv.mod_revision),
                    lease: number(&kv.lease),
                })
            })
            .collect()
    }
}

/// A lease kept alive in the background for as long as this lives (then revoked, so its keys go
/// at once rather than when it lapses).
#[derive(Debug)]
pub struct KeptLease {
    id: i64,
    etcd: Etcd,
    task: tokio::task::JoinHandle<()>,
}

impl KeptLease {
    /// Grants a lease of `ttl` and renews it every third of it. It stops when a renewal finds
    /// the lease gone, or when renewals have failed for longer than `ttl` (etcd unreachable: the
    /// lease has lapsed there); `alive` then says so.
    pub async fn start(etcd: &Etcd, ttl: Duration) -> Result<Self> {
        let id = etcd.grant(ttl).await?;
        let renewer = etcd.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
            tick.tick().await;
            let mut renewed = std::time::Instant::now();
            loop {
                tick.tick().await;
                match renewer.keep_alive(id).await {
                    Ok(true) => renewed = std::time::Instant::now(),
                    Ok(false) => {
                        tracing::warn!("etcd lease {id:x} lapsed");
                        return;
                    }
                    Err(e) if renewed.elapsed() > ttl => {
                        tracing::warn!("etcd lease {id:x} lapsed: no renewal for {:?} ({e})", renewed.elapsed());
                        return;
                    }
                    Err(e) => tracing::warn!("cannot renew etcd lease {id:x}: {e}"),
                }
            }
        });
        Ok(Self { id, etcd: etcd.clone(), task })
    }

    /// The lease's id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Whether it is still being renewed.
    pub fn alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops renewing and leaves the lease to lapse unless someone else renews it.
    pub fn detach(self) {
        self.task.abort();
    }

    /// Stops renewing and revokes it: its keys go now.
    pub async fn end(self) -> Result<()> {
        self.task.abort();
        self.etcd.revoke(self.id).await
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_where_etcd_expects_and_urls_are_checked() {
        assert_eq!(prefix_end("/baton/a"), b"/baton/b".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert!(Etcd::new("http://127.0.0.1:2379").is_ok());
        assert_eq!(Etcd::new("http://localhost").map(|e| e.authority).ok().as_deref(), Some("localhost:2379"));
        for bad in ["https://x:1", "127.0.0.1:2379", "http://", "http://x:1/v3"] {
            assert!(Etcd::new(bad).is_err(), "{bad}");
        }
        assert_eq!(number(&json!("42")), 42);
        assert_eq!(number(&json!(7)), 7);
        assert_eq!(number(&Value::Null), 0);
    }
}
