//! `baton`: the command line of Baton, the data-passing fabric for serverless analytics.

mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cmd::Cli::parse_from(arguments(std::env::args_os().collect()));
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

/// The command line, or `baton lambda` when this binary is a Lambda function's `bootstrap`
/// (as `cargo lambda build` names it) started with no arguments by the Lambda runtime.
fn arguments(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let bootstrap = args.first().and_then(|a| std::path::Path::new(a).file_name()).is_some_and(|n| n == "bootstrap");
    if bootstrap && args.len() == 1 && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        args.push("lambda".into());
    }
    args
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
    fn a_bootstrap_run_by_lambda_is_the_lambda_worker_and_baton_stays_itself() {
        let args = |list: &[&str]| list.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        // SAFETY: this test alone reads or writes AWS_LAMBDA_RUNTIME_API in this process.
        unsafe { std::env::set_var("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001") };
        assert_eq!(super::arguments(args(&["/var/task/bootstrap"])), args(&["/var/task/bootstrap", "lambda"]));
        assert_eq!(super::arguments(args(&["/usr/bin/baton"])), args(&["/usr/bin/baton"]));
        assert_eq!(super::arguments(args(&["bootstrap", "sort"])), args(&["bootstrap", "sort"]));
        // SAFETY: as above.
        unsafe { std::env::remove_var("AWS_LAMBDA_RUNTIME_API") };
        assert_eq!(super::arguments(args(&["bootstrap"])), args(&["bootstrap"]));
    }

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
