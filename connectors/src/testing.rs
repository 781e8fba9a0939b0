//! A real S3 server for tests (feature `testing`): s3s-fs over a local directory, served on
//! 127.0.0.1 by the test that starts it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

pub use crate::slowdown::{Limiter, RateLimits, slow_down};

/// The access key the server accepts.
pub const KEY: &str = "baton-test-key";
/// Its secret.
pub const SECRET: &str = "baton-test-secret";
/// The bucket it serves (a directory of the root).
pub const BUCKET: &str = "baton-test";

/// Serves `root` over the S3 protocol on 127.0.0.1 (bucket [`BUCKET`] is `root/baton-test`,
/// created here) until the runtime stops, to clients that sign with [`KEY`] and [`SECRET`];
/// returns the address.
pub async fn start_s3(root: &Path) -> std::io::Result<SocketAddr> {
    serve(root, true).await
}

/// Like [`start_s3`], but open to unsigned requests: reach it with [`open_url`], which needs
/// no credentials (what a benchmark on one machine wants).
pub async fn start_open_s3(root: &Path) -> std::io::Result<SocketAddr> {
    serve(root, false).await
}

/// The URL of `prefix` in the bucket of an open server at `addr`, with every setting in its
/// query (see [`crate`]).
pub fn open_url(addr: SocketAddr, prefix: &str) -> String {
    format!(
        "s3://{BUCKET}/{prefix}?aws_endpoint=http://{addr}&aws_allow_http=true&aws_skip_signature=true\
         &aws_region=us-east-1&aws_virtual_hosted_style_request=false"
    )
}

/// Serves `root` like [`start_s3`] (signed requests only) on `addr`: an S3 host of its own among
/// emulated hosts.
pub async fn start_s3_on(root: &Path, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    serve_on(root, true, addr, None).await
}

/// Like [`start_s3_on`], answering `503 SlowDown` past `limits` per prefix (S3's documented
/// rates: [`RateLimits::S3`]); the limiter counts what it let through and refused.
pub async fn start_limited_s3_on(
    root: &Path,
    addr: SocketAddr,
    limits: RateLimits,
) -> std::io::Result<(SocketAddr, Arc<Limiter>)> {
    let limiter = Arc::new(Limiter::new(limits));
    let addr = serve_on(root, true, addr, Some(limiter.clone())).await?;
    Ok((addr, limiter))
}

async fn serve(root: &Path, auth: bool) -> std::io::Result<SocketAddr> {
    serve_on(root, auth, ([127, 0, 0, 1], 0).into(), None).await
}

async fn serve_on(
    root: &Path,
    auth: bool,
    addr: SocketAddr,
    limiter: Option<Arc<Limiter>>,
) -> std::io::Result<SocketAddr> {
    std::fs::create_dir_all(root.join(BUCKET))?;
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut builder = S3ServiceBuilder::new(fs);
    if auth {
        builder.set_auth(SimpleAuth::from_single(KEY, SECRET));
    }
    let service = builder.build();
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let (service, limiter) = (service.clone(), limiter.clone());
            let limited = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (service, limiter) = (service.clone(), limiter.clone());
                async move {
                    if let Some(limiter) = &limiter
                        && !limiter.admit(req.method().as_str(), req.uri().path())
                    {
                        return Ok(slow_down(req.uri().path()));
                    }
                    hyper::service::Service::call(&service, req).await
                }
            });
            let conn = http.serve_connection(TokioIo::new(socket), limited).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok(addr)
}

/// The settings that reach the server at `addr` with its credentials, by object_store's
/// option names (for [`crate::open_url_with`]).
pub fn options(addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("aws_endpoint", format!("http://{addr}")),
        ("aws_allow_http", "true".into()),
        ("aws_access_key_id", KEY.into()),
        ("aws_secret_access_key", SECRET.into()),
        ("aws_region", "us-east-1".into()),
        ("aws_virtual_hosted_style_request", "false".into()),
    ]
}

/// The same settings as `AWS_*` environment variables (for a `baton` process).
pub fn env(addr: SocketAddr) -> Vec<(String, String)> {
    options(addr).into_iter().map(|(k, v)| (k.to_uppercase(), v)).collect()
}
