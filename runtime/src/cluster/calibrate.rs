//! What a cluster's paths really do: measured transfers kept beside its cluster file
//! (`calibration.toml`), from probes (`baton cluster probe`, run by `cluster up` too) and from
//! jobs run with `--calibrate`; the planner's [`Calibration`] refits its model from them.
//!
//! The probe measures, from the driver's host, each host's node over QUIC (what a direct pull
//! between hosts crosses: the host's link), each node through its socket (VM-local: the socket
//! is a file, reachable on the same machine), the remote store's node, and the object store the
//! hosts share: the round trip of a small object and the time of a large one, so that the fit
//! separates latency from bandwidth.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{Audience, Scopes, TlsDir};
use baton_fabric::path::direct::DirectPath;
use baton_fabric::path::vm_local::VmLocalPath;
use baton_fabric::{DataPath, EdgeId, JobId, ObjectKey};
use baton_planner::{Calibration, Measurement, Path};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ClusterFile;
use crate::error::{Error, Result};

/// Samples kept per path: the newest.
const KEEP: usize = 64;

/// One measured transfer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The planner's name of the path (`direct`, `vm-local`, `object-store`).
    pub path: String,
    /// Bytes moved.
    pub bytes: u64,
    /// Requests made.
    pub requests: u64,
    /// Tasks that made them at once.
    pub tasks: u32,
    /// Seconds it took.
    pub seconds: f64,
    /// What measured it (`probe h0`, `job 1a2b`).
    pub source: String,
}

/// The samples of a cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stored {
    /// Oldest first.
    #[serde(default, rename = "sample")]
    pub samples: Vec<Sample>,
}

impl Stored {
    /// Where the samples of the cluster in `cluster_file` are kept.
    pub fn location(cluster_file: &FsPath) -> PathBuf {
        cluster_file.with_file_name("calibration.toml")
    }

    /// The samples kept for `cluster_file` (none yet: empty).
    pub fn load(cluster_file: &FsPath) -> Result<Self> {
        let path = Self::location(cluster_file);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| Error::BadJob { reason: format!("calibration {}: {e}", path.display()) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// Writes the samples beside `cluster_file`, whole (a new private file renamed into place).
    pub fn save(&self, cluster_file: &FsPath) -> Result<()> {
        let path = Self::location(cluster_file);
        let text = toml::to_string(self).map_err(|e| Error::BadJob { reason: e.to_string() })?;
        let staged = path.with_extension(format!("toml.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        let mut file = baton_fabric::private::create_file(&staged)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| Error::io("write", &staged, e))?;
        std::fs::rename(&staged, &path).map_err(|e| Error::io("rename", &path, e))
    }

    /// Adds `samples`, keeping the newest [`KEEP`] of each path.
    pub fn add(&mut self, samples: impl IntoIterator<Item = Sample>) {
        self.samples.extend(samples);
        let mut kept: Vec<&Sample> = Vec::new();
        for sample in self.samples.iter().rev() {
            if kept.iter().filter(|s| s.path == sample.path).count() < KEEP {
                kept.push(sample);
            }
        }
        self.samples = kept.into_iter().rev().cloned().collect();
    }

    /// The planner's calibration from the samples (ones naming an unknown path are skipped).
    pub fn calibration(&self) -> Calibration {
        let mut calibration = Calibration::default();
        for s in &self.samples {
            if let Ok(path) = baton_planner::spec::parse_path(&s.path) {
                calibration.record(Measurement {
                    path,
                    bytes: s.bytes,
                    requests: s.requests,
                    tasks: s.tasks,
                    seconds: s.seconds,
                });
            }
        }
        calibration
    }
}

/// What the probe of one host measured.
#[derive(Clone, Debug)]
pub struct HostProbe {
    /// The host.
    pub name: String,
    /// Its node over QUIC: the median round trip of a small object (seconds), and a large
    /// object's put and get.
    pub quic: Timing,
    /// Its node through its socket, when the file names one.
    pub local: Option<Timing>,
}

/// A small object's median round trip, and a large one's put and get, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Half the median time of a small object's put and get.
    pub round_trip_s: f64,
    /// The large object's put.
    pub put_s: f64,
    /// The large object's get.
    pub get_s: f64,
}

impl Timing {
    /// As samples of `path`: the small object's request, and the large object's get.
    pub fn samples(&self, path: Path, size: u64, source: &str) -> [Sample; 2] {
        let sample = |bytes, seconds| Sample {
            path: path.name().to_string(),
            bytes,
            requests: 1,
            tasks: 1,
            seconds,
            source: source.to_string(),
        };
        [sample(SMALL as u64, self.round_trip_s), sample(size, self.get_s)]
    }
}

const SMALL: usize = 1024;

/// Times `node` in `job` (which the caller opened): 20 small objects' round trips, then a
/// large object of `size` bytes put and got back.
pub async fn time_path(node: &dyn DataPath, job: JobId, size: u64) -> Result<Timing> {
    let small = Bytes::from(vec![1u8; SMALL]);
    let mut trips = Vec::new();
    for i in 0..20 {
        let key = ObjectKey::new(job, EdgeId(0), i, 0);
        let start = Instant::now();
        node.put(&key, small.clone()).await?;
        node.get(&key).await?;
        trips.push(start.elapsed().as_secs_f64() / 2.0);
    }
    trips.sort_by(f64::total_cmp);
    let large = Bytes::from(vec![7u8; size as usize]);
    let key = ObjectKey::new(job, EdgeId(1), 0, 0);
    let start = Instant::now();
    node.put(&key, large).await?;
    let put_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let got = node.get(&key).await?;
    let get_s = start.elapsed().as_secs_f64();
    if got.len() as u64 != size {
        return Err(Error::BadJob { reason: format!("the probe got back {} of {size} bytes", got.len()) });
    }
    Ok(Timing { round_trip_s: trips[trips.len() / 2], put_s, get_s })
}

/// Probes every host of `file` (a job of its own on each node, ended after), and the object
/// store (with `objects`' settings beside the environment's); returns each host's figures and
/// the samples.
pub async fn probe(
    file: &ClusterFile,
    size: u64,
    objects: &[(String, String)],
) -> Result<(Vec<HostProbe>, Vec<Sample>)> {
    let tls = TlsDir::new(&file.tls_dir);
    let key = tls.signer().map_err(|e| Error::BadJob {
        reason: format!("probing writes objects: it needs the cluster's token key ({e})"),
    })?;
    let job = JobId(0xb0b0_0000_0000 | u64::from(std::process::id()));
    let token = key.mint(job, unix_ms_now() + 600_000, Scopes::ALL, Audience::ANY);
    let (mut hosts, mut samples) = (Vec::new(), Vec::new());
    for host in &file.hosts {
        let source = format!("probe {}", host.name);
        let node = DirectPath::connect(host.node, &tls).await?;
        node.add_token(token);
        node.open_job(job, Duration::from_secs(600)).await?;
        let quic = time_path(&node, job, size).await;
        let local = match (&quic, &host.socket) {
            (Ok(_), Some(socket)) => match VmLocalPath::connect(socket).await {
                Ok(local) => {
                    local.add_token(token);
                    let _ = node.end_job(job).await;
                    node.open_job(job, Duration::from_secs(600)).await?;
                    Some(time_path(&local, job, size).await)
                }
                Err(e) => {
                    tracing::warn!("{}: cannot reach its node's socket {}: {e}", host.name, socket.display());
                    None
                }
            },
            _ => None,
        };
        let _ = node.end_job(job).await;
        let quic = quic?;
        let local = local.transpose()?;
        samples.extend(quic.samples(Path::Direct, size, &source));
        if let Some(local) = &local {
            samples.extend(local.samples(Path::VmLocal, size, &source));
        }
        hosts.push(HostProbe { name: host.name.clone(), quic, local });
    }
    if let Some(store) = &file.store {
        let spec = store.spec(&file.tls_dir);
        let text = token.to_string();
        spec.open_job(job, Some(&text), Duration::from_secs(600)).await?;
        let timing = match spec.open(Some(&text)).await {
            Ok(path) => time_path(path.as_ref(), job, size).await,
            Err(e) => Err(e),
        };
        let _ = spec.end_job(job, Some(&text)).await;
        samples.extend(timing?.samples(Path::RemoteStore, size, "probe store"));
    }
    if let Some(url) = &file.objects {
        let (store, prefix) = baton_connectors::open_url_with(url, objects.iter().cloned())?;
        let store: Arc<dyn DataPath> = Arc::new(baton_fabric::path::object_store::ObjectStorePath::new(store, prefix));
        let timing = time_path(store.as_ref(), job, size).await;
        let _ = store.purge_job(job).await;
        samples.extend(timing?.samples(Path::ObjectStore, size, "probe objects"));
    }
    Ok((hosts, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_kept_newest_per_path_and_refit_the_model() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("cluster.toml");
        assert!(Stored::load(&file).unwrap_or_else(|e| panic!("{e}")).samples.is_empty());
        let mut stored = Stored::default();
        let sample = |bytes, seconds| Sample {
            path: "direct".into(),
            bytes,
            requests: 1,
            tasks: 1,
            seconds,
            source: "test".into(),
        };
        // A 100 MB/s link with 1 ms of latency.
        stored
            .add((0..KEEP + 10).map(|i| if i % 2 == 0 { sample(1000, 0.001_01) } else { sample(100_000_000, 1.001) }));
        assert_eq!(stored.samples.len(), KEEP);
        stored.save(&file).unwrap_or_else(|e| panic!("{e}"));
        let again = Stored::load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.samples, stored.samples);
        let model = again.calibration().apply(&baton_planner::ClusterModel::uniform(2, 2, 1 << 30));
        let direct = model.path(Path::Direct).unwrap_or_else(|| panic!("no direct path"));
        assert!((direct.task_bandwidth / 100e6 - 1.0).abs() < 0.01, "{direct:?}");
        assert!((direct.latency_s / 0.001 - 1.0).abs() < 0.05, "{direct:?}");
        std::fs::write(file.with_file_name("calibration.toml"), "sample = 3").unwrap_or_else(|e| panic!("{e}"));
        assert!(Stored::load(&file).is_err());
    }
}
