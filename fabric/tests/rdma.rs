//! The RDMA map path. Where the build has the `rdma` feature and the host a device (soft-RoCE
//! counts), a consumer reads a node's objects one-sidedly over a real queue pair; elsewhere the
//! test says plainly that it skipped that part. Everywhere, the refusals are checked: a node
//! without RDMA says so to the map path's requests, and a node told to serve RDMA without the
//! means to does not start.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{Audience, NetConfig, NetServer, Scopes, TlsDir};
use baton_fabric::path::direct::DirectPath;
use baton_fabric::rdma::{Probe, QpEndpoint, probe};
use baton_fabric::store::{StoreConfig, TieredStore};
use baton_fabric::{DataPath, EdgeId, JobId, ObjectKey};

struct Node {
    server: baton_fabric::Result<NetServer>,
    store: Arc<TieredStore>,
    tls: TlsDir,
    _dir: tempfile::TempDir,
}

async fn node(rdma: bool) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsDir::new(dir.path().join("tls"));
    tls.generate(&[]).unwrap();
    let store = Arc::new(TieredStore::open(&StoreConfig::under(dir.path(), 256 << 20, 256 << 20)).unwrap());
    let config = NetConfig { rdma, ..NetConfig::new("127.0.0.1:0".parse().unwrap(), tls.clone()) };
    let server = NetServer::start(store.clone(), &config).await;
    Node { server, store, tls, _dir: dir }
}

impl Node {
    async fn client(&self, job: JobId) -> DirectPath {
        let server = self.server.as_ref().unwrap();
        let client = DirectPath::connect(server.local_addr().unwrap(), &self.tls).await.unwrap();
        client.add_token(self.tls.signer().unwrap().mint(job, unix_ms_now() + 60_000, Scopes::ALL, Audience::ANY));
        client
    }
}

const JOB: JobId = JobId(0x4d);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_rdma_answers_the_map_path_with_a_clear_refusal() {
    let node = node(false).await;
    let client = node.client(JOB).await;
    client.open_job(JOB, std::time::Duration::from_secs(60)).await.unwrap();
    let key = ObjectKey::new(JOB, EdgeId(1), 0, 0);
    client.put(&key, bytes::Bytes::from_static(b"not for RDMA")).await.unwrap();
    assert!(!client.hello().await.unwrap().1, "a node without RDMA must not advertise it");
    let qp = QpEndpoint { qpn: 1, psn: 2, lid: 0, gid: [0; 16] };
    for error in [client.rdma_connect(JOB, qp).await.unwrap_err(), client.map(&key).await.unwrap_err()] {
        assert!(error.to_string().contains("does not serve RDMA"), "{error}");
    }
    // The refusal changed nothing: the object is still there, by the QUIC path and in the store.
    assert_eq!(&client.get(&key).await.unwrap()[..], b"not for RDMA");
    assert_eq!(&node.store.read(&key).unwrap()[..], b"not for RDMA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sided_reads_of_a_nodes_objects_or_a_plain_skip() {
    match probe() {
        Probe::NotBuilt => {
            let error = node(true).await.server.unwrap_err().to_string();
            assert!(error.contains("--features rdma"), "{error}");
            eprintln!("SKIPPED rdma reads: built without the `rdma` feature (cargo test --features rdma)");
        }
        Probe::NoDevice => {
            let error = node(true).await.server.unwrap_err().to_string();
            assert!(error.contains("no RDMA device"), "{error}");
            eprintln!("SKIPPED rdma reads: no RDMA device on this host (load rdma_rxe for soft-RoCE)");
        }
        #[cfg(feature = "rdma")]
        Probe::Devices(names) => reads_over_a_real_queue_pair(names).await,
        #[cfg(not(feature = "rdma"))]
        Probe::Devices(_) => unreachable!("devices are only listed with the feature"),
    }
}

#[cfg(feature = "rdma")]
async fn reads_over_a_real_queue_pair(names: Vec<String>) {
    use baton_fabric::rdma::Device;

    let device = Arc::new(Device::open_first().unwrap());
    assert!(names.iter().any(|n| n == device.name()));
    let node = node(true).await;
    let client = node.client(JOB).await;
    client.open_job(JOB, std::time::Duration::from_secs(60)).await.unwrap();
    assert!(client.hello().await.unwrap().1, "a node serving RDMA advertises it");

    let objects: Vec<(ObjectKey, bytes::Bytes)> = [0usize, 1, 4096, 3 << 20]
        .into_iter()
        .enumerate()
        .map(|(i, len)| {
            let bytes = (0..len).map(|b| (b % 251) as u8 ^ i as u8).collect::<Vec<_>>();
            (ObjectKey::new(JOB, EdgeId(2), i as u32, 0), bytes.into())
        })
        .collect();
    for (key, bytes) in &objects {
        client.put(key, bytes.clone()).await.unwrap();
    }
    let reader = client.rdma_reader(JOB, &device).await.unwrap();
    for (key, bytes) in &objects {
        assert_eq!(client.get_rdma(&reader, key).await.unwrap(), *bytes, "{key}");
    }
    // The same as a data path: whole objects and ranges read by RDMA, a bad range refused.
    let path = baton_fabric::path::rdma_map::RdmaMapPath::new(node.client(JOB).await, JOB, &device).await.unwrap();
    for (key, bytes) in &objects {
        assert_eq!(path.get(key).await.unwrap(), *bytes, "{key}");
        let len = bytes.len() as u64;
        assert_eq!(
            path.get_range(key, len / 3..len / 2).await.unwrap(),
            bytes.slice(len as usize / 3..len as usize / 2)
        );
        assert!(matches!(path.get_range(key, 0..len + 1).await, Err(baton_fabric::Error::BadRange { .. })));
    }
    // Unmapped after each read: mapping a deleted object fails, and so does a READ of a
    // region the node has released.
    let (key, _) = &objects[3];
    let region = client.map(key).await.unwrap();
    client.delete(key).await.unwrap();
    assert!(client.map(key).await.is_err());
    let stale = reader.read_region(region).await;
    assert!(stale.is_err(), "a released region must not be readable");
    client.end_job(JOB).await.unwrap();
    assert!(node.store.jobs().is_empty());
}
