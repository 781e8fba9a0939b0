//! The word-count benchmark: `baton wordcount` of generated text (words drawn from a
//! 20,000-word vocabulary with a Zipf-like skew, as natural text has), three ways taking
//! turns — the planner's least-time plan, its least-cost plan, and every edge through the
//! object store (file://) — each run timed as a process and priced from its summary.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::sort::{Variant, WORKER_MEMORY, human_bytes, take_turns};

/// What to run.
#[derive(Clone, Debug)]
pub struct WordCountOptions {
    /// The `baton` binary.
    pub exe: PathBuf,
    /// Bytes of text.
    pub bytes: u64,
    /// Runs of each variant.
    pub repeats: usize,
    /// Where the text and outputs go.
    pub work_dir: PathBuf,
}

/// The report.
#[derive(Clone, Debug, Serialize)]
pub struct WordCountReport {
    /// Bytes of text counted.
    pub bytes: u64,
    /// Map and reduce tasks.
    pub tasks: u32,
    /// The variants.
    pub variants: Vec<Variant>,
}

/// Writes `bytes` (about) of text to `file`: lines of words, the same for the same size.
pub fn write_text(file: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?,
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut written = 0u64;
    let mut line = String::new();
    while written < bytes {
        line.clear();
        for _ in 0..12 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // Squaring a uniform draw skews it towards small ranks: a few words are common.
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let rank = (u * u * 20_000.0) as u64;
            line.push_str(&format!("w{rank:x} "));
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    out.flush()?;
    Ok(())
}

/// Runs it (blocking).
pub fn run(options: &WordCountOptions) -> anyhow::Result<WordCountReport> {
    std::fs::create_dir_all(&options.work_dir)?;
    let input = options.work_dir.join(format!("text-{}.txt", options.bytes));
    if std::fs::metadata(&input).map(|m| m.len() < options.bytes).unwrap_or(true) {
        write_text(&input, options.bytes)?;
    }
    let tasks = ((options.bytes >> 27) as u32).max(4);
    let out = options.work_dir.join("wordcount-out");
    let summary = options.work_dir.join("wordcount-summary.json");
    let args = |path: &str, objective: &str| -> Vec<String> {
        [
            "wordcount",
            &input.display().to_string(),
            "--output",
            &out.display().to_string(),
            "--mappers",
            &tasks.to_string(),
            "--reducers",
            &tasks.to_string(),
            "--path",
            path,
            "--objective",
            objective,
            "--worker-memory",
            &format!("{}MiB", WORKER_MEMORY >> 20),
            "--summary-json",
            &summary.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let variants = [
        ("planned", args("auto", "least-time")),
        ("planned for least cost", args("auto", "least-cost")),
        ("object-store only (file://)", args("object-store", "least-time")),
    ];
    let what = format!("wordcount {}", human_bytes(options.bytes));
    let reports = take_turns(&options.exe, &options.work_dir, &variants, options.repeats, &summary, &what)?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(WordCountReport { bytes: options.bytes, tasks, variants: reports })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_text_is_the_same_for_the_same_size_and_skewed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_text(&a, 200_000).unwrap();
        write_text(&b, 200_000).unwrap();
        let text = std::fs::read_to_string(&a).unwrap();
        assert_eq!(text, std::fs::read_to_string(&b).unwrap());
        assert!(text.len() >= 200_000);
        let mut counts = std::collections::HashMap::new();
        baton_runtime::mapreduce::wordcount::count_words(&text, &mut counts);
        let mut freq: Vec<u64> = counts.values().copied().collect();
        freq.sort_unstable_by(|a, b| b.cmp(a));
        assert!(freq[0] > 20 * freq[freq.len() / 2], "the commonest word is far commoner than the median one");
    }
}
