//! The VM-local client against a real node on a Unix socket: calls dropped halfway never make a
//! later call read an answer meant for another.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use baton_fabric::node::Node;
use baton_fabric::path::DataPath;
use baton_fabric::path::vm_local::{INLINE_MAX, VmLocalPath};
use baton_fabric::store::{StoreConfig, TieredStore};
use baton_fabric::{EdgeId, JobId, KeyPrefix, ObjectKey};
use bytes::Bytes;

const JOB: JobId = JobId(0xcafe);

/// Polls `fut` at most `polls` times, then drops it: a call cancelled at a chosen point.
async fn poll_then_drop<F: Future>(fut: F, polls: usize) {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let ready = std::future::poll_fn(|cx: &mut Context<'_>| Poll::Ready(fut.as_mut().poll(cx).is_ready())).await;
        if ready {
            return;
        }
        // Let the node answer, so that the dropped call leaves its answer on the socket.
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn object(i: u32) -> (ObjectKey, Bytes) {
    // Even objects travel inline, odd ones are mapped from shared memory.
    let len = if i.is_multiple_of(2) { 100 + i as usize } else { INLINE_MAX + 1000 + i as usize };
    let bytes: Vec<u8> = (0..len).map(|b| (b as u32).wrapping_mul(31).wrapping_add(i) as u8).collect();
    (ObjectKey::new(JOB, EdgeId(1), i, 0), Bytes::from(bytes))
}

#[tokio::test]
async fn cancelled_calls_never_answer_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::under(dir.path(), 64 << 20, 1 << 30);
    let store = Arc::new(TieredStore::open(&config).unwrap());
    let socket = dir.path().join("node.sock");
    let _node = Node::serve(store, &socket, Duration::from_secs(1)).await.unwrap();
    let path = VmLocalPath::connect(&socket).await.unwrap();
    path.open_job(JOB, Duration::from_secs(60)).await.unwrap();
    const OBJECTS: u32 = 8;
    for i in 0..OBJECTS {
        let (key, bytes) = object(i);
        path.put(&key, bytes).await.unwrap();
    }
    // A seeded walk: cancel a get of one key after 1-3 polls, then get another in full.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let cancelled = object((next() % OBJECTS as u64) as u32).0;
        let polls = 1 + (next() % 3) as usize;
        poll_then_drop(path.get(&cancelled), polls).await;
        let (key, expected) = object((next() % OBJECTS as u64) as u32);
        let got = path.get(&key).await.unwrap_or_else(|e| panic!("round {round}: get {key} failed: {e}"));
        assert!(got == expected, "round {round}: get {key} returned another object's bytes ({} bytes)", got.len());
        let listed = path.list(&KeyPrefix::job(JOB)).await.unwrap();
        assert_eq!(listed.len(), OBJECTS as usize, "round {round}: a list was answered with something else");
    }
}

#[tokio::test]
async fn the_socket_is_private_and_a_node_replaces_only_a_stale_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::under(dir.path(), 1 << 20, 1 << 20);
    let store = Arc::new(TieredStore::open(&config).unwrap());
    // A config that names a precious file as the socket destroys nothing.
    let precious = dir.path().join("notes.txt");
    std::fs::write(&precious, b"keep me").unwrap();
    let err = Node::serve(store.clone(), &precious, Duration::from_secs(1)).await.unwrap_err().to_string();
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    // A socket left by a dead node is replaced; a missing directory is made private.
    let socket = dir.path().join("run").join("node.sock");
    std::fs::create_dir(dir.path().join("run")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let node = Node::serve(store.clone(), &socket, Duration::from_secs(1)).await.unwrap();
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    // A live one is not.
    let err = Node::serve(store.clone(), &socket, Duration::from_secs(1)).await.unwrap_err().to_string();
    assert!(err.contains("already serving"), "{err}");
    drop(node);
    let fresh = dir.path().join("new").join("node.sock");
    let _node = Node::serve(store, &fresh, Duration::from_secs(1)).await.unwrap();
    let mode = std::fs::metadata(dir.path().join("new")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

#[tokio::test]
async fn another_users_process_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: connecting as another user needs root to switch users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::under(dir.path(), 1 << 20, 1 << 20);
    let store = Arc::new(TieredStore::open(&config).unwrap());
    let socket = dir.path().join("node.sock");
    let _node = Node::serve(store, &socket, Duration::from_secs(1)).await.unwrap();
    // Open the file permissions wide, so that only the credential check stands in the way.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.settimeout(5)\nsys.stdout.buffer.write(s.recv(4096))";
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, socket.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("serves only users") && reply.contains("65534"), "{reply:?}");
}
