//! Golden explain files: each `tests/golden/NAME.toml` is planned and explained, and the text
//! must equal `tests/golden/NAME.explain`. `BATON_BLESS=1 cargo test -p baton-planner` rewrites
//! the expected files after an intended change.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::path::Path;

use baton_planner::spec::PlanSpec;
use baton_planner::{explain, plan};

#[test]
fn explain_output_matches_the_golden_files() {
    let dir = Path::new(&manifest_dir()).join("tests/golden");
    let bless = std::env::var_os("BATON_BLESS").is_some();
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    entries.sort();
    for input in entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
        let spec = PlanSpec::from_toml(&std::fs::read_to_string(&input).unwrap()).unwrap();
        let text = explain(&plan(&spec.dag, &spec.cluster, spec.objective).unwrap());
        let golden = input.with_extension("explain");
        if bless {
            std::fs::write(&golden, &text).unwrap();
        } else {
            let expected = std::fs::read_to_string(&golden)
                .unwrap_or_else(|_| panic!("{} is missing: run with BATON_BLESS=1", golden.display()));
            assert_eq!(text, expected, "{} changed (BATON_BLESS=1 to accept)", golden.display());
        }
        checked += 1;
    }
    assert!(checked >= 4, "expected the golden DAGs, found {checked}");
}

/// The package's directory: as the test runner says when it runs the test (a test binary
/// reused from a build of another checkout, as a shared target directory allows, would carry
/// that checkout's path), else as it was when compiled.
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
