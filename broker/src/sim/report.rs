//! Turning replays into curves, CSV, an SVG plot and a comparison table.

use std::fmt::Write as _;

use super::RunResult;
use crate::placement::Policy;

/// Published unallocated % at (100%, 130%) arrived, from the FGD authors'
/// simulator results (mean of 10 seeds), by trace and policy.
pub fn published(trace: &str, policy: Policy) -> Option<(f64, f64)> {
    let row = match trace {
        "default" => [(13.70, 12.53), (9.38, 9.15), (8.22, 8.00), (7.14, 6.92), (4.77, 4.61)],
        "gpushare40" => [
            (15.14, 14.00),
            (10.70, 10.44),
            (10.23, 9.97),
            (8.56, 8.31),
            (6.04, 5.85),
        ],
        "multigpu20" => [(13.08, 11.31), (8.15, 7.94), (6.50, 6.29), (6.27, 6.07), (4.47, 4.35)],
        _ => return None,
    };
    match policy {
        Policy::Random => Some(row[0]),
        Policy::DotProduct => Some(row[1]),
        Policy::Packing => Some(row[2]),
        Policy::BestFit => Some(row[3]),
        Policy::Fragmentation => Some(row[4]),
        Policy::Spread => None,
    }
}

/// Mean curve of several seeds of one policy, sampled at whole percents.
#[derive(Debug, Clone)]
pub struct Curve {
    pub policy: Policy,
    /// Unallocated % at arrived = 0, 1, ..., 130 %.
    pub unallocated: Vec<f64>,
    pub seeds: usize,
    pub mean_run_seconds: f64,
}

impl Curve {
    pub fn from_runs(policy: Policy, runs: &[&RunResult]) -> Curve {
        let grid = 0..=super::TUNE_PERCENT as usize;
        let unallocated = grid
            .map(|x| runs.iter().map(|r| r.unallocated_at(x as f64)).sum::<f64>() / runs.len().max(1) as f64)
            .collect();
        Curve {
            policy,
            unallocated,
            seeds: runs.len(),
            mean_run_seconds: runs.iter().map(|r| r.elapsed.as_secs_f64()).sum::<f64>() / runs.len().max(1) as f64,
        }
    }

    pub fn at(&self, arrived: usize) -> f64 {
        self.unallocated[arrived.min(self.unallocated.len() - 1)]
    }
}

/// CSV: `arrived_pct` then one column of unallocated % per policy.
pub fn csv(curves: &[Curve]) -> String {
    let mut out = String::from("arrived_pct");
    for c in curves {
        let _ = write!(out, ",{}", c.policy.name());
    }
    out.push('\n');
    let points = curves.first().map_or(0, |c| c.unallocated.len());
    for x in 0..points {
        let _ = write!(out, "{x}");
        for c in curves {
            let _ = write!(out, ",{:.4}", c.unallocated[x]);
        }
        out.push('\n');
    }
    out
}

const COLOURS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#111111"];

/// Two panels: the whole curve, and a zoom on 80–130% arrived.
pub fn svg(trace: &str, curves: &[Curve]) -> String {
    let (width, height) = (1000.0, 460.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">openb {trace}: unallocated GPU share vs arrived GPU demand</text>"#,
        width / 2.0
    );
    let top = curves.iter().map(|c| c.at(80)).fold(5.0f64, f64::max).ceil();
    panel(&mut out, curves, (60.0, 40.0, 400.0, 360.0), (0.0, 130.0), (0.0, 100.0));
    panel(&mut out, curves, (540.0, 40.0, 400.0, 360.0), (80.0, 130.0), (0.0, top));
    for (i, c) in curves.iter().enumerate() {
        let x = 60.0 + i as f64 * 150.0;
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="440" x2="{}" y2="440" stroke="{colour}" stroke-width="3"/><text x="{}" y="444">{}</text>"#,
            x + 25.0,
            x + 30.0,
            c.policy.name()
        );
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, curves: &[Curve], frame: (f64, f64, f64, f64), xr: (f64, f64), yr: (f64, f64)) {
    let (left, top, w, h) = frame;
    let sx = |x: f64| left + (x - xr.0) / (xr.1 - xr.0) * w;
    let sy = |y: f64| top + h - (y.clamp(yr.0, yr.1) - yr.0) / (yr.1 - yr.0) * h;
    let _ = writeln!(
        out,
        r#"<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="black"/>"#
    );
    for i in 0..=5 {
        let xv = xr.0 + (xr.1 - xr.0) * i as f64 / 5.0;
        let yv = yr.0 + (yr.1 - yr.0) * i as f64 / 5.0;
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{xv:.0}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{yv:.1}</text><line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            sx(xv),
            top + h + 15.0,
            left - 5.0,
            sy(yv) + 4.0,
            sy(yv),
            left + w,
            sy(yv)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">arrived GPU demand (% of capacity)</text><text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">unallocated GPU (%)</text>"#,
        left + w / 2.0,
        top + h + 32.0,
        left - 40.0,
        top + h / 2.0
    );
    for (i, c) in curves.iter().enumerate() {
        let points: Vec<String> = c
            .unallocated
            .iter()
            .enumerate()
            .filter(|(x, _)| (*x as f64) >= xr.0 && (*x as f64) <= xr.1)
            .map(|(x, &y)| format!("{:.1},{:.1}", sx(x as f64), sy(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            COLOURS[i % COLOURS.len()],
            points.join(" ")
        );
    }
}

/// Text table: unallocated % at 100% and 130% arrived, ours beside published.
pub fn table(trace: &str, curves: &[Curve]) -> String {
    let mut out = format!(
        "trace {trace}: unallocated GPU share (%), mean of seeds\n{:<12} {:>6} {:>9} {:>9} {:>11} {:>11} {:>8}\n",
        "policy", "seeds", "@100%", "@130%", "pub @100%", "pub @130%", "s/run"
    );
    for c in curves {
        let (p100, p130) = published(trace, c.policy)
            .map(|(a, b)| (format!("{a:.2}"), format!("{b:.2}")))
            .unwrap_or(("-".into(), "-".into()));
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>9.2} {:>9.2} {:>11} {:>11} {:>8.2}",
            c.policy.name(),
            c.seeds,
            c.at(100),
            c.at(130),
            p100,
            p130,
            c.mean_run_seconds
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn curves_average_seeds_and_render() {
        let run = |seed, y: f64| RunResult {
            policy: Policy::BestFit,
            seed,
            points: vec![(50.0, 50.0), (100.0, y), (130.0, y - 1.0)],
            submitted: 3,
            placed: 3,
            elapsed: Duration::from_millis(10),
        };
        let (a, b) = (run(1, 10.0), run(2, 20.0));
        let curve = Curve::from_runs(Policy::BestFit, &[&a, &b]);
        assert_eq!(curve.at(100), 15.0);
        assert_eq!(curve.at(130), 14.0);
        assert_eq!(curve.at(99), 50.0);
        let text = csv(std::slice::from_ref(&curve));
        assert!(text.starts_with("arrived_pct,best-fit\n0,100.0000\n"));
        assert!(svg("default", std::slice::from_ref(&curve)).contains("<polyline"));
        assert!(table("default", &[curve]).contains("7.14"));
    }
}
