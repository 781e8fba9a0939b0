//! The suite's charts, drawn with plotters as SVG and PNG (text in DejaVu Sans, embedded, so
//! that a machine without fonts draws the same images): a chart per `plot.chart` of the
//! report's figures, each series a line, a group of bars or a set of points.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Figure, Report};

/// How a chart draws its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Lines through points, x numeric.
    Lines,
    /// Lines over a log2 x axis (sizes).
    LogLines,
    /// Grouped bars, one group per x value.
    Bars,
    /// Points, with the line y = x (predicted against measured).
    Scatter,
}

/// A chart's words and style.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// The x axis.
    pub x: &'static str,
    /// The y axis.
    pub y: &'static str,
    /// Style.
    pub style: Style,
}

/// The chart named `name` (the suite's names; an unknown one gets lines and its name).
pub fn chart(name: &str) -> Chart {
    let c = |title: &str, x, y, style| Chart { title: title.to_string(), x, y, style };
    match name {
        "path-throughput" => c("Path throughput against object size", "object size", "MB/s (median)", Style::LogLines),
        "sort-size" => c("Sort: time against size", "GiB sorted", "seconds (median)", Style::Lines),
        "sort-hosts" => c("Sort: time against hosts", "hosts", "seconds (median)", Style::Lines),
        "edges" => c("Predicted against measured time per edge", "predicted s", "measured s", Style::Scatter),
        "dollars" => c("Dollars per run", "GiB sorted", "dollars (last run)", Style::Bars),
        tpch if tpch.starts_with("tpch") => c(
            &format!("TPC-H {}: seconds per query", tpch.trim_start_matches("tpch-")),
            "query",
            "seconds (median)",
            Style::Bars,
        ),
        other => c(other, "x", "y", Style::Lines),
    }
}

fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font parses; a failure would only cost the text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A series' points, `(x, y)`.
type Points = Vec<(f64, f64)>;

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw: {e}")
}

/// Draws every chart of `report` into `dir` as `NAME.svg` and `NAME.png`; the files written.
pub fn draw_all(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    font();
    baton_fabric::private::ensure_dir(dir, "plots directory")?;
    let mut charts: BTreeMap<&str, BTreeMap<&str, Points>> = BTreeMap::new();
    for f in &report.figures {
        if let Some(p) = &f.plot {
            charts.entry(&p.chart).or_default().entry(&p.series).or_default().push((p.x, f.value));
        }
    }
    let mut files = Vec::new();
    for (name, series) in charts {
        let mut series: Vec<(&str, Points)> = series.into_iter().collect();
        for (_, points) in &mut series {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let spec = chart(name);
        let svg = dir.join(format!("{name}.svg"));
        draw(SVGBackend::new(&svg, (960, 540)).into_drawing_area(), &spec, &series)?;
        let png = dir.join(format!("{name}.png"));
        draw(BitMapBackend::new(&png, (960, 540)).into_drawing_area(), &spec, &series)?;
        for file in [&svg, &png] {
            std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        files.extend([svg, png]);
    }
    Ok(files)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    spec: &Chart,
    series: &[(&str, Points)],
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let log = spec.style == Style::LogLines;
    let tx = |x: f64| if log { x.max(1.0).log2() } else { x };
    let xs: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|q| tx(q.0))).collect();
    let ys: Vec<f64> = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).filter(|y| y.is_finite()).collect();
    let ymax = ys.iter().copied().fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let mut categories: Vec<f64> = Vec::new();
    for (_, points) in series {
        for &(x, _) in points {
            if !categories.contains(&x) {
                categories.push(x);
            }
        }
    }
    categories.sort_by(f64::total_cmp);
    let (xmin, xmax) = match spec.style {
        Style::Bars => (-0.5, categories.len() as f64 - 0.5),
        Style::Scatter => (0.0, xs.iter().copied().fold(0.0f64, f64::max).max(ymax / 1.15) * 1.15),
        _ => {
            let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            let pad = ((hi - lo) * 0.05).max(0.5);
            (lo - pad, hi + pad)
        }
    };
    let (ymax, xmax) = if spec.style == Style::Scatter { (xmax, xmax) } else { (ymax, xmax) };
    let mut chart = ChartBuilder::on(&root)
        .caption(&spec.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(xmin..xmax, 0f64..ymax)
        .map_err(err)?;
    let label_x = |v: &f64| -> String {
        match spec.style {
            Style::LogLines => human_bytes(2f64.powf(*v)),
            Style::Bars => {
                let i = v.round();
                if (v - i).abs() < 0.05 && i >= 0.0 && (i as usize) < categories.len() {
                    short(categories[i as usize])
                } else {
                    String::new()
                }
            }
            _ => short(*v),
        }
    };
    let x_labels = if spec.style == Style::Bars { categories.len().max(1) } else { 10 };
    chart
        .configure_mesh()
        .x_desc(spec.x)
        .y_desc(spec.y)
        .x_labels(x_labels)
        .x_label_formatter(&label_x)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    if spec.style == Style::Scatter {
        chart.draw_series(LineSeries::new([(0.0, 0.0), (xmax, xmax)], BLACK.mix(0.3))).map_err(err)?;
    }
    let n = series.len().max(1) as f64;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let legend = move |(x, y): (i32, i32)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], color.filled());
        match spec.style {
            Style::Bars => {
                let width = 0.8 / n;
                let bars = points.iter().filter_map(|&(x, y)| {
                    let c = categories.iter().position(|&k| k == x)? as f64;
                    let left = c - 0.4 + i as f64 * width;
                    Some(Rectangle::new([(left, 0.0), (left + width, y)], color.filled()))
                });
                chart.draw_series(bars).map_err(err)?.label(*name).legend(legend);
            }
            Style::Scatter => {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 5, color.filled())))
                    .map_err(err)?
                    .label(*name)
                    .legend(legend);
            }
            _ => {
                let line: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (tx(x), y)).collect();
                chart
                    .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(*name)
                    .legend(legend);
                chart.draw_series(line.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(err)?;
            }
        }
    }
    chart
        .configure_series_labels()
        // Points predicted too low sit top left, where a legend would hide them.
        .position(if spec.style == Style::Scatter {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperLeft
        })
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// `1`, `0.5`, `0.01`: two decimals at most, no trailing zeros.
fn short(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn human_bytes(bytes: f64) -> String {
    match bytes {
        b if b >= (1u64 << 30) as f64 => format!("{:.0} GiB", b / (1u64 << 30) as f64),
        b if b >= (1u64 << 20) as f64 => format!("{:.0} MiB", b / (1u64 << 20) as f64),
        b => format!("{:.0} KiB", b / 1024.0),
    }
}

/// The figures of `report` on `chart`, for tests and summaries.
pub fn on_chart<'a>(report: &'a Report, chart: &str) -> Vec<&'a Figure> {
    report.figures.iter().filter(|f| f.plot.as_ref().is_some_and(|p| p.chart == chart)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::suite::report::{Better, tests::sample};

    #[test]
    fn every_style_draws_a_non_empty_svg_and_png() {
        let mut report = sample();
        let f = |key: &str, v: f64| Figure::new(key, key, "s", Better::Lower, vec![v]);
        report.figures.extend([
            f("paths/a", 900.0).plotted("path-throughput", "vm-local", 4096.0),
            f("paths/b", 1900.0).plotted("path-throughput", "vm-local", 1048576.0),
            f("tpch/1", 1.5).plotted("tpch-sf1", "baton", 1.0),
            f("tpch/2", 0.5).plotted("tpch-sf1", "datafusion", 1.0),
            f("tpch/3", 0.7).plotted("tpch-sf1", "baton", 3.0),
            f("edges/1", 0.9).plotted("edges", "sort", 1.1),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let files = draw_all(&report, dir.path()).unwrap();
        assert_eq!(files.len(), 2 * 4, "{files:?}");
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            if file.extension().unwrap() == "png" {
                assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", file.display());
                let decoded = image_size(&bytes);
                assert_eq!(decoded, (960, 540));
                // Not one colour: something was drawn.
                assert!(bytes.len() > 5000, "{} is {} bytes", file.display(), bytes.len());
            } else {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.contains("<svg") && text.contains("<text"), "{}", file.display());
            }
        }
        let svg = std::fs::read_to_string(dir.path().join("tpch-sf1.svg")).unwrap();
        assert!(svg.contains("TPC-H sf1") && svg.contains("datafusion"), "titles and legends are drawn");
        assert!(svg.matches("<rect").count() >= 3, "three bars");
    }

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(short(0.9999999776), "1");
        assert_eq!(short(4.0), "4");
        assert_eq!(short(0.01), "0.01");
        assert_eq!(short(2.5), "2.5");
    }

    fn image_size(png: &[u8]) -> (u32, u32) {
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&png[16..20]), be(&png[20..24]))
    }
}
