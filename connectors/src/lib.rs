//! Object stores by URL, for Baton's object-store path and for SQL tables.
//!
//! | URL | store | settings |
//! | --- | --- | --- |
//! | `file:///abs/dir` | the local file system under `dir` | — |
//! | `memory://` | a new in-process store (tests, single-process runs) | — |
//! | `s3://bucket/prefix` | Amazon S3 or any S3-compatible server | `AWS_*` environment variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...), then the URL's query, then options given to [`open_url_with`] |
//!
//! An S3 URL's query sets options by object_store's names, so one string says where a store
//! is and how to reach it — and travels to every worker as it is:
//! `s3://bucket/runs?aws_endpoint=http://127.0.0.1:9000&aws_allow_http=true`. Secrets are
//! refused there (a URL ends up in logs and task specs): credentials come from the environment.

#[cfg(feature = "testing")]
pub mod slowdown;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use baton_fabric::path::object_store::ObjectStorePath;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::Url;

/// Why a URL could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a URL.
    #[error("{url:?} is not a URL: {source}")]
    BadUrl {
        /// The text given.
        url: String,
        /// Why it did not parse.
        source: url::ParseError,
    },
    /// The URL's scheme names no store Baton knows.
    #[error("unsupported object store scheme {scheme:?} in {url}: use file://, memory:// or s3://")]
    UnsupportedScheme {
        /// The scheme.
        scheme: String,
        /// The URL.
        url: String,
    },
    /// The store could not be set up from the URL and settings.
    #[error("cannot open {url}: {source}")]
    Open {
        /// The URL.
        url: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A URL's query sets an option that is a secret.
    #[error("{url}: {key} is a secret and does not belong in a URL: set it in the environment")]
    SecretInUrl {
        /// The URL, credentials hidden.
        url: String,
        /// The option.
        key: String,
    },
    /// A file:// URL that does not name an existing directory.
    #[error("{url}: {reason}")]
    BadLocation {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// The directory a `file://` URL names, or `None` for any other store (or text that is not a
/// URL): lets a caller write local files in ways an object store cannot.
pub fn local_dir(url: &str) -> Option<std::path::PathBuf> {
    Url::parse(url).ok().filter(|u| u.scheme() == "file").and_then(|u| u.to_file_path().ok())
}

/// Opens the store `url` names, with settings from the environment.
pub fn open_url(url: &str) -> Result<(Arc<dyn ObjectStore>, Path), Error> {
    open_url_with(url, std::iter::empty::<(String, String)>())
}

/// Opens the store `url` names; `options` (e.g. `("aws_endpoint", "http://127.0.0.1:9000")`)
/// override the environment.
pub fn open_url_with<K, V>(
    url: &str,
    options: impl IntoIterator<Item = (K, V)>,
) -> Result<(Arc<dyn ObjectStore>, Path), Error>
where
    K: AsRef<str>,
    V: Into<String>,
{
    let parsed = Url::parse(url).map_err(|source| Error::BadUrl { url: url.to_string(), source })?;
    // Errors show the URL without credentials: a password in it is refused, never echoed.
    let shown = redacted(&parsed);
    let url = shown.as_str();
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::SecretInUrl { url: shown.clone(), key: "user:password@".into() });
    }
    let open = |source| Error::Open { url: url.to_string(), source };
    match parsed.scheme() {
        "file" => {
            let dir = parsed.to_file_path().map_err(|()| Error::BadLocation {
                url: url.to_string(),
                reason: "not an absolute file path".into(),
            })?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::BadLocation {
                url: url.to_string(),
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
            let fs = LocalFileSystem::new_with_prefix(&dir).map_err(open)?;
            Ok((Arc::new(fs), Path::default()))
        }
        "memory" => Ok((Arc::new(InMemory::new()), Path::from(parsed.path().trim_matches('/')))),
        "s3" | "s3a" => {
            let mut bare = parsed.clone();
            bare.set_query(None);
            let mut builder = AmazonS3Builder::from_env().with_url(bare.as_str());
            for (k, v) in parsed.query_pairs() {
                let k = k.to_ascii_lowercase();
                if SECRETS.contains(&k.as_str()) {
                    return Err(Error::SecretInUrl { url: bare.to_string(), key: k });
                }
                let key = k.parse().map_err(|source| Error::Open { url: bare.to_string(), source })?;
                builder = builder.with_config(key, v.into_owned());
            }
            for (k, v) in options {
                let key = k.as_ref().parse().map_err(open)?;
                builder = builder.with_config(key, v);
            }
            let store = builder.build().map_err(open)?;
            Ok((Arc::new(store), Path::from(parsed.path().trim_matches('/'))))
        }
        other => Err(Error::UnsupportedScheme { scheme: other.to_string(), url: url.to_string() }),
    }
}

/// `url` with its user name and password, and the values of secret options in its query,
/// replaced by `***`: what messages may show.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() {
        let _ = shown.set_username("***");
    }
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    if shown.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRETS.contains(&k.to_ascii_lowercase().as_str());
                (k.into_owned(), if secret { "***".to_string() } else { v.into_owned() })
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Options that a URL's query may not set.
const SECRETS: [&str; 6] =
    ["aws_secret_access_key", "secret_access_key", "aws_session_token", "session_token", "aws_token", "token"];

/// The fabric's object-store path for `url`.
pub fn object_store_path(url: &str) -> Result<ObjectStorePath, Error> {
    let (store, prefix) = open_url(url)?;
    Ok(ObjectStorePath::new(store, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_urls_name_local_directories() {
        assert_eq!(local_dir("file:///tmp/out"), Some(std::path::PathBuf::from("/tmp/out")));
        assert_eq!(local_dir("s3://bucket/out"), None);
        assert_eq!(local_dir("memory://"), None);
        assert_eq!(local_dir("/tmp/out"), None, "a path is not a URL");
    }

    #[test]
    fn credentials_in_a_url_are_refused_and_never_shown() {
        for url in ["s3://alice:hunter2@bucket/x", "s3://bucket/x?aws_secret_access_key=hunter2&region=eu"] {
            let err = open_url(url).map(drop).expect_err("refused").to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("***") || err.contains("secret"), "{err}");
        }
        let err = open_url("ftp://bob:hunter2@host/x").map(drop).expect_err("refused").to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn schemes_are_checked() {
        assert!(matches!(open_url("ftp://x/y"), Err(Error::UnsupportedScheme { .. })));
        assert!(matches!(open_url("not a url"), Err(Error::BadUrl { .. })));
        assert!(open_url("memory://").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/objects", dir.path().display());
        assert!(open_url(&url).is_ok());
        assert!(dir.path().join("objects").is_dir());
    }
}
