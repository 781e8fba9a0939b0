//! `baton bench compare A.json B.json`: the change of every figure from one run to another,
//! matched by key, so that a change's effect reads off two runs.

use super::report::{Better, Figure, Report, format_value};

/// Changes smaller than this fraction count as none (run-to-run noise on a quiet machine).
pub const NOISE: f64 = 0.05;

/// What happened to one figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Its key.
    pub key: String,
    /// Its label.
    pub label: String,
    /// Its unit.
    pub unit: String,
    /// In the first report.
    pub before: f64,
    /// In the second.
    pub after: f64,
    /// `after / before - 1`.
    pub relative: f64,
    /// Better, worse, or within [`NOISE`].
    pub verdict: Verdict,
}

/// Which way a figure moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// By more than the noise, the good way.
    Better,
    /// By more than the noise, the bad way.
    Worse,
    /// Within the noise.
    Same,
}

/// Both reports' figures and limits, compared.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Figures in both.
    pub changes: Vec<Change>,
    /// Keys only the first has.
    pub only_before: Vec<String>,
    /// Keys only the second has.
    pub only_after: Vec<String>,
}

fn all(r: &Report) -> impl Iterator<Item = &Figure> {
    r.limits.iter().chain(&r.figures)
}

/// Compares `before` with `after`.
pub fn compare(before: &Report, after: &Report) -> Comparison {
    let mut out = Comparison::default();
    for b in all(before) {
        let Some(a) = all(after).find(|a| a.key == b.key) else {
            out.only_before.push(b.key.clone());
            continue;
        };
        let relative = if b.value == a.value { 0.0 } else { a.value / b.value - 1.0 };
        let verdict = if !relative.is_finite() || relative.abs() < NOISE {
            Verdict::Same
        } else if (relative < 0.0) == (b.better == Better::Lower) {
            Verdict::Better
        } else {
            Verdict::Worse
        };
        out.changes.push(Change {
            key: b.key.clone(),
            label: b.label.clone(),
            unit: b.unit.clone(),
            before: b.value,
            after: a.value,
            relative,
            verdict,
        });
    }
    out.only_after = all(after).filter(|a| !all(before).any(|b| b.key == a.key)).map(|a| a.key.clone()).collect();
    out
}

impl Comparison {
    /// As a Markdown table, then the figures only one side has.
    pub fn markdown(&self) -> String {
        let count = |v: Verdict| self.changes.iter().filter(|c| c.verdict == v).count();
        let mut md = format!(
            "{} figures compared: {} better, {} worse, {} within ±{:.0}%\n\n| figure | before | after | change | |\n|---|---:|---:|---:|---|\n",
            self.changes.len(),
            count(Verdict::Better),
            count(Verdict::Worse),
            count(Verdict::Same),
            NOISE * 100.0
        );
        for c in &self.changes {
            md.push_str(&format!(
                "| {} | {} | {} | {:+.1}% | {} |\n",
                c.label,
                format_value(c.before, &c.unit),
                format_value(c.after, &c.unit),
                c.relative * 100.0,
                match c.verdict {
                    Verdict::Better => "better",
                    Verdict::Worse => "**worse**",
                    Verdict::Same => "",
                }
            ));
        }
        for (side, keys) in [("first", &self.only_before), ("second", &self.only_after)] {
            if !keys.is_empty() {
                md.push_str(&format!("\nOnly in the {side} report: {}\n", keys.join(", ")));
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::report::tests::sample;

    #[test]
    fn a_report_against_itself_shows_no_change() {
        let r = sample();
        let c = compare(&r, &r);
        assert_eq!(c.changes.len(), r.limits.len() + r.figures.len());
        assert!(c.changes.iter().all(|c| c.verdict == Verdict::Same && c.relative == 0.0));
        assert!(c.only_before.is_empty() && c.only_after.is_empty());
        assert!(c.markdown().contains("0 better, 0 worse"), "{}", c.markdown());
    }

    #[test]
    fn faster_times_and_higher_throughputs_are_better_and_missing_figures_are_named() {
        let before = sample();
        let mut after = sample();
        after.figures[0].value = 1.0; // 2 s → 1 s: better
        after.figures[1].value = 2500.0; // 5000 → 2500 MB/s: worse
        after.figures.push(crate::suite::report::Figure::new("new/x", "x", "s", Better::Lower, vec![1.0]));
        let c = compare(&before, &after);
        let verdict = |key: &str| c.changes.iter().find(|c| c.key == key).map(|c| c.verdict);
        assert_eq!(verdict("sort/1 GiB/planned"), Some(Verdict::Better));
        assert_eq!(verdict("paths/vm-local/1 MiB"), Some(Verdict::Worse));
        assert_eq!(c.only_after, vec!["new/x".to_string()]);
        assert!(c.markdown().contains("-50.0%"));
    }
}
