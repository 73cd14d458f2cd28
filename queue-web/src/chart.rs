//! Charts as inline SVG: bars of completed and failed attempts per step of the history, and
//! the one-line sparkline of a queue's row.

use std::fmt::Write;

use queue_core::admin::HistoryStep;

use crate::html::{esc, num, time};

const W: f64 = 720.0;
const H: f64 = 160.0;
/// Room for the labels.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 18.0;

/// Completed (bottom) and failed (on top) attempts per step, with the peak and the span's ends
/// labelled; each bar's title tells its figures. Scales to its container's width.
pub(crate) fn bars(steps: &[HistoryStep], label: &str) -> String {
    let peak = steps
        .iter()
        .map(|s| s.counts.completed + s.counts.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let n = steps.len().max(1) as f64;
    let slot = (W - LEFT) / n;
    let bar = (slot * 0.8).max(1.0);
    let plot = H - BOTTOM;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" preserveAspectRatio="none" role="img" aria-label="{label}">"#,
        label = esc(label)
    );
    let _ = write!(
        svg,
        r#"<line x1="{LEFT}" y1="{plot}" x2="{W}" y2="{plot}" class="axis"/><text x="{x}" y="12" class="tick" text-anchor="end">{peak}</text><text x="{x}" y="{plot}" class="tick" text-anchor="end">0</text>"#,
        x = LEFT - 4.0,
        peak = num(peak)
    );
    for (i, s) in steps.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let (ok, failed) = (s.counts.completed, s.counts.failed);
        let h_ok = plot * ok as f64 / peak as f64;
        let h_failed = plot * failed as f64 / peak as f64;
        let _ = write!(
            svg,
            r#"<g><title>{at}: {ok} completed, {failed} failed</title><rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h_ok:.1}" class="ok"/><rect x="{x:.1}" y="{y2:.1}" width="{bar:.1}" height="{h_failed:.1}" class="failed"/></g>"#,
            at = time(s.at_ms),
            ok = num(ok),
            failed = num(failed),
            y = plot - h_ok,
            y2 = plot - h_ok - h_failed,
        );
    }
    if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
        let _ = write!(
            svg,
            r#"<text x="{LEFT}" y="{H}" class="tick">{}</text><text x="{W}" y="{H}" class="tick" text-anchor="end">{}</text>"#,
            time(first.at_ms),
            time(last.at_ms)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A small line of completed attempts per step, for a table row.
pub(crate) fn sparkline(values: &[u64]) -> String {
    let (w, h) = (120.0, 24.0);
    let peak = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = (values.len().max(2) - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                w * i as f64 / n,
                h - 1.0 - (h - 2.0) * *v as f64 / peak
            )
        })
        .collect();
    format!(
        r#"<svg class="spark" viewBox="0 0 {w} {h}" preserveAspectRatio="none" aria-hidden="true"><polyline points="{}"/></svg>"#,
        points.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_peak() {
        let mut steps = vec![HistoryStep::default(), HistoryStep::default()];
        steps[0].counts.completed = 10;
        steps[1].counts.completed = 5;
        steps[1].counts.failed = 5;
        let svg = bars(&steps, "throughput");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(">10</text>"), "the peak is labelled: {svg}");
        assert!(svg.contains("5 completed, 5 failed"));
        assert!(sparkline(&[0, 1, 2]).contains("polyline"));
        assert!(sparkline(&[]).contains("polyline"));
    }
}
