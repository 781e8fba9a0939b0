//! Serving a [`TieredStore`] on a Unix socket, and reaping lapsed leases.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::ids::JobId;
use crate::net::token::unix_ms_now;
use crate::net::{Audience, Limits, NetConfig, NetServer, TlsDir, Token, TokenPublicKey};
use crate::node::config::NodeConfig;
use crate::node::wire::{self, LocalRequest, NodeStatus, Request, Response};
use crate::private;
use crate::store::{Fetched, TieredStore};

/// A running node: its store, its socket, and the tasks serving them.
#[derive(Debug)]
pub struct Node {
    store: Arc<TieredStore>,
    socket: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    net: Option<NetServer>,
}

impl Node {
    /// Opens the store `config` describes and serves it.
    pub async fn start(config: &NodeConfig) -> Result<Self> {
        Self::start_purging(config, Vec::new()).await
    }

    /// [`Node::start`], with slower tiers (an object store the node's jobs also write to)
    /// from which a job's objects are deleted too when it ends or its lease lapses.
    pub async fn start_purging(config: &NodeConfig, slower: Vec<Arc<dyn crate::DataPath>>) -> Result<Self> {
        config.validate()?;
        // Idle receive buffers are memory the tiers do not count: keep them to a small share.
        crate::buffers::Pool::global().set_share_of(config.memory.0);
        let store = slower.into_iter().fold(TieredStore::open(&config.store())?, TieredStore::purge_also);
        let store = Arc::new(store);
        // A node with its cluster's token public key checks local requests' tokens too.
        let tls = TlsDir::new(&config.tls_dir);
        let checks = match tls.verifier() {
            Ok(key) => {
                Some(Arc::new(Checks { key, audiences: tls.names()?.iter().map(|n| Audience::node(n)).collect() }))
            }
            Err(_) if !tls.dir().join("token.pub").exists() => None,
            Err(e) => return Err(e),
        };
        let mut node = Self::serve_checking(store.clone(), &config.socket, config.reap_interval(), checks).await?;
        if let Some(listen) = config.listen {
            let tls = TlsDir::new(&config.tls_dir);
            if !tls.exists() {
                // A node does not quietly become a cluster CA of its own: whoever runs the
                // cluster makes its CA once and gives each node its certificate.
                return Err(Error::Config {
                    field: "tls_dir".into(),
                    reason: format!(
                        "{} holds no cluster certificates; make them first: `baton certs --out {} --name {}`",
                        config.tls_dir.display(),
                        config.tls_dir.display(),
                        listen.ip()
                    ),
                });
            }
            let net = NetConfig {
                listen,
                tls,
                limits: Limits::default(),
                max_object: config.max_object.0,
                rdma: config.rdma,
            };
            node.net = Some(NetServer::start(store, &net).await?);
        }
        Ok(node)
    }

    /// The QUIC service, when the node listens for other hosts.
    pub fn net(&self) -> Option<&NetServer> {
        self.net.as_ref()
    }

    /// Serves `store` on `socket` to processes of this user, reaping lapsed leases every
    /// `reap_every`. The socket is 0600 in a directory that is this user's, and a peer of any
    /// other user is refused on connecting (`SO_PEERCRED`): the functions on a host run as the
    /// node's user, since its shared memory is that user's alone too.
    pub async fn serve(store: Arc<TieredStore>, socket: &Path, reap_every: Duration) -> Result<Self> {
        Self::serve_checking(store, socket, reap_every, None).await
    }

    /// [`Node::serve`], checking each job request's token with `checks` when given.
    pub async fn serve_checking(
        store: Arc<TieredStore>,
        socket: &Path,
        reap_every: Duration,
        checks: Option<Arc<Checks>>,
    ) -> Result<Self> {
        if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            private::ensure_dir(dir, "socket")?;
        }
        clear_stale_socket(socket).await?;
        let listener = UnixListener::bind(socket).map_err(|e| Error::io("bind", socket, e))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("restrict", socket, e))?;
        let allowed = vec![private::euid()];
        let accept = tokio::spawn(accept_loop(listener, store.clone(), allowed, checks));
        let reaper = tokio::spawn(reap_loop(store.clone(), reap_every));
        Ok(Self { store, socket: socket.to_path_buf(), tasks: vec![accept, reaper], net: None })
    }

    /// The store this node serves.
    pub fn store(&self) -> &Arc<TieredStore> {
        &self.store
    }

    /// The socket this node serves on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if is_socket(&self.socket) {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Makes way for a new socket at `path`: removes a socket no node answers on; refuses a live
/// one, and anything that is not a socket (a config naming a precious file must not destroy it).
async fn clear_stale_socket(path: &Path) -> Result<()> {
    let refuse = |reason: String| Err(Error::Config { field: "socket".into(), reason });
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspect", path, e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            refuse(format!("{} exists and is not a socket; Baton will not replace it", path.display()))
        }
        Ok(_) if UnixStream::connect(path).await.is_ok() => {
            refuse(format!("a node is already serving {}", path.display()))
        }
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io("remove the stale socket", path, e)),
    }
}

/// What a node checks a local request's token with.
#[derive(Debug)]
pub struct Checks {
    /// The cluster's token public key.
    pub key: TokenPublicKey,
    /// This node's names, as token audiences.
    pub audiences: Vec<Audience>,
}

impl Checks {
    fn authorize(&self, local: &LocalRequest) -> Result<()> {
        let Some((job, needed)) = local.request.needs() else { return Ok(()) };
        let Some(token) = local.token.clone() else {
            return Err(Error::Unauthorized { job, reason: format!("the request carried no token for {job}") });
        };
        let token = Token::try_from(token).map_err(|e| Error::Unauthorized { job, reason: e.to_string() })?;
        self.key
            .verify(&token, job, needed, &self.audiences, unix_ms_now())
            .map_err(|e| Error::Unauthorized { job, reason: e.to_string() })
    }
}

async fn accept_loop(listener: UnixListener, store: Arc<TieredStore>, allowed: Vec<u32>, checks: Option<Arc<Checks>>) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                let uid = stream.peer_cred().map(|c| c.uid());
                match uid {
                    Ok(uid) if allowed.contains(&uid) => {
                        tokio::spawn(serve_connection(stream, store.clone(), checks.clone()));
                    }
                    other => {
                        let who = other.map_or_else(|e| format!("unknown user ({e})"), |uid| format!("user {uid}"));
                        tracing::warn!("refused a local connection from {who}");
                        let message = format!("this node serves only users {allowed:?}, not {who}");
                        tokio::spawn(async move {
                            let refusal = Response::Failed(wire::WireError::Other { message });
                            let _ = wire::send(&mut stream, CLIENT, &refusal).await;
                        });
                    }
                }
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn reap_loop(store: Arc<TieredStore>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match store.reap().await {
            Ok(jobs) if !jobs.is_empty() => tracing::info!(?jobs, "leases lapsed; objects deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!("reaping lapsed jobs failed: {e}"),
        }
    }
}

const CLIENT: &str = "local function";

async fn serve_connection(mut stream: UnixStream, store: Arc<TieredStore>, checks: Option<Arc<Checks>>) {
    loop {
        let local = match wire::recv_within::<LocalRequest>(&mut stream, CLIENT, wire::MAX_LOCAL_REQUEST).await {
            Ok(Some(local)) => local,
            Ok(None) => return,
            Err(e) => {
                // Tell the client what was wrong with its bytes, then drop it: the stream is
                // no longer in step.
                tracing::debug!("bad request: {e}");
                let _ = wire::send(&mut stream, CLIENT, &Response::failed(&e)).await;
                return;
            }
        };
        let checked = checks.as_ref().map_or(Ok(()), |c| c.authorize(&local));
        let response = match checked {
            Ok(()) => handle(&store, local.request).await.unwrap_or_else(|e| Response::failed(&e)),
            Err(e) => Response::failed(&e),
        };
        if wire::send(&mut stream, CLIENT, &response).await.is_err() {
            return;
        }
    }
}

async fn handle(store: &Arc<TieredStore>, request: Request) -> Result<Response> {
    let op = request_name(&request);
    let start = std::time::Instant::now();
    let result = handle_request(store, request).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Error::NotFound { .. }) => "miss",
        Err(_) => "error",
    };
    metrics::counter!("baton_node_requests_total", "op" => op, "outcome" => outcome, "via" => "socket").increment(1);
    metrics::histogram!("baton_node_request_seconds", "op" => op, "via" => "socket")
        .record(start.elapsed().as_secs_f64());
    result
}

/// A request's name in the node's metrics.
fn request_name(request: &Request) -> &'static str {
    match request {
        Request::OpenJob { .. } => "open_job",
        Request::RenewJob { .. } => "renew_job",
        Request::EndJob { .. } => "end_job",
        Request::Stage { .. } => "stage",
        Request::Commit { .. } => "commit",
        Request::Put { .. } => "put",
        Request::Locate { .. } => "locate",
        Request::Delete { .. } => "delete",
        Request::List { .. } => "list",
        Request::Status => "status",
        Request::Metrics => "metrics",
    }
}

async fn handle_request(store: &Arc<TieredStore>, request: Request) -> Result<Response> {
    match request {
        Request::EndJob { job } => {
            let bytes = store.end_job(JobId(job)).await?;
            Ok(Response::Freed { bytes })
        }
        other => {
            // Requests may touch files (spills, staging); keep them off the async workers. On a
            // multi-threaded runtime the cheapest way is to turn this worker into a blocking one
            // for the call; elsewhere hand the call to the blocking pool.
            if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
                return tokio::task::block_in_place(|| handle_blocking(store, other));
            }
            let store = store.clone();
            tokio::task::spawn_blocking(move || handle_blocking(&store, other))
                .await
                .map_err(|e| Error::Remote { message: format!("request handler failed: {e}") })?
        }
    }
}

fn handle_blocking(store: &TieredStore, request: Request) -> Result<Response> {
    Ok(match request {
        Request::OpenJob { job, ttl_ms } => {
            let lease = store.open_job(JobId(job), Duration::from_millis(ttl_ms))?;
            Response::Lease { ttl_ms: lease.ttl.as_millis() as u64 }
        }
        Request::RenewJob { job } => {
            let lease = store.renew_job(JobId(job))?;
            Response::Lease { ttl_ms: lease.ttl.as_millis() as u64 }
        }
        Request::EndJob { .. } => {
            return Err(Error::Remote { message: "EndJob is served on the async side".into() });
        }
        Request::Stage { key, size_hint, flash } => {
            let path = store.stage(&key.into(), size_hint, flash)?;
            Response::Staged { path: path.to_string_lossy().into_owned() }
        }
        Request::Commit { key, path, len } => {
            let tier = store.commit(&key.into(), &wire::path(path), len)?;
            Response::Committed { tier: tier.into() }
        }
        Request::Put { key, data } => {
            store.insert(&key.into(), data.into())?;
            Response::Done
        }
        Request::Locate { key, inline_max } => match store.fetch(&key.into(), inline_max)? {
            Fetched::Inline(bytes) => Response::Inline { data: bytes.to_vec() },
            Fetched::Mapped(location) => location.to_wire(),
        },
        Request::Delete { key } => {
            store.remove(&key.into())?;
            Response::Done
        }
        Request::List { job, edge } => Response::objects(&store.list_objects(&wire::prefix(job, edge))?),
        Request::Status => Response::Status(NodeStatus {
            memory_used: store.memory().used(),
            memory_budget: store.memory().budget(),
            flash_used: store.flash().used(),
            flash_budget: store.flash().budget(),
            jobs: store.jobs().into_iter().map(|(j, _)| j.0).collect(),
        }),
        Request::Metrics => {
            // What the node holds, as of now.
            metrics::gauge!("baton_node_bytes_held", "tier" => "memory").set(store.memory().used() as f64);
            metrics::gauge!("baton_node_bytes_held", "tier" => "flash").set(store.flash().used() as f64);
            metrics::gauge!("baton_node_jobs").set(store.jobs().len() as f64);
            Response::Metrics { text: crate::metrics::render() }
        }
    })
}
