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

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped; `None` (after saying
/// SKIPPED) where this process may not mount.
struct SmallTmpfs(tempfile::TempDir);

impl SmallTmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=1777"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            println!("SKIPPED: cannot mount a small tmpfs here (needs root)");
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn objects_go_to_flash_when_shared_memory_is_full() {
    let Some(shm) = SmallTmpfs::mount("1m") else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        memory_bytes: 64 << 20,
        flash_dir: dir.path().join("flash"),
        flash_bytes: 64 << 20,
        shm_dir: shm.0.path().to_path_buf(),
    };
    let store = Arc::new(TieredStore::open(&config).unwrap());
    let socket = dir.path().join("node.sock");
    let _node = Node::serve(store.clone(), &socket, Duration::from_secs(1)).await.unwrap();
    let path = VmLocalPath::connect(&socket).await.unwrap();
    path.open_job(JOB, Duration::from_secs(60)).await.unwrap();
    // Bytes larger than the whole tmpfs, and an Arrow object of batches.
    let (key, _) = object(1);
    let big: Bytes = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect::<Vec<_>>().into();
    path.put(&key, big.clone()).await.unwrap();
    assert!(path.get(&key).await.unwrap() == big);
    let schema =
        Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new("v", arrow_schema::DataType::UInt64, false)]));
    let column = arrow_array::UInt64Array::from_iter_values(0..500_000);
    let batch = arrow_array::RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
    let (key2, _) = object(2);
    let (tier, len) = path.put_batches(&key2, &schema, std::slice::from_ref(&batch)).await.unwrap();
    assert_eq!(tier, baton_fabric::Tier::Flash);
    let back = baton_fabric::arrow::read_batches("object", path.get(&key2).await.unwrap()).unwrap();
    assert_eq!(back.1, vec![batch]);
    assert!(len > 4_000_000);
    // Nothing half-written is left in shared memory.
    let left: u64 = walk(shm.0.path()).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(left < 1 << 20, "{left} bytes left in shared memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_truncates_a_committed_object_does_not_take_the_node_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::under(dir.path(), 8 << 20, 1 << 30);
    let store = Arc::new(TieredStore::open(&config).unwrap());
    let socket = dir.path().join("node.sock");
    let _node = Node::serve(store.clone(), &socket, Duration::from_secs(1)).await.unwrap();
    let path = VmLocalPath::connect(&socket).await.unwrap();
    path.open_job(JOB, Duration::from_secs(60)).await.unwrap();
    let key = |i: u32| ObjectKey::new(JOB, EdgeId(2), i, 0);
    let object = Bytes::from(vec![7u8; 1 << 20]);
    path.put(&key(0), object.clone()).await.unwrap();
    // The hostile producer: the committed file cut to nothing behind the node's back.
    let location = store.locate(&key(0)).unwrap();
    std::fs::OpenOptions::new().write(true).open(&location.path).unwrap().set_len(0).unwrap();
    // The node reads it as an error naming the file (a mapping would have raised SIGBUS and
    // ended this process).
    let err = store.read(&key(0)).unwrap_err().to_string();
    assert!(err.contains("changed after commit") && err.contains(&location.path.display().to_string()), "{err}");
    // Filling memory spills the coldest object, the truncated one: it is dropped, and every
    // other object is admitted and reads back whole.
    for i in 1..=12 {
        path.put(&key(i), object.clone()).await.unwrap();
    }
    for i in 1..=12 {
        assert_eq!(store.read(&key(i)).unwrap(), object, "object {i}");
    }
    assert!(matches!(store.read(&key(0)), Err(baton_fabric::Error::NotFound { .. })));
    path.status().await.unwrap();
}

#[tokio::test]
async fn a_node_with_its_clusters_key_wants_a_token_on_its_socket_too() {
    use baton_fabric::net::{Audience, Scopes, TokenKey};
    use baton_fabric::node::Checks;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TieredStore::open(&StoreConfig::under(dir.path(), 16 << 20, 1 << 30)).unwrap());
    let socket = dir.path().join("node.sock");
    let key = TokenKey::generate().unwrap();
    let checks = Arc::new(Checks { key: key.public(), audiences: Vec::new() });
    let _node = Node::serve_checking(store, &socket, Duration::from_secs(1), Some(checks)).await.unwrap();
    let (a, b) = (JobId(0xa1), JobId(0xb2));
    let later = baton_fabric::net::token::unix_ms_now() + 60_000;
    let object = Bytes::from(vec![3u8; INLINE_MAX + 10]);
    // No token: nothing of any job, though the node's status is open to its user.
    let stranger = VmLocalPath::connect(&socket).await.unwrap();
    let err = stranger.open_job(a, Duration::from_secs(60)).await.unwrap_err().to_string();
    assert!(err.contains("no token"), "{err}");
    stranger.status().await.unwrap();
    // A token for job A opens A, and nothing of B.
    let owner = VmLocalPath::connect(&socket).await.unwrap();
    owner.add_token(key.mint(a, later, Scopes::ALL, Audience::ANY));
    owner.open_job(a, Duration::from_secs(60)).await.unwrap();
    let a_key = ObjectKey::new(a, EdgeId(1), 0, 0);
    owner.put(&a_key, object.clone()).await.unwrap();
    assert_eq!(owner.get(&a_key).await.unwrap(), object);
    assert!(owner.open_job(b, Duration::from_secs(60)).await.is_err());
    // A reader of A reads and cannot write.
    let reader = VmLocalPath::connect(&socket).await.unwrap();
    reader.add_token(key.mint(a, later, Scopes::READ, Audience::ANY));
    assert_eq!(reader.get(&a_key).await.unwrap(), object);
    let err = reader.put(&ObjectKey::new(a, EdgeId(1), 1, 0), object.clone()).await.unwrap_err().to_string();
    assert!(err.contains("grants read"), "{err}");
    // Another cluster's token is refused.
    let forger = VmLocalPath::connect(&socket).await.unwrap();
    forger.add_token(TokenKey::generate().unwrap().mint(a, later, Scopes::ALL, Audience::ANY));
    assert!(forger.delete(&a_key).await.unwrap_err().to_string().contains("signature"));
    assert_eq!(owner.get(&a_key).await.unwrap(), object);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files
}
