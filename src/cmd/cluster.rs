//! `baton certs` and `baton token`: a cluster's TLS material and job tokens.

use std::path::PathBuf;

use baton_fabric::JobId;
use baton_fabric::net::token::unix_ms_now;
use baton_fabric::net::{Audience, Scopes, TlsDir};
use clap::Args;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca.key, node.pem, node.key, node.names, token.key and
    /// token.pub into (with --from: a node's set, which has no ca.key and no token.key).
    #[arg(long, default_value = "baton-data/tls")]
    out: PathBuf,
    /// Names and addresses the node certificate is for (besides baton-node and the loopback
    /// names): clients check that a node's certificate names the address they reached it at.
    #[arg(long = "name")]
    names: Vec<String>,
    /// Issue one more node its own certificate from this existing cluster's CA, instead of
    /// making a new cluster.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Days the node certificate is valid (the CA: ten years, or longer if this is).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

pub fn certs(args: CertsArgs) -> anyhow::Result<()> {
    let validity = std::time::Duration::from_secs(u64::from(args.days) * 86_400);
    let out = TlsDir::new(&args.out).with_validity(validity);
    match &args.from {
        Some(cluster) => {
            TlsDir::new(cluster).issue_node(&out, &args.names)?;
            println!(
                "node certificate signed by the CA in {} written to {}, with the CA and the token public key \
                 (the node checks tokens; it cannot mint them)",
                cluster.display(),
                args.out.display()
            );
        }
        None => {
            out.generate(&args.names)?;
            println!("cluster CA, node certificate and token key pair written to {}", args.out.display());
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The job the token grants.
    job: JobId,
    /// How long the token works, in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// What the token allows: read, write, end (open, renew and end the job), comma separated,
    /// or all.
    #[arg(long, default_value = "all", value_parser = parse_scopes)]
    scope: Scopes,
    /// The one node that accepts the token, by a name its certificate was issued for
    /// (`baton certs --name`); any node of the cluster if not given.
    #[arg(long)]
    audience: Option<String>,
    /// The cluster's TLS material (its token.key signs the token).
    #[arg(long, default_value = "baton-data/tls")]
    tls_dir: PathBuf,
}

fn parse_scopes(text: &str) -> Result<Scopes, String> {
    text.parse()
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let key = TlsDir::new(&args.tls_dir).signer()?;
    const MAX_TTL_S: u64 = 366 * 24 * 3600;
    if args.ttl == 0 || args.ttl > MAX_TTL_S {
        anyhow::bail!("--ttl {} s: a token lasts more than 0 s and at most a year ({MAX_TTL_S} s)", args.ttl);
    }
    let expires = unix_ms_now() + args.ttl * 1000;
    let audience = args.audience.as_deref().map_or(Audience::ANY, Audience::node);
    println!("{}", key.mint(args.job, expires, args.scope, audience));
    Ok(())
}
