//! `latency`: the device's latency histograms (HdrHistogram V2, nanoseconds) as a
//! percentile table, as HdrHistogram percentile-distribution text (.hgrm), or as an
//! SVG plot (plot.rs).

use std::fmt::Write;
use std::path::PathBuf;

use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use proto::admin::LatencyRequest;
use serde_json::json;

use crate::output::{duration_ns, Table};
use crate::{status_line, Conn};

#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    /// Print the HdrHistogram percentile distribution (.hgrm text, values in µs).
    #[arg(long)]
    pub hgrm: bool,
    /// Write an SVG chart of latency by percentile to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Only this histogram (e.g. "packet" or "add").
    #[arg(long, value_name = "NAME")]
    pub histogram: Option<String>,
}

/// One histogram of the device, decoded.
pub struct Named {
    pub name: String,
    pub unit: String,
    pub hist: Histogram<u64>,
}

pub fn decode(name: &str, bytes: &[u8]) -> Result<Histogram<u64>, String> {
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram {name:?} cannot be decoded: {e:?}"))
}

pub async fn fetch(conn: &Conn) -> Result<Vec<Named>, String> {
    let mut a = control::client::admin(conn.channel().await?);
    let l = a
        .get_latency(LatencyRequest {})
        .await
        .map_err(|s| status_line("GetLatency failed", &s))?
        .into_inner();
    l.histograms
        .into_iter()
        .map(|h| {
            Ok(Named {
                hist: decode(&h.name, &h.hdr_v2)?,
                name: h.name,
                unit: h.unit,
            })
        })
        .collect()
}

const QUANTILES: [(&str, f64); 5] = [
    ("P50", 0.5),
    ("P90", 0.9),
    ("P99", 0.99),
    ("P99.9", 0.999),
    ("P99.99", 0.9999),
];

pub fn table(hs: &[Named]) -> String {
    let mut header = vec!["HISTOGRAM", "COUNT"];
    header.extend(QUANTILES.iter().map(|q| q.0));
    header.push("MAX");
    let mut t = Table::new(&header);
    for h in hs {
        let mut row = vec![h.name.clone(), h.hist.len().to_string()];
        for (_, q) in QUANTILES {
            row.push(if h.hist.is_empty() {
                "-".into()
            } else {
                duration_ns(h.hist.value_at_quantile(q) as f64)
            });
        }
        row.push(if h.hist.is_empty() {
            "-".into()
        } else {
            duration_ns(h.hist.max() as f64)
        });
        t.row(row);
    }
    t.render()
}

pub fn to_json(hs: &[Named]) -> serde_json::Value {
    let list: Vec<_> = hs
        .iter()
        .map(|h| {
            let q = |q: f64| h.hist.value_at_quantile(q);
            json!({
                "name": h.name,
                "unit": h.unit,
                "count": h.hist.len(),
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99),
                "p999": q(0.999), "p9999": q(0.9999),
                "max": h.hist.max(),
                "mean": h.hist.mean(),
            })
        })
        .collect();
    json!({ "histograms": list })
}

/// The percentile distribution in HdrHistogram's own text format (what
/// `outputPercentileDistribution` writes and the HdrHistogram plotter reads): five
/// ticks per half distance to 100%, values divided by `scale` and printed with as
/// many decimals as the histogram has significant digits.
pub fn hgrm(h: &Histogram<u64>, scale: f64) -> String {
    let d = usize::from(h.sigfig());
    let mut s = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.d$} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.d$} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, sd) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale)
    };
    let max = if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / scale
    };
    let _ = writeln!(s, "#[Mean    = {mean:12.d$}, StdDeviation   = {sd:12.d$}]");
    let _ = writeln!(
        s,
        "#[Max     = {max:12.d$}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    s
}

/// HdrHistogram's sub-bucket count: the power of two that holds 2 * 10^sigfig.
fn sub_buckets(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    largest.next_power_of_two()
}

/// What the chart is of: the device (address, version, boot id, workers and
/// capacity) and when it was read.
async fn caption(conn: &Conn) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let when = crate::output::utc(&prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: 0,
    });
    match crate::stats::fetch(conn).await {
        Ok(s) => format!(
            "offloadd {} at {}, boot {}, {} workers, capacity {}; read {when} UTC",
            s.version,
            conn.options.server,
            s.boot_id.get(..8).unwrap_or(&s.boot_id),
            s.workers,
            s.max_sessions
        ),
        Err(_) => format!("offloadd at {}; read {when} UTC", conn.options.server),
    }
}

pub async fn run(conn: &Conn, a: LatencyArgs) -> Result<(), String> {
    let mut hs = fetch(conn).await?;
    if let Some(n) = &a.histogram {
        hs.retain(|h| &h.name == n);
        if hs.is_empty() {
            return Err(format!("the device has no histogram named {n:?}"));
        }
    }
    if let Some(path) = &a.plot {
        let svg = crate::plot::svg(&hs, &caption(conn).await);
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if !a.hgrm && !conn.json {
            out!("wrote {}", path.display());
        }
    }
    if a.hgrm {
        for h in &hs {
            if hs.len() > 1 {
                out!("# {} ({}), values in microseconds", h.name, h.unit);
            }
            out_raw!("{}", hgrm(&h.hist, 1000.0));
        }
    } else if conn.json {
        out!("{}", to_json(&hs));
    } else if a.plot.is_none() {
        out!("{}", table(&hs));
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// 1..=1000 µs, one value each, in ns.
    pub fn uniform() -> Histogram<u64> {
        let mut h = dataplane::stats::new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        h
    }

    #[test]
    fn hgrm_has_the_standard_layout() {
        let text = hgrm(&uniform(), 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       1.000 0.000000000000          1           1.00"
        );
        // The median line, then the last line without the 1/(1-p) column.
        assert!(
            lines.contains(&"     500.223 0.500000000000        500           2.00"),
            "{text}"
        );
        let n = lines.len();
        assert_eq!(lines[n - 4], "    1000.447 1.000000000000       1000");
        assert_eq!(
            lines[n - 3],
            "#[Mean    =      500.505, StdDeviation   =      288.676]"
        );
        assert_eq!(
            lines[n - 2],
            "#[Max     =     1000.447, Total count    =         1000]"
        );
        assert!(lines[n - 1].starts_with("#[Buckets = "), "{}", lines[n - 1]);
        assert!(lines[n - 1].ends_with("SubBuckets     =         2048]"));
        // Percentiles rise.
        let ps: Vec<f64> = lines[2..n - 3]
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(ps.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn empty_hgrm_is_header_and_footer() {
        let text = hgrm(&dataplane::stats::new_histogram(), 1000.0);
        assert_eq!(text.lines().count(), 5, "{text}");
    }

    #[test]
    fn serialized_histograms_decode() {
        use hdrhistogram::serialization::{Serializer, V2Serializer};
        let mut buf = Vec::new();
        V2Serializer::new().serialize(&uniform(), &mut buf).unwrap();
        let h = decode("add", &buf).unwrap();
        assert_eq!(h.len(), 1000);
        assert!(decode("add", &buf[..10]).is_err());
        let t = table(&[Named {
            name: "add".into(),
            unit: "ns".into(),
            hist: h,
        }]);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("add         1000  500.223 µs"),
            "{t}"
        );
    }
}
