//! Why a session was refused, said three ways: a counter per reason (stats and
//! Prometheus text), an info log line (rate-limited), and an entry in the gRPC
//! trailers of the AddSession answer, which existing clients ignore and offloadctl
//! prints. The wire answer stays the contract's `AddSessionStatus` number.
//!
//! Trailer format (docs/api.md): one `offload-rejection` entry per refused session,
//! in stream order, `<session_id> <reason> <text>`, printable ASCII; the entries stop
//! at `TRAILER_BUDGET` bytes (grpc-core clients refuse a call whose metadata passes
//! 8 KiB) and `offload-rejections-omitted` then says how many were left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dataplane::session::{AddError, SessionSpec};
use proto::v2::AddSessionStatus;

use crate::config::Config;

/// What was wrong, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    IpVersion,
    Protocol,
    Port,
    Address,
    Lif,
    Action,
    NextHop,
    UnknownLif,
    NoCollector,
    IdExists,
    TupleExists,
    TableFull,
    Unavailable,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::IpVersion,
        Reason::Protocol,
        Reason::Port,
        Reason::Address,
        Reason::Lif,
        Reason::Action,
        Reason::NextHop,
        Reason::UnknownLif,
        Reason::NoCollector,
        Reason::IdExists,
        Reason::TupleExists,
        Reason::TableFull,
        Reason::Unavailable,
    ];

    /// The name in counters, Prometheus labels and trailers.
    pub fn name(self) -> &'static str {
        match self {
            Reason::IpVersion => "invalid_ip_version",
            Reason::Protocol => "invalid_protocol",
            Reason::Port => "invalid_port",
            Reason::Address => "invalid_address",
            Reason::Lif => "invalid_lif",
            Reason::Action => "invalid_action",
            Reason::NextHop => "invalid_next_hop",
            Reason::UnknownLif => "unknown_lif",
            Reason::NoCollector => "no_collector",
            Reason::IdExists => "id_exists",
            Reason::TupleExists => "tuple_exists",
            Reason::TableFull => "table_full",
            Reason::Unavailable => "unavailable",
        }
    }

    /// The contract's answer for it.
    pub fn status(self) -> AddSessionStatus {
        match self {
            Reason::IdExists | Reason::TupleExists => AddSessionStatus::SessionAlreadyExists,
            Reason::TableFull => AddSessionStatus::SessionTableFull,
            Reason::Unavailable => AddSessionStatus::SessionTableUnavailable,
            _ => AddSessionStatus::SessionRejected,
        }
    }
}

/// A refused session's reason and the words for people: which field, which value,
/// what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub text: String,
}

impl Refusal {
    pub fn new(reason: Reason, text: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            text: text.into(),
        }
    }

    /// A dataplane refusal of `spec`, with what the config says is allowed.
    pub fn from_add_error(e: AddError, spec: &SessionSpec, config: &Config) -> Refusal {
        match e {
            AddError::IdExists => Refusal::new(
                Reason::IdExists,
                format!("session id {} already exists", spec.id),
            ),
            AddError::TupleExists { id } => Refusal::new(
                Reason::TupleExists,
                format!("7-tuple already offloaded as session {id}"),
            ),
            AddError::TableFull => Refusal::new(
                Reason::TableFull,
                format!("table full (capacity {})", config.dataplane.max_sessions),
            ),
            AddError::Unavailable => Refusal::new(
                Reason::Unavailable,
                "the worker that owns the session is not running",
            ),
            AddError::BadProtocol => Refusal::new(
                Reason::Protocol,
                format!("protocol {} is neither TCP (6) nor UDP (17)", spec.proto),
            ),
            AddError::UnknownLif => unknown_lif(spec, config),
            AddError::NoCollector => Refusal::new(
                Reason::NoCollector,
                "mirror needs a collector port (dataplane.collector_port)",
            ),
        }
    }
}

/// Names the lif no port has, and the lifs there are. The dataplane looks at the low
/// 16 bits (the upper ones carry a VLAN id).
fn unknown_lif(spec: &SessionSpec, config: &Config) -> Refusal {
    let mut lifs: Vec<u16> = config.ports.iter().filter_map(|p| p.lif).collect();
    lifs.sort_unstable();
    let known = |lif: u32| lifs.contains(&(lif as u16));
    let (field, value) = if known(spec.in_lif) {
        ("out_lif", spec.out_lif)
    } else {
        ("in_lif", spec.in_lif)
    };
    let list: Vec<String> = lifs.iter().map(u16::to_string).collect();
    Refusal::new(
        Reason::UnknownLif,
        format!(
            "unknown lif {} in {field} (lifs: {})",
            value as u16,
            list.join(", ")
        ),
    )
}

/// Refusals counted by reason.
#[derive(Default)]
pub struct RefusalCounters {
    counts: [AtomicU64; Reason::ALL.len()],
}

impl RefusalCounters {
    pub fn count(&self, r: Reason) {
        self.counts[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// (`api_rejected_<reason>`, count) for every reason, zeros included.
    pub fn list(&self) -> Vec<(String, u64)> {
        Reason::ALL
            .iter()
            .map(|&r| {
                (
                    format!("{COUNTER_PREFIX}{}", r.name()),
                    self.counts[r as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }
}

/// Counter names of refusals start with this; the rest is the reason.
pub const COUNTER_PREFIX: &str = "api_rejected_";

/// Log lines of refusals per second, at most; the rest are counted and the count is
/// told with the next line that is written.
pub const LOG_LINES_PER_SECOND: u32 = 10;

/// The rate limit of the refusal log.
pub struct RefusalLog {
    state: Mutex<LogWindow>,
}

struct LogWindow {
    start: Instant,
    written: u32,
    suppressed: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            state: Mutex::new(LogWindow {
                start: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
        }
    }
}

impl RefusalLog {
    /// Writes an info line for session `id`, unless this second's lines are used
    /// up.
    pub fn log(&self, id: u64, r: &Refusal) {
        self.log_at(Instant::now(), id, r)
    }

    fn log_at(&self, now: Instant, id: u64, r: &Refusal) {
        let Some(suppressed) = self.admit(now) else {
            return;
        };
        if suppressed > 0 {
            tracing::info!(
                session_id = id,
                reason = r.reason.name(),
                "session refused: {} ({suppressed} more refusals not logged)",
                r.text
            );
        } else {
            tracing::info!(
                session_id = id,
                reason = r.reason.name(),
                "session refused: {}",
                r.text
            );
        }
    }

    /// Some(refusals left unlogged since the last line) if a line may be written
    /// now.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            w.start = now;
            w.written = 0;
        }
        if w.written >= LOG_LINES_PER_SECOND {
            w.suppressed += 1;
            return None;
        }
        w.written += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

/// Trailer key of one refused session.
pub const TRAILER: &str = "offload-rejection";
/// Trailer key of the number of refusals left out of the trailers.
pub const TRAILER_OMITTED: &str = "offload-rejections-omitted";
/// Bytes of refusal trailers at most, counted as grpc-core counts metadata (key +
/// value + 32 per entry); grpc-core clients refuse more than 8 KiB by default.
pub const TRAILER_BUDGET: usize = 2048;
/// Characters of one refusal's text at most.
const TEXT_MAX: usize = 160;

/// The trailer values for refused sessions (id, refusal) in stream order: the
/// entries that fit the budget, and how many did not.
pub fn trailer_values(refused: &[(u64, &Refusal)]) -> (Vec<String>, usize) {
    let mut used = 0;
    let mut values = Vec::new();
    for (i, (id, r)) in refused.iter().enumerate() {
        let v = trailer_value(*id, r);
        let cost = TRAILER.len() + v.len() + 32;
        if used + cost > TRAILER_BUDGET {
            return (values, refused.len() - i);
        }
        used += cost;
        values.push(v);
    }
    (values, 0)
}

fn trailer_value(id: u64, r: &Refusal) -> String {
    let text: String = r
        .text
        .chars()
        .take(TEXT_MAX)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    format!("{id} {} {text}", r.reason.name())
}

/// One trailer entry read back: (session id, reason name, text).
pub fn parse_trailer_value(v: &str) -> Option<(u64, &str, &str)> {
    let (id, rest) = v.split_once(' ')?;
    let (reason, text) = rest.split_once(' ')?;
    Some((id.parse().ok()?, reason, text))
}

/// A refusal as the trailers tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Told {
    pub session_id: u64,
    pub reason: String,
    pub text: String,
}

/// The refusals in an AddSession answer's metadata (tonic merges the trailers into
/// it), and how many the device left out.
pub fn told(m: &tonic::metadata::MetadataMap) -> (Vec<Told>, u64) {
    let refusals = m
        .get_all(TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_trailer_value)
        .map(|(session_id, reason, text)| Told {
            session_id,
            reason: reason.to_string(),
            text: text.to_string(),
        })
        .collect();
    let omitted = m
        .get(TRAILER_OMITTED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (refusals, omitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> Refusal {
        Refusal::new(Reason::TupleExists, text)
    }

    #[test]
    fn trailer_values_parse_back_and_stay_printable() {
        let r = refusal("7-tuple already offloaded as session 3\n\u{e9}");
        let (v, omitted) = trailer_values(&[(9, &r)]);
        assert_eq!(omitted, 0);
        assert_eq!(
            v,
            vec!["9 tuple_exists 7-tuple already offloaded as session 3??"]
        );
        assert_eq!(
            parse_trailer_value(&v[0]),
            Some((
                9,
                "tuple_exists",
                "7-tuple already offloaded as session 3??"
            ))
        );
        assert_eq!(parse_trailer_value("x y"), None);
    }

    #[test]
    fn trailers_stop_at_the_budget_and_count_the_rest() {
        let r = refusal(&"x".repeat(500));
        let many: Vec<(u64, &Refusal)> = (0..64).map(|i| (i, &r)).collect();
        let (v, omitted) = trailer_values(&many);
        let bytes: usize = v.iter().map(|v| TRAILER.len() + v.len() + 32).sum();
        assert!(bytes <= TRAILER_BUDGET, "{bytes}");
        assert!(
            v.iter().all(|v| v.len() <= 20 + 14 + TEXT_MAX),
            "text capped"
        );
        assert_eq!(v.len() + omitted, 64);
        assert!(omitted > 0);
    }

    /// The log's output, as the offloadd binary writes it.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn refusals_are_logged_at_info_with_id_and_reason_and_a_suppressed_count() {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let log = RefusalLog::default();
        let r = Refusal::new(Reason::UnknownLif, "unknown lif 9 in out_lif (lifs: 1, 2)");
        let t0 = Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for id in 0..12 {
                log.log_at(t0, id, &r);
            }
            log.log_at(t0 + Duration::from_secs(1), 99, &r);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        assert!(lines.iter().all(|l| l.contains("INFO")), "{text}");
        assert!(
            lines[0].contains("session refused: unknown lif 9 in out_lif (lifs: 1, 2)")
                && lines[0].contains("session_id=0")
                && lines[0].contains("reason=\"unknown_lif\""),
            "{text}"
        );
        assert!(
            lines[10].contains("(2 more refusals not logged)")
                && lines[10].contains("session_id=99"),
            "{text}"
        );
    }

    #[test]
    fn the_log_writes_at_most_its_lines_per_second_and_counts_the_rest() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let admitted = (0..25).filter(|_| log.admit(t0).is_some()).count();
        assert_eq!(admitted, LOG_LINES_PER_SECOND as usize);
        assert_eq!(log.admit(t0 + Duration::from_secs(1)), Some(15));
        assert_eq!(log.admit(t0 + Duration::from_secs(1)), Some(0));
    }
}
