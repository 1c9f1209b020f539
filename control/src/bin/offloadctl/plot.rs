//! A latency-by-percentile chart as a standalone SVG file, drawn by hand: the x axis
//! is 1/(1-p) on a log scale (0%, 90%, 99%, 99.9%, ...), the y axis latency on a log
//! scale (packets take tens of ns, adds tens of µs: both readable on one chart), one
//! line per histogram, a legend, and a caption naming the device and the time.

use std::fmt::Write;

use crate::latency::Named;

const W: f64 = 900.0;
const H: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// The label of the x position `decade` (= log10(1/(1-p))): 0%, 90%, 99%, 99.9%...
pub fn decade_label(decade: u32) -> String {
    match decade {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
}

/// The label of the latency 10^decade ns: 1 ns, 10 ns, 100 ns, 1 µs, ... 10 s.
pub fn ns_label(decade: i32) -> String {
    const UNITS: [&str; 4] = ["ns", "µs", "ms", "s"];
    let d = decade.max(0) as usize;
    let unit = UNITS[(d / 3).min(3)];
    let shown = 10u64.pow((d - 3 * (d / 3).min(3)) as u32);
    format!("{shown} {unit}")
}

/// The points (log10(1/(1-p)), latency ns) of one histogram; p = 1 has no place on
/// this axis and is left out.
pub fn points(n: &Named) -> Vec<(f64, f64)> {
    if n.hist.is_empty() {
        return Vec::new();
    }
    n.hist
        .iter_quantiles(5)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            let x = (1.0 / (1.0 - v.quantile_iterated_to())).log10();
            (x, v.value_iterated_to().max(1) as f64)
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart; `caption` (the device, its config, the time) goes under the title.
pub fn svg(hs: &[Named], caption: &str) -> String {
    let series: Vec<(&Named, Vec<(f64, f64)>)> = hs.iter().map(|h| (h, points(h))).collect();
    let all = series.iter().flat_map(|s| s.1.iter());
    let (xmax, ymin, ymax) = all.fold((1.0f64, f64::MAX, 1.0f64), |(x, lo, hi), p| {
        (x.max(p.0), lo.min(p.1), hi.max(p.1))
    });
    let decades = xmax.ceil() as u32;
    // Whole decades of ns around every point, at least one.
    let ylo = if ymin == f64::MAX {
        1
    } else {
        ymin.log10().floor() as i32
    };
    let yhi = (ymax.log10().ceil() as i32).max(ylo + 1);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / f64::from(decades) * pw;
    let sy = |ns: f64| TOP + ph - (ns.log10() - f64::from(ylo)) / f64::from(yhi - ylo) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="16">Latency by percentile</text>
<text x="{}" y="40" text-anchor="middle" fill="#555">{}</text>"##,
        LEFT + pw / 2.0,
        LEFT + pw / 2.0,
        escape(caption)
    );
    // Grid and tick labels.
    for d in 0..=decades {
        let x = sx(f64::from(d));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>
<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            decade_label(d)
        );
    }
    for d in ylo..=yhi {
        let py = sy(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/>
<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py + 4.0,
            ns_label(d)
        );
    }
    // Axes and their labels.
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">Percentile</text>
<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">Latency (log scale)</text>"##,
        LEFT + pw / 2.0,
        H - 15.0,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // One line per histogram, and its legend entry.
    for (i, (h, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let name = escape(&h.name);
        if !pts.is_empty() {
            let coords: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline data-series="{name}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                coords.join(" ")
            );
        }
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let lx = W - RIGHT + 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/>
<text x="{}" y="{}">{name} (n={})</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            h.hist.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::tests::uniform;

    /// Checks that every element is closed in order (enough to catch broken output;
    /// the file has no comments, CDATA or entities other than the escaped ones).
    fn well_formed(s: &str) -> Result<(), String> {
        let body = s
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .ok_or("no XML declaration")?;
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        while let Some(i) = rest.find('<') {
            let j = rest[i..].find('>').ok_or("unclosed tag")? + i;
            let tag = &rest[i + 1..j];
            if tag.matches('"').count() % 2 != 0 {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("unexpected </{name}>"));
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
            }
            rest = &rest[j + 1..];
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    #[test]
    fn labels() {
        assert_eq!(decade_label(0), "0%");
        assert_eq!(decade_label(1), "90%");
        assert_eq!(decade_label(2), "99%");
        assert_eq!(decade_label(4), "99.99%");
        assert_eq!(ns_label(0), "1 ns");
        assert_eq!(ns_label(2), "100 ns");
        assert_eq!(ns_label(4), "10 µs");
        assert_eq!(ns_label(9), "1 s");
    }

    #[test]
    fn svg_has_one_line_per_histogram_and_a_legend() {
        let mut slow = uniform();
        slow.record(50_000_000).unwrap();
        let hs = vec![
            Named {
                name: "packet".into(),
                unit: "ns".into(),
                hist: uniform(),
            },
            Named {
                name: "add<&>".into(),
                unit: "ns".into(),
                hist: slow,
            },
            Named {
                name: "empty".into(),
                unit: "ns".into(),
                hist: dataplane::stats::new_histogram(),
            },
        ];
        let s = svg(&hs, "offloadd 0.1.0 at https://localhost:3443 <test>");
        well_formed(&s).unwrap();
        assert!(s.contains(">offloadd 0.1.0 at https://localhost:3443 &lt;test&gt;</text>"));
        // 50 ms and the uniform values' µs on one log axis: decades from 1 µs or
        // below to 100 ms.
        assert!(
            s.contains(">100 ms</text>") && s.contains(">1 µs</text>"),
            "{s}"
        );
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains(r#"data-series="packet""#));
        assert!(s.contains(r#"data-series="add&lt;&amp;&gt;""#));
        assert!(s.contains("empty (n=0)"));
        assert!(s.contains(">99.9%</text>"));
        assert!(s.contains(">Latency (log scale)</text>"));
        assert!(s.contains(">Percentile</text>"));
        // 1001 values reach the 99.9% decade; no point lies outside the plot area.
        for p in points(&hs[1]) {
            assert!(p.0 >= 0.0 && p.0 <= 4.0, "{p:?}");
        }
    }

    #[test]
    fn empty_input_still_draws_axes() {
        let s = svg(&[], "");
        well_formed(&s).unwrap();
        // The plot area's frame, both axis titles, the first percentile decade and
        // a latency scale from 0; no data line.
        assert!(s.contains(r##"fill="none" stroke="#333"/>"##), "{s}");
        assert!(s.contains(">Percentile</text>"), "{s}");
        assert!(s.contains(">Latency (log scale)</text>"), "{s}");
        assert!(s.contains(">0%</text>") && s.contains(">90%</text>"), "{s}");
        let y_ticks = s.matches(r#"text-anchor="end">"#).count();
        assert!(y_ticks >= 2, "{y_ticks} latency ticks: {s}");
        assert!(s.contains(r#"text-anchor="end">10 ns</text>"#), "{s}");
        assert!(!s.contains("<polyline"), "{s}");
    }
}
