//! `baton`: the command line of Baton, the data-passing fabric for serverless analytics.

mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cmd::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BATON_LOG").unwrap_or_else(|_| "warn,baton=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: many errors already quote their
/// source's text (an object store's quotes the OS error), which `{:#}` would print again.
fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_chain_names_each_cause_once() {
        let os = std::io::Error::from_raw_os_error(30);
        let inner = anyhow::Error::new(std::io::Error::other(format!("Unable to delete file /o/_SUCCESS: {os}")));
        let e = inner.context("cannot write the output /o");
        let line = super::chain(&e);
        assert_eq!(line.matches("Read-only file system").count(), 1, "{line}");
        assert!(line.starts_with("cannot write the output /o: Unable to delete"), "{line}");
    }
}
