//! The latency percentile plot, as a self-contained SVG: latency on a log axis against
//! percentile on a "nines" axis (90%, 99%, 99.9%… equally spaced), one line per run, as
//! HdrHistogram's plotter draws them, so tails of several runs compare at a glance.

use std::fmt::Write;
use std::path::Path;

use serde::Deserialize;

use crate::error::BenchError;

/// Most nines the x axis shows (99.9999%); the maximum is drawn at the right edge.
pub const MAX_NINES: u32 = 6;
const WIDTH: f64 = 960.0;
/// Height of the plot without its legend; the legend adds a row per run below.
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const LEGEND_ROW: f64 = 20.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One run's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// `[quantile, ms]`, quantiles rising.
    pub points: Vec<[f64; 2]>,
}

/// The fields of a `--json` result the plot needs.
#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    label: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    ops_per_sec: f64,
    percentiles: Vec<[f64; 2]>,
}

/// Reads a `--json` result; a run without `--label` is named after its file.
pub fn load(path: &Path) -> Result<Series, BenchError> {
    let err = |reason: String| BenchError::Input {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let input: Input = serde_json::from_str(&text)
        .map_err(|e| err(format!("not a tessera-bench JSON result: {e}")))?;
    let name = if input.label.is_empty() {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        input.label
    };
    let label = format!(
        "{name} ({} {}, {:.0} ops/s)",
        input.target, input.mode, input.ops_per_sec
    );
    Ok(Series {
        label,
        points: input.percentiles,
    })
}

fn nines(q: f64, max: f64) -> f64 {
    if q >= 1.0 {
        max
    } else {
        (-(1.0 - q).log10()).clamp(0.0, max)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `0.01`, `1`, `1000`: a decade's label without float noise.
fn decade_label(exp: i32) -> String {
    if exp >= 0 {
        format!("{}", 10u64.pow(exp as u32))
    } else {
        format!("{:.*}", (-exp) as usize, 10f64.powi(exp))
    }
}

/// The SVG text of `series` under `title`.
pub fn svg(series: &[Series], title: &str) -> String {
    let pts = || series.iter().flat_map(|s| s.points.iter());
    // The x range: enough nines for the most finely resolved run, at least 2.
    let finest = pts()
        .filter(|p| p[0] < 1.0)
        .map(|p| nines(p[0], MAX_NINES as f64))
        .fold(2.0, f64::max);
    let x_max = finest.ceil().min(MAX_NINES as f64);
    let positive = pts().map(|p| p[1]).filter(|v| *v > 0.0);
    let lo = positive.clone().fold(f64::INFINITY, f64::min);
    let hi = positive.fold(0.0, f64::max);
    let (lo_exp, hi_exp) = if hi > 0.0 {
        (
            lo.log10().floor() as i32,
            (hi.log10().ceil() as i32).max(lo.log10().floor() as i32 + 1),
        )
    } else {
        (-2, 1)
    };
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |q: f64| LEFT + nines(q, x_max) / x_max * pw;
    let y = |ms: f64| {
        let v = ms.max(10f64.powi(lo_exp)).log10();
        TOP + ph - (v - lo_exp as f64) / (hi_exp - lo_exp) as f64 * ph
    };
    let mut s = String::new();
    let total_h = HEIGHT + LEGEND_ROW * series.len() as f64 + 10.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_h}" viewBox="0 0 {WIDTH} {total_h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    for e in lo_exp..=hi_exp {
        let yy = y(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            yy + 4.0,
            decade_label(e)
        );
    }
    for n in 0..=x_max as u32 {
        let xx = LEFT + n as f64 / x_max * pw;
        let label = match n {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            _ => format!("99.{}%", "9".repeat(n as usize - 2)).replace(".%", "%"),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">latency (ms, log scale)</text>"#,
        TOP + ph / 2.0
    );
    for (i, ser) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line: Vec<String> = ser
            .points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1])))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            line.join(" ")
        );
        let ly = HEIGHT + 5.0 + i as f64 * LEGEND_ROW;
        let lx = LEFT;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/>"#,
            lx + 18.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            ly + 4.0,
            escape(&ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_and_one_line_per_run() {
        let a = Series {
            label: "tessera <1 core>".into(),
            points: vec![
                [0.0, 0.05],
                [0.5, 0.1],
                [0.99, 0.4],
                [0.999, 2.0],
                [1.0, 12.0],
            ],
        };
        let b = Series {
            label: "redis".into(),
            points: vec![[0.0, 0.04], [0.9, 0.2], [1.0, 3.0]],
        };
        let text = svg(&[a, b], "SET:GET 1:10");
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains("&lt;1 core&gt;"));
        for tick in [">0%<", ">90%<", ">99%<", ">99.9%<", ">0.01<", ">100<"] {
            assert!(text.contains(tick), "{tick} missing");
        }
        assert!(!text.contains(">99.99%<"), "x axis should stop at 3 nines");
        assert!(!text.contains("NaN") && !text.contains("inf"));
    }

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0, 6.0), 0.0);
        assert!((nines(0.99, 6.0) - 2.0).abs() < 1e-9);
        assert_eq!(nines(1.0, 4.0), 4.0);
        assert_eq!(decade_label(-2), "0.01");
        assert_eq!(decade_label(3), "1000");
    }
}
