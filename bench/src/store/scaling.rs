//! The elastic store's throughput with 1, 2 and 4 storage nodes, each an emulated host whose
//! link is capped (`cluster up --elastic-store N`, so it needs root): 1 MiB puts and gets from
//! one client outside the hosts (on the bridge, its own link not capped), the same requests in
//! flight for every count of nodes, the variants taking turns within a count and the median run
//! kept. The job's homes are spread evenly over the nodes (its hints ask for four blocks per
//! node), so keys spread too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use baton_fabric::JobId;
use baton_fabric::net::TlsDir;
use baton_runtime::cluster::ClusterFile;
use baton_store::alloc::Hints;
use baton_store::client::StoreClient;
use bytes::Bytes;
use serde::Serialize;

use super::{BLOCK, MIB, OpRow, StoreOptions, measure, medians, object};

/// Storage nodes in each run.
pub const COUNTS: [usize; 3] = [1, 2, 4];

/// Each storage host's link.
pub const NIC: &str = "1gbit";

/// The figures, or why there are none.
#[derive(Clone, Debug, Serialize)]
pub struct Scaling {
    /// Each storage host's link, as `tc` writes it.
    pub nic: String,
    /// Puts and gets per count of nodes (`system` is `<n> nodes`), the median run of each.
    pub rows: Vec<OpRow>,
    /// Why it did not run (not root).
    pub skipped: Option<String>,
}

/// An emulation, taken down when dropped (also when a run fails).
struct Emulation<'a> {
    exe: &'a Path,
    dir: PathBuf,
}

impl Drop for Emulation<'_> {
    fn drop(&mut self) {
        let _ =
            Command::new(self.exe).args(["cluster", "down", "--dir"]).arg(&self.dir).env("BATON_LOG", "warn").output();
        // Empty once down has run (and left as it is if not).
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Brings up `nodes` storage hosts (and the one compute host a cluster file needs, with no
/// workers).
fn up<'a>(options: &'a StoreOptions, nodes: usize) -> anyhow::Result<Emulation<'a>> {
    let dir = options.work_dir.join(format!("scaling-{}-{nodes}", std::process::id()));
    let out = Command::new(&options.exe)
        .args(["cluster", "up", "--emulate", "1", "--workers", "0", "--nic", NIC, "--memory", "512MiB"])
        .args(["--elastic-store", &nodes.to_string(), "--store-block", &BLOCK.to_string(), "--dir"])
        .arg(&dir)
        .env("BATON_LOG", "warn")
        .output()
        .with_context(|| format!("running {}", options.exe.display()))?;
    let emulation = Emulation { exe: &options.exe, dir };
    if !out.status.success() {
        bail!("cluster up --elastic-store {nodes}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(emulation)
}

/// Runs it, or says why not.
pub async fn run(options: &StoreOptions) -> anyhow::Result<Scaling> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let why = "SKIPPED: the scaling run needs root (emulated hosts are network namespaces)";
        eprintln!("{why}");
        return Ok(Scaling { nic: NIC.into(), rows: Vec::new(), skipped: Some(why.into()) });
    }
    let ops = if options.quick { 48 } else { 768 };
    let repeats = if options.quick { 1 } else { super::REPEATS };
    let keys = 256.min(ops);
    let objects: Arc<Vec<Bytes>> = Arc::new((0..keys).map(|k| object(MIB, k)).collect());
    let mut rows = Vec::new();
    for nodes in COUNTS {
        let emulation = up(options, nodes)?;
        let file = ClusterFile::read(&emulation.dir.join("cluster.toml"))?;
        let store = file.store.as_ref().context("the emulation has no store")?;
        let etcd = store.etcd_client()?.context("the emulation's store has no etcd")?;
        let hints = Hints { bytes: nodes as u64 * 4 * BLOCK, ..Hints::default() };
        let job = JobId(0x5ca1e + nodes as u64);
        let tls = TlsDir::new(&file.tls_dir);
        let client = Arc::new(StoreClient::open(&etcd, &tls, job, hints, Duration::from_secs(30)).await?);
        let system = format!("{nodes} nodes");
        let mut runs = Vec::new();
        for _ in 0..repeats {
            let (c, o) = (client.clone(), objects.clone());
            runs.push(
                measure(&system, "put", MIB, ops, options.clients, move |_, i| {
                    let (c, o) = (c.clone(), o.clone());
                    async move { Ok(c.put(&format!("k{}", i % keys), o[i % keys].clone()).await.map(drop)?) }
                })
                .await?,
            );
            let (c, o) = (client.clone(), objects.clone());
            runs.push(
                measure(&system, "get", MIB, ops, options.clients, move |_, i| {
                    let (c, o) = (c.clone(), o.clone());
                    async move {
                        let bytes = c.get(&format!("k{}", i % keys)).await?;
                        anyhow::ensure!(bytes == o[i % keys], "a get of key {} read other bytes", i % keys);
                        Ok(())
                    }
                })
                .await?,
            );
        }
        rows.extend(medians(runs));
        if let Ok(client) = Arc::try_unwrap(client) {
            client.close().await?;
        }
        drop(emulation);
    }
    Ok(Scaling { nic: NIC.into(), rows, skipped: None })
}

/// The scaling table as Markdown.
pub fn markdown(scaling: &Scaling, clients: usize) -> String {
    let mut out = format!(
        "\n## Scaling over storage nodes\n\nEach storage node an emulated host behind a {} link (tbf); one client \
         on the bridge, {clients} requests of 1 MiB in flight; the median of the runs.\n\n",
        scaling.nic
    );
    if let Some(why) = &scaling.skipped {
        out.push_str(&format!("{why}\n"));
        return out;
    }
    out.push_str("| nodes | put MB/s | get MB/s | put p99 ms | get p99 ms | put vs 1 node | get vs 1 node |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    let find =
        |nodes: usize, op: &str| scaling.rows.iter().find(|r| r.system == format!("{nodes} nodes") && r.op == op);
    for nodes in COUNTS {
        let (Some(put), Some(get)) = (find(nodes, "put"), find(nodes, "get")) else { continue };
        let ratio = |row: &OpRow, op: &str| find(1, op).map_or(0.0, |one| row.mb_per_s / one.mb_per_s);
        out.push_str(&format!(
            "| {nodes} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x |\n",
            put.mb_per_s,
            get.mb_per_s,
            put.p99_ms,
            get.p99_ms,
            ratio(put, "put"),
            ratio(get, "get")
        ));
    }
    out
}
