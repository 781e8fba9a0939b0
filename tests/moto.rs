//! A second S3 implementation: moto's server (PyPI `moto[server]`, which CI installs), besides
//! the s3s server the other tests use. SQL tables and catalogs, and sort and wordcount inputs
//! and outputs, reach it by the `AWS_*` environment and by settings in a URL's query.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt};
use support::{BATON, ok};

const BUCKET: &str = "baton-moto";

/// A moto server on 127.0.0.1, stopped when dropped.
struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Moto {
    /// Starts moto on a port of its own choosing (port 0) and reads the one it bound from its
    /// log, so no other process can take a port chosen for it; what it printed before exiting, if
    /// it does, is the test's error.
    fn start() -> Moto {
        // CI may put moto in a virtual environment of its own and name its interpreter here.
        let python = std::env::var("BATON_MOTO_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{python} runs moto's server (pip install 'moto[server]'; .ci/run installs it): {e}")
            });
        let (found, port) = std::sync::mpsc::channel();
        let log = child.stderr.take().unwrap();
        // Reads moto's log to its end (it logs every request; a full pipe would stall it).
        std::thread::spawn(move || {
            let mut printed = String::new();
            let mut found = Some(found);
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                if let Some(tx) = found.take() {
                    match line.split("Running on http://127.0.0.1:").nth(1) {
                        Some(rest) => {
                            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                            let _ = tx.send(digits.parse::<u16>().map_err(|_| line.clone()));
                        }
                        None => {
                            printed.push_str(&line);
                            printed.push('\n');
                            found = Some(tx);
                        }
                    }
                }
            }
            if let Some(tx) = found {
                let _ = tx.send(Err(printed));
            }
        });
        let port = match port.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(port)) => port,
            Ok(Err(printed)) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!("moto's server ({python}) exited ({status}) before listening; it printed:\n{printed}")
            }
            Err(_) => {
                let _ = child.kill();
                panic!("moto's server ({python}) did not say where it listens within 60 s")
            }
        };
        let moto = Moto { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(moto.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto's server said it listens on {} but takes no connection",
                moto.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// Makes a bucket with a plain request (object_store does not make buckets).
    fn make_bucket(&self, name: &str) {
        let mut conn = TcpStream::connect(self.addr).unwrap();
        write!(conn, "PUT /{name} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.addr)
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "making bucket {name}: {answer}");
    }

    /// Settings (object_store's names) that reach this server; moto takes any credentials.
    fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", format!("http://{}", self.addr)),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "moto-key".into()),
            ("aws_secret_access_key", "moto-secret".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_virtual_hosted_style_request", "false".into()),
        ]
    }

    /// The same as `AWS_*` variables for a `baton` process.
    fn env(&self) -> Vec<(String, String)> {
        self.options().into_iter().map(|(k, v)| (k.to_uppercase(), v)).collect()
    }

    fn store(&self) -> std::sync::Arc<dyn ObjectStore> {
        baton_connectors::open_url_with(&format!("s3://{BUCKET}"), self.options()).unwrap().0
    }

    /// A `baton` command with this server's settings in its environment.
    fn baton(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new(BATON).args(args).envs(self.env()).env("BATON_LOG", "warn").current_dir(dir).output().unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn put(store: &dyn ObjectStore, key: &str, bytes: Vec<u8>) {
    store.put(&key.into(), bytes.into()).await.unwrap();
}

async fn get(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    store.get(&key.into()).await.unwrap().bytes().await.unwrap().to_vec()
}

async fn keys(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(prefix);
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    let mut keys: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_tables_catalogs_sort_and_wordcount_on_moto() {
    let moto = Moto::start();
    moto.make_bucket(BUCKET);
    let store = moto.store();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Tables: a CSV file, and a Parquet file that baton writes from it.
    let regions = "r_regionkey,r_name\n0,AFRICA\n1,AMERICA\n2,ASIA\n3,EUROPE\n4,MIDDLE EAST\n";
    std::fs::write(d.join("regions.csv"), regions).unwrap();
    let nations = "n_nationkey,n_regionkey\n0,0\n1,1\n2,1\n3,1\n4,4\n5,0\n6,3\n7,3\n8,2\n9,2\n";
    std::fs::write(d.join("nations.csv"), nations).unwrap();
    let t = format!("t={}", d.join("nations.csv").display());
    let nations_pq = d.join("nations.parquet").display().to_string();
    let args = ["sql", "SELECT * FROM t", "--table", &t, "--format", "parquet", "-o", &nations_pq, "--in-process"];
    ok(&moto.baton(d, &args));
    put(&*store, "tables/regions.csv", regions.as_bytes().to_vec()).await;
    put(&*store, "tables/nations.parquet", std::fs::read(&nations_pq).unwrap()).await;

    let sql = "SELECT r_name, count(*) AS nations FROM n JOIN r ON n_regionkey = r_regionkey \
               GROUP BY r_name ORDER BY r_name";
    let expected = "r_name,nations\nAFRICA,2\nAMERICA,3\nASIA,2\nEUROPE,2\nMIDDLE EAST,1\n";
    let n = format!("n=s3://{BUCKET}/tables/nations.parquet");
    let r = format!("r=s3://{BUCKET}/tables/regions.csv");
    let out = moto.baton(d, &["sql", sql, "--table", &n, "--table", &r, "--workers", "2", "--format", "csv"]);
    assert_eq!(ok(&out), expected, "tables by --table");
    let catalog = d.join("catalog.toml");
    std::fs::write(
        &catalog,
        format!("[tables]\nn = \"s3://{BUCKET}/tables/nations.parquet\"\nr = \"s3://{BUCKET}/tables/regions.csv\"\n"),
    )
    .unwrap();
    let cat = catalog.display().to_string();
    let out = moto.baton(d, &["sql", sql, "--catalog", &cat, "--workers", "2", "--format", "csv"]);
    assert_eq!(ok(&out), expected, "tables by --catalog");
    // A table that is not there is an error naming it.
    let out = moto.baton(d, &["sql", "SELECT * FROM x", "--table", &format!("x=s3://{BUCKET}/nope.parquet")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("nope.parquet"), "{stderr}");

    // Sort: input and output on moto; the output commits and validates there.
    ok(&moto.baton(d, &["gensort", "in.bin", "--records", "20000", "--seed", "11"]));
    put(&*store, "sort/in.bin", std::fs::read(d.join("in.bin")).unwrap()).await;
    let input = format!("s3://{BUCKET}/sort/in.bin");
    let output = format!("s3://{BUCKET}/sort/out");
    let args = ["sort", &input, "-o", &output, "--mappers", "2", "--reducers", "3", "--workers", "2", "--validate"];
    let stdout = ok(&moto.baton(d, &args));
    assert!(stdout.contains("validated: 3 files, 20000 records, globally sorted"), "{stdout}");
    let listed = keys(&*store, "sort/out").await;
    let parts: Vec<_> = listed.iter().filter(|k| k.contains("part-r-")).collect();
    assert_eq!(parts.len(), 3, "{listed:?}");
    assert!(listed.contains(&"sort/out/_SUCCESS".to_string()), "{listed:?}");
    assert!(!listed.iter().any(|k| k.contains("_temporary")), "staging left behind: {listed:?}");

    // Wordcount: the endpoint given only in the URLs' query (credentials from the environment).
    put(&*store, "words/a.txt", b"alpha beta\nbeta gamma\n".to_vec()).await;
    let query = format!("aws_endpoint=http://{}&aws_allow_http=true&aws_virtual_hosted_style_request=false", moto.addr);
    let input = format!("s3://{BUCKET}/words/a.txt?{query}");
    let output = format!("s3://{BUCKET}/counts?{query}");
    let out = Command::new(BATON)
        .args(["wordcount", &input, "-o", &output, "--reducers", "1", "--workers", "2"])
        .envs(moto.env().into_iter().filter(|(k, _)| k != "AWS_ENDPOINT"))
        .env("BATON_LOG", "warn")
        .current_dir(d)
        .output()
        .unwrap();
    ok(&out);
    let counts = String::from_utf8(get(&*store, "counts/part-r-00000").await).unwrap();
    assert!(counts.contains("alpha\t1") && counts.contains("beta\t2") && counts.contains("gamma\t1"), "{counts}");
    let manifest: serde_json::Value = serde_json::from_slice(&get(&*store, "counts/_SUCCESS").await).unwrap();
    assert!(manifest.to_string().contains("part-r-00000"), "{manifest}");
}
