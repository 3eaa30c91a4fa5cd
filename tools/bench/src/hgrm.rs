//! HdrHistogram's percentile distribution text (`.hgrm`), as Java's
//! `Histogram.outputPercentileDistribution` prints it, so HdrHistogram's plotter and the
//! tools that read wrk2's and memtier's files read ours. Values are in milliseconds.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// Percentile steps per halving of the distance to 100%, as the Java default.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Nanoseconds per output unit (milliseconds).
pub const NS_PER_UNIT: f64 = 1e6;
/// Decimals of the values: nanosecond precision in milliseconds.
const VALUE_DECIMALS: usize = 6;

/// Writes `hist` (nanoseconds) as a percentile distribution in milliseconds.
pub fn write(hist: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let d = VALUE_DECIMALS;
    let mut total = 0u64;
    if !hist.is_empty() {
        for v in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / NS_PER_UNIT;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:>12.d$} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:>12.d$} {q:>2.12} {total:>10}")?;
            }
        }
    }
    let (mean, sd) = (hist.mean() / NS_PER_UNIT, hist.stdev() / NS_PER_UNIT);
    let max = hist.max() as f64 / NS_PER_UNIT;
    // 2 × 10^sigfig rounded up to a power of two, as HdrHistogram sizes its sub-buckets.
    let sub_buckets = (2 * 10u64.pow(u32::from(hist.sigfig()))).next_power_of_two();
    writeln!(
        out,
        "#[Mean    = {mean:>12.d$}, StdDeviation   = {sd:>12.d$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:>12.d$}, Total count    = {:>12}]",
        hist.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {sub_buckets:>12}]",
        hist.buckets()
    )
}

/// One line of a parsed `.hgrm` body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub value_ms: f64,
    pub quantile: f64,
    pub total_count: u64,
}

/// Parses a `.hgrm` file: its percentile lines and the footer's total count. Checks what a
/// plotter relies on: values and percentiles never decrease, counts add up.
pub fn parse(text: &str) -> Result<(Vec<Point>, u64), String> {
    let mut lines = text.lines();
    let head = lines.next().ok_or("empty file")?;
    if head.split_whitespace().collect::<Vec<_>>()
        != ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    {
        return Err(format!("bad header `{head}`"));
    }
    let mut points: Vec<Point> = Vec::new();
    let mut total = None;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("#[Max") {
            let n = rest.rsplit('=').next().ok_or("bad footer")?;
            total = Some(
                n.trim()
                    .trim_end_matches(']')
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| e.to_string())?,
            );
            continue;
        }
        if line.starts_with("#[") {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 && f.len() != 4 {
            return Err(format!("bad line `{line}`"));
        }
        let num = |s: &str| {
            s.parse::<f64>()
                .map_err(|e| format!("`{s}` in `{line}`: {e}"))
        };
        let p = Point {
            value_ms: num(f[0])?,
            quantile: num(f[1])?,
            total_count: f[2].parse().map_err(|e| format!("`{line}`: {e}"))?,
        };
        if let Some(prev) = points.last() {
            if p.value_ms < prev.value_ms
                || p.quantile < prev.quantile
                || p.total_count < prev.total_count
            {
                return Err(format!("`{line}` goes backwards"));
            }
        }
        if f.len() == 4 {
            let inv = num(f[3])?;
            let want = 1.0 / (1.0 - p.quantile);
            if (inv - want).abs() > 0.01 + want * 1e-6 {
                return Err(format!("`{line}`: 1/(1-p) is {inv}, want {want:.2}"));
            }
        }
        points.push(p);
    }
    let total = total.ok_or("no `#[Max ... Total count` footer")?;
    match points.last() {
        Some(last) if last.total_count != total || last.quantile != 1.0 => {
            Err(format!("last line {last:?} does not reach 100% of {total}"))
        }
        _ => Ok((points, total)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_hist;

    #[test]
    fn output_parses_and_matches_the_histogram() {
        let mut h = new_hist();
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..100_000 {
            // 20 µs to ~20 ms, heavy-tailed.
            h.record(20_000 + (rng.f64().powi(8) * 2e7) as u64).unwrap();
        }
        let mut out = Vec::new();
        write(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (points, total) = parse(&text).unwrap();
        assert_eq!(total, 100_000);
        assert!(points.len() > 50, "{} lines", points.len());
        // Each line's value is the histogram's value at that line's percentile (within the
        // histogram's 0.1% resolution and the 6 printed decimals).
        for p in &points {
            let want = h.value_at_quantile(p.quantile) as f64 / 1e6;
            assert!(
                (p.value_ms - want).abs() <= want * 0.002 + 1e-6,
                "{p:?} vs {want}"
            );
        }
        assert_eq!(points.last().unwrap().value_ms, h.max() as f64 / 1e6);
        assert!(text.contains("#[Buckets ="), "{text}");
    }

    #[test]
    fn an_empty_histogram_has_a_header_and_footer() {
        let mut out = Vec::new();
        write(&new_hist(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Total count    =            0"), "{text}");
        assert!(parse("Value Percentile\n").is_err());
    }
}
