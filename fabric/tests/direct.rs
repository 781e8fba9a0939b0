//! The direct path over real QUIC sockets on 127.0.0.1: conformance, access control, flow
//! control, and peers that go away.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_fabric::conformance::run_all;
use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{Audience, Limits, NetConfig, NetServer, Scopes, TlsDir, TokenKey};
use baton_fabric::path::direct::DirectPath;
use baton_fabric::store::{StoreConfig, TieredStore};
use baton_fabric::{DataPath, EdgeId, Error, JobId, KeyPrefix, ObjectKey};
use bytes::Bytes;

struct Node {
    server: NetServer,
    store: Arc<TieredStore>,
    tls: TlsDir,
    secret: TokenKey,
    _dir: tempfile::TempDir,
}

async fn node(limits: Limits) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsDir::new(dir.path().join("tls"));
    tls.generate(&["127.0.0.1".into()]).unwrap();
    let store = Arc::new(TieredStore::open(&StoreConfig::under(dir.path(), 512 << 20, 1 << 30)).unwrap());
    let config = NetConfig { limits, ..NetConfig::new("127.0.0.1:0".parse().unwrap(), tls.clone()) };
    let server = NetServer::start(store.clone(), &config).await.unwrap();
    let secret = tls.signer().unwrap();
    Node { server, store, tls, secret, _dir: dir }
}

impl Node {
    async fn client(&self, jobs: &[JobId]) -> DirectPath {
        let client = DirectPath::connect(self.server.local_addr().unwrap(), &self.tls).await.unwrap();
        for &job in jobs {
            client.add_token(self.secret.mint(job, unix_ms_now() + 60_000, Scopes::ALL, Audience::ANY));
        }
        client
    }
}

fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 253) as u8).collect::<Vec<_>>().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_path_conformance() {
    let node = node(Limits::default()).await;
    let job = JobId(0xd1);
    let client = node.client(&[job]).await;
    client.open_job(job, Duration::from_secs(60)).await.unwrap();
    assert_eq!(client.hello().await.unwrap(), (baton_fabric::node::wire::VERSION, false));
    run_all(&client, job).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_job_opens_nothing_of_another() {
    let node = node(Limits::default()).await;
    let (a, b) = (JobId(0xa), JobId(0xb));
    let owner = node.client(&[a, b]).await;
    owner.open_job(a, Duration::from_secs(60)).await.unwrap();
    owner.open_job(b, Duration::from_secs(60)).await.unwrap();
    let b_key = ObjectKey::new(b, EdgeId(0), 0, 0);
    owner.put(&b_key, Bytes::from_static(b"job b's secret")).await.unwrap();

    // A client holding only job A's token.
    let a_only = node.client(&[a]).await;
    for result in [
        a_only.get(&b_key).await.map(drop),
        a_only.list(&KeyPrefix::job(b)).await.map(drop),
        a_only.delete(&b_key).await,
        a_only.end_job(b).await.map(drop),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::Unauthorized { job, .. } if job == b), "{err}");
    }
    // Job A's token presented for job B is refused too.
    let sneaky = node.client(&[]).await;
    let mut forged = node.secret.mint(a, unix_ms_now() + 60_000, Scopes::ALL, Audience::ANY);
    forged.job = b;
    sneaky.add_token(forged);
    let err = sneaky.get(&b_key).await.unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    // An expired token is refused with a clear message.
    let late = node.client(&[]).await;
    late.add_token(node.secret.mint(b, unix_ms_now() - 1000, Scopes::ALL, Audience::ANY));
    let err = late.get(&b_key).await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    // Another cluster's token is refused.
    let stranger = node.client(&[]).await;
    stranger.add_token(TokenKey::generate().unwrap().mint(b, unix_ms_now() + 60_000, Scopes::ALL, Audience::ANY));
    assert!(matches!(stranger.get(&b_key).await, Err(Error::Unauthorized { .. })));
    // The object is untouched, and the refusals were counted.
    assert_eq!(owner.get(&b_key).await.unwrap(), Bytes::from_static(b"job b's secret"));
    assert!(node.server.stats().refused.load(Ordering::Relaxed) >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_scopes_and_audience_bound_what_it_opens_and_where() {
    let node = node(Limits::default()).await;
    let job = JobId(0x5c);
    let owner = node.client(&[job]).await;
    owner.open_job(job, Duration::from_secs(60)).await.unwrap();
    let key = ObjectKey::new(job, EdgeId(0), 0, 0);
    owner.put(&key, Bytes::from_static(b"kept")).await.unwrap();
    let expires = unix_ms_now() + 60_000;
    let node = &node;
    let with = |scopes: Scopes, audience: Audience| {
        let token = node.secret.mint(job, expires, scopes, audience);
        async move {
            let client = DirectPath::connect(node.server.local_addr().unwrap(), &node.tls).await.unwrap();
            client.add_token(token);
            client
        }
    };
    // A reader reads and lists, and can neither write, delete nor end the job.
    let reader = with(Scopes::READ, Audience::ANY).await;
    assert_eq!(reader.get(&key).await.unwrap(), Bytes::from_static(b"kept"));
    reader.list(&KeyPrefix::job(job)).await.unwrap();
    for (what, result) in [
        ("put", reader.put(&ObjectKey::new(job, EdgeId(0), 1, 0), Bytes::from_static(b"x")).await),
        ("delete", reader.delete(&key).await),
        ("end", reader.end_job(job).await.map(drop)),
    ] {
        let err = result.unwrap_err();
        assert!(err.to_string().contains("grants read"), "{what}: {err}");
    }
    // A writer writes, and cannot end the job.
    let writer = with(Scopes::WRITE, Audience::ANY).await;
    writer.put(&ObjectKey::new(job, EdgeId(0), 2, 0), Bytes::from_static(b"w")).await.unwrap();
    assert!(writer.end_job(job).await.unwrap_err().to_string().contains("needs end"));
    // A token for this node's name works here; one for another node's does not.
    let here = with(Scopes::READ, Audience::node("127.0.0.1")).await;
    here.get(&key).await.unwrap();
    let elsewhere = with(Scopes::READ, Audience::node("10.0.0.9")).await;
    assert!(elsewhere.get(&key).await.unwrap_err().to_string().contains("another node"));
    assert_eq!(owner.get(&key).await.unwrap(), Bytes::from_static(b"kept"));
}

#[test]
fn a_node_issued_from_a_cluster_can_check_tokens_but_not_mint_them() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TlsDir::new(dir.path().join("cluster"));
    cluster.generate(&[]).unwrap();
    let node = TlsDir::new(dir.path().join("node6"));
    cluster.issue_node(&node, &["10.0.0.6".into()]).unwrap();
    assert!(!node.dir().join("token.key").exists() && !node.dir().join("ca.key").exists());
    let err = node.signer().unwrap_err().to_string();
    assert!(err.contains("public key only"), "{err}");
    let token = cluster.signer().unwrap().mint(JobId(1), u64::MAX, Scopes::READ, Audience::node("10.0.0.6"));
    let audiences: Vec<Audience> = node.names().unwrap().iter().map(|n| Audience::node(n)).collect();
    node.verifier().unwrap().verify(&token, JobId(1), Scopes::READ, &audiences, 0).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_sender_back() {
    let limits =
        Limits { stream_window: 1 << 20, connection_window: 2 << 20, send_window: 2 << 20, ..Limits::default() };
    let node = node(limits).await;
    let job = JobId(0x51);
    node.store.open_job(job, Duration::from_secs(60)).unwrap();
    let key = ObjectKey::new(job, EdgeId(0), 0, 0);
    let object = pattern(32 << 20);
    node.store.insert(&key, object.clone()).unwrap();

    let client = DirectPath::connect_with_limits(node.server.local_addr().unwrap(), &node.tls, &limits).await.unwrap();
    client.add_token(node.secret.mint(job, unix_ms_now() + 60_000, Scopes::ALL, Audience::ANY));
    let (len, mut recv) = client.open_read(&key).await.unwrap();
    assert_eq!(len, 32 << 20);
    let mut got = Vec::new();
    while got.len() < 1 << 20 {
        got.extend_from_slice(&recv.read_chunk(1 << 20, true).await.unwrap().unwrap().bytes);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = node.server.stats().bytes_sent.load(Ordering::Relaxed);
    // What was read, the reader's stream window, and one chunk in hand: nothing more.
    let bound = got.len() as u64 + u64::from(limits.stream_window) + (1 << 20);
    assert!(sent <= bound, "the node pushed {sent} bytes at a reader that took {}", got.len());
    // Reading on drains the rest, intact.
    while let Some(chunk) = recv.read_chunk(1 << 20, true).await.unwrap() {
        got.extend_from_slice(&chunk.bytes);
    }
    assert!(got == object, "object differs after a stalled read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_goes_away_mid_transfer_is_peer_gone() {
    // Small windows, and a short idle timeout: a node that vanishes counts as gone within it
    // even if its goodbye never arrives.
    let limits = Limits {
        stream_window: 1 << 20,
        connection_window: 2 << 20,
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let node = node(limits).await;
    let job = JobId(0x9);
    node.store.open_job(job, Duration::from_secs(60)).unwrap();
    let key = ObjectKey::new(job, EdgeId(0), 0, 0);
    node.store.insert(&key, pattern(64 << 20)).unwrap();
    let client = DirectPath::connect_with_limits(node.server.local_addr().unwrap(), &node.tls, &limits).await.unwrap();
    client.add_token(node.secret.mint(job, unix_ms_now() + 60_000, Scopes::ALL, Audience::ANY));
    let (_, mut recv) = client.open_read(&key).await.unwrap();
    recv.read_chunk(1 << 20, true).await.unwrap();
    drop(node.server);
    let mut outcome = Ok(());
    loop {
        match recv.read_chunk(1 << 20, true).await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    assert!(outcome.is_err(), "a transfer cut short must not end cleanly");
    let err = client.get(&key).await.unwrap_err();
    assert!(matches!(err, Error::PeerGone { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_cut_short_leaves_nothing_readable() {
    let node = node(Limits { stream_window: 1 << 20, connection_window: 2 << 20, ..Limits::default() }).await;
    let job = JobId(0x10);
    node.store.open_job(job, Duration::from_secs(60)).unwrap();
    let client = node.client(&[job]).await;
    let key = ObjectKey::new(job, EdgeId(0), 0, 0);
    let put = tokio::spawn(async move {
        let result = client.put(&key, pattern(64 << 20)).await;
        (client, result)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    put.abort();
    let _ = put.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(node.store.list_objects(&KeyPrefix::job(job)).unwrap().is_empty(), "half an object became visible");
    // The node still serves.
    let again = node.client(&[job]).await;
    again.put(&key, Bytes::from_static(b"whole")).await.unwrap();
    assert_eq!(again.get(&key).await.unwrap(), Bytes::from_static(b"whole"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsDir::new(dir.path());
    tls.generate(&[]).unwrap();
    // Nothing listens on this port: the handshake gets no answer.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let err = DirectPath::connect(addr, &tls).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_their_own_certificates_trust_each_other_through_the_cluster_ca() {
    let node = node(Limits::default()).await;
    let issued = tempfile::tempdir().unwrap();
    let own = TlsDir::new(issued.path().join("node-b"));
    node.tls.issue_node(&own, &["10.1.2.3".into(), "node-b.example".into()]).unwrap();
    assert!(own.exists());
    assert!(!own.dir().join("ca.key").exists(), "the CA's key stays with the cluster");
    let again = node.tls.issue_node(&own, &[]).unwrap_err().to_string();
    assert!(again.contains("already holds a cluster"), "{again}");

    // A second node serving with its own certificate, reached by a client that trusts the CA.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TieredStore::open(&StoreConfig::under(dir.path(), 64 << 20, 64 << 20)).unwrap());
    let config = NetConfig { max_object: 1 << 20, ..NetConfig::new("127.0.0.1:0".parse().unwrap(), own.clone()) };
    let b = NetServer::start(store, &config).await.unwrap();
    let job = JobId(0xce);
    // The original node's material (same CA, same secret) opens node B.
    let client = DirectPath::connect(b.local_addr().unwrap(), &node.tls).await.unwrap();
    client.add_token(node.secret.mint(job, unix_ms_now() + 60_000, Scopes::ALL, Audience::ANY));
    client.open_job(job, Duration::from_secs(60)).await.unwrap();
    let key = ObjectKey::new(job, EdgeId(0), 0, 0);
    client.put(&key, pattern(1000)).await.unwrap();
    assert_eq!(client.get(&key).await.unwrap(), pattern(1000));

    // A client of another cluster does not trust node B's certificate.
    let other = TlsDir::new(issued.path().join("other"));
    other.generate(&[]).unwrap();
    let refused = DirectPath::connect(b.local_addr().unwrap(), &other).await.unwrap_err();
    assert!(matches!(refused, Error::Untrusted { .. }), "{refused}");
    assert_eq!(refused.to_string().matches("not trusted").count(), 1, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_is_good_only_for_its_own_addresses_and_for_a_bounded_time() {
    let cluster = node(Limits::default()).await;
    let issued = tempfile::tempdir().unwrap();
    // Node B serves on 127.0.0.2 with a certificate for another address: refused there.
    let wrong = TlsDir::new(issued.path().join("wrong"));
    cluster.tls.issue_node(&wrong, &["10.1.2.3".into()]).unwrap();
    let right = TlsDir::new(issued.path().join("right")).with_validity(Duration::from_secs(30 * 86_400));
    cluster.tls.issue_node(&right, &["127.0.0.2".into()]).unwrap();
    for (tls, trusted) in [(&wrong, false), (&right, true)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(TieredStore::open(&StoreConfig::under(dir.path(), 1 << 20, 1 << 20)).unwrap());
        let b = NetServer::start(store, &NetConfig::new("127.0.0.2:0".parse().unwrap(), tls.clone())).await.unwrap();
        let result = DirectPath::connect(b.local_addr().unwrap(), &cluster.tls).await;
        match (result, trusted) {
            (Ok(_), true) => {}
            (Err(Error::Untrusted { reason, .. }), false) => assert!(!reason.is_empty()),
            (other, _) => panic!("trusted {trusted}: {:?}", other.err()),
        }
    }
    // Validity: a year by default, as asked with `with_validity`, never 1975 to 4096.
    let years_left = |pem: &std::path::Path| -> Option<i64> {
        let out =
            std::process::Command::new("openssl").args(["x509", "-noout", "-enddate", "-in"]).arg(pem).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let year: i64 = text.trim().rsplit(' ').nth(1)?.parse().ok()?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        Some(year - (1970 + (now / 31_556_952) as i64))
    };
    match (years_left(&cluster.tls.dir().join("node.pem")), years_left(&right.dir().join("node.pem"))) {
        (Some(default), Some(short)) => {
            assert!((0..=2).contains(&default), "the default node certificate ends {default} years on");
            assert!((0..=1).contains(&short), "a 30-day certificate ends {short} years on");
        }
        _ => println!("SKIPPED: no openssl to read certificate dates with"),
    }
}

/// A plain quinn client that trusts the cluster's CA and offers `alpn`, connected to `node`.
async fn connect_offering(
    node: &Node,
    alpn: &[u8],
) -> (quinn::Endpoint, Result<quinn::Connection, quinn::ConnectionError>) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(node.tls.dir().join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut crypto = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connecting = endpoint.connect(node.server.local_addr().unwrap(), "127.0.0.1").unwrap();
    let connection = connecting.await;
    (endpoint, connection)
}

async fn handshake_offering(node: &Node, alpn: &[u8]) -> Result<(), quinn::ConnectionError> {
    let (endpoint, connection) = connect_offering(node, alpn).await;
    endpoint.close(0u32.into(), b"done");
    connection.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_make_a_node_buffer_a_huge_request_header() {
    use baton_fabric::net::protocol::NetResponse;
    let node = node(Limits::default()).await;
    let (_endpoint, connection) = connect_offering(&node, baton_fabric::net::tls::ALPN).await;
    let (mut send, mut recv) = connection.unwrap().open_bi().await.unwrap();
    // A header that claims 16 MiB, with no token yet: refused from its length alone.
    let mut header = (16u32 << 20).to_le_bytes().to_vec();
    header.push(baton_fabric::node::wire::VERSION);
    // The node may refuse and stop the stream before all of it is sent: that is the point.
    let _ = send.write_all(&header).await;
    let answer =
        tokio::time::timeout(Duration::from_secs(5), baton_fabric::node::wire::recv::<NetResponse>(&mut recv, "node"))
            .await
            .expect("the node waited for the rest of the header");
    match answer.unwrap() {
        Some(NetResponse::Failed(e)) => assert!(format!("{e:?}").contains("limit 4096"), "{e:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_off_the_shelf_quic_client_offering_baton_alpn_is_accepted() {
    let node = node(Limits::default()).await;
    handshake_offering(&node, baton_fabric::net::tls::ALPN).await.unwrap();
    // Another protocol is refused by the TLS handshake, as QUIC requires.
    let refused = handshake_offering(&node, b"h3").await.unwrap_err();
    assert!(
        refused.to_string().contains("no_application_protocol") || refused.to_string().contains("120"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_told_to_listen_without_certificates_refuses_instead_of_making_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let config = baton_fabric::node::NodeConfig {
        socket: dir.path().join("node.sock"),
        flash_dir: dir.path().join("flash"),
        shm_dir: dir.path().to_path_buf(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_dir: dir.path().join("tls"),
        ..Default::default()
    };
    let err = baton_fabric::node::Node::start(&config).await.unwrap_err().to_string();
    assert!(err.contains("baton certs"), "{err}");
    assert!(!dir.path().join("tls").exists(), "the node made TLS material of its own");
}
