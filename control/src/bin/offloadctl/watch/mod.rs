//! `watch`: a full-screen view of the device and its sessions, like top.
//!
//! Each refresh reads the device's stats and its sessions (admin ListSessions, in id
//! order, at most `--sessions`); rates are the differences between two refreshes.
//! `model.rs` works out what to show, `view.rs` draws it with ratatui, `once.rs`
//! prints one frame for scripts. The device going away is shown, not fatal: the
//! view keeps the last numbers and reconnects until it answers again.

mod model;
mod once;
mod view;

use std::time::{Duration, Instant, SystemTime};

use proto::admin::{ListSessionsRequest, StatsRequest};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::{status_line, Conn};
use model::{Column, Order, Sample};
use view::{Link, Screen};

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub interval: f64,
    /// Print one frame without terminal control codes, then exit (with --json: one
    /// JSON object).
    #[arg(long)]
    pub once: bool,
    /// Sessions read per refresh: the first ones by id (sorting applies to them).
    #[arg(long, alias = "rows", default_value_t = 10_000)]
    pub sessions: usize,
    /// Show sessions with ids above this one [default: from the first].
    #[arg(long)]
    pub start: Option<u64>,
}

pub fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// Longest a refresh may take before it counts as the device not answering.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads samples from the device, connecting again after a failure.
struct Sampler<'a> {
    conn: &'a Conn,
    channel: Option<Channel>,
    sessions: usize,
    start: Option<u64>,
}

impl Sampler<'_> {
    async fn sample(&mut self) -> Result<Sample, String> {
        let r = tokio::time::timeout(CALL_TIMEOUT, self.read()).await;
        let r = r.unwrap_or_else(|_| Err("no answer within 5 s".into()));
        if r.is_err() {
            self.channel = None;
        }
        r
    }

    async fn read(&mut self) -> Result<Sample, String> {
        let ch = match &self.channel {
            Some(c) => c.clone(),
            None => {
                let c = self.conn.channel().await?;
                self.channel = Some(c.clone());
                c
            }
        };
        let mut admin = control::client::admin(ch);
        let stats = admin
            .get_stats(StatsRequest {})
            .await
            .map_err(|s| status_line("GetStats failed", &s))?
            .into_inner();
        let mut sessions = Vec::new();
        let mut after = self.start;
        let mut more = true;
        while more && sessions.len() < self.sessions {
            let page = admin
                .list_sessions(ListSessionsRequest {
                    after,
                    limit: (self.sessions - sessions.len()).min(10_000) as u32,
                })
                .await
                .map_err(|s| status_line("ListSessions failed", &s))?
                .into_inner();
            more = page.more && !page.sessions.is_empty();
            after = page
                .sessions
                .last()
                .and_then(|v| v.session.as_ref())
                .map(|s| s.session_id)
                .or(after);
            sessions.extend(page.sessions);
        }
        Ok(Sample {
            at: Instant::now(),
            wall: SystemTime::now(),
            stats,
            sessions,
            more,
        })
    }
}

pub async fn run(conn: &Conn, a: WatchArgs) -> Result<(), String> {
    let mut sampler = Sampler {
        conn,
        channel: None,
        sessions: a.sessions.max(1),
        start: a.start,
    };
    if a.once {
        return print_once(&mut sampler, conn.json).await;
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(
            "watch needs a terminal; --once (with --json for JSON) prints one frame".into(),
        );
    }
    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot use the terminal: {e}"))?;
    let r = full_screen(&mut terminal, &mut sampler, a.interval).await;
    ratatui::restore();
    r
}

async fn print_once(sampler: &mut Sampler<'_>, json: bool) -> Result<(), String> {
    let s = sampler.sample().await?;
    let d = model::device(&s, None);
    let rows = model::rows(&s, None);
    if json {
        out!("{}", model::to_json(&d, &rows, s.more));
    } else {
        out_raw!("{}", once::text(&d, &rows, s.more));
    }
    Ok(())
}

/// What a key asks for.
enum Key {
    Quit,
    Sort(bool),
    Reverse,
    Scroll(isize),
    PageScroll(isize),
    Top,
    Bottom,
    Nothing,
}

fn key(k: KeyEvent) -> Key {
    if k.kind == KeyEventKind::Release {
        return Key::Nothing;
    }
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
        KeyCode::Char('>') | KeyCode::Right => Key::Sort(true),
        KeyCode::Char('<') | KeyCode::Left => Key::Sort(false),
        KeyCode::Char('r') => Key::Reverse,
        KeyCode::Down | KeyCode::Char('j') => Key::Scroll(1),
        KeyCode::Up | KeyCode::Char('k') => Key::Scroll(-1),
        KeyCode::PageDown | KeyCode::Char(' ') => Key::PageScroll(1),
        KeyCode::PageUp => Key::PageScroll(-1),
        KeyCode::Home | KeyCode::Char('g') => Key::Top,
        KeyCode::End | KeyCode::Char('G') => Key::Bottom,
        _ => Key::Nothing,
    }
}

/// Terminal events on a thread of their own (crossterm's reads block).
fn terminal_events() -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(e) = event::read() {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    rx
}

/// The view's state between refreshes.
struct Watch {
    latest: Option<Sample>,
    before: Option<Sample>,
    link: Link,
    order: Order,
    page: usize,
}

impl Watch {
    fn refreshed(&mut self, r: Result<Sample, String>) {
        let clock = || clock(SystemTime::now());
        match r {
            Ok(s) => {
                let old_boot = self.latest.as_ref().map(|l| l.stats.boot_id.clone());
                self.link = match old_boot {
                    Some(b) if b != s.stats.boot_id => Link::Restarted { at: clock() },
                    _ if matches!(self.link, Link::Restarted { .. }) => self.link.clone(),
                    _ => Link::Up,
                };
                if matches!(self.link, Link::Restarted { .. }) && self.before.is_some() {
                    // Counters started again from 0: no rates across the restart.
                    self.latest = None;
                }
                self.before = self.latest.replace(s);
            }
            Err(error) => {
                let since = match &self.link {
                    Link::Down { since, .. } => since.clone(),
                    _ => clock(),
                };
                self.link = Link::Down { since, error };
            }
        }
    }

    fn pressed(&mut self, k: Key, rows: usize) -> bool {
        let page = self.page.max(1) as isize;
        match k {
            Key::Quit => return false,
            Key::Sort(right) => {
                self.order.by = self.order.by.step(right);
                self.order.descending = !matches!(
                    self.order.by,
                    Column::Id
                        | Column::Tuple
                        | Column::Protocol
                        | Column::Lifs
                        | Column::Action
                        | Column::State
                );
            }
            Key::Reverse => self.order.descending = !self.order.descending,
            Key::Scroll(n) => self.order.scroll(n, self.page, rows),
            Key::PageScroll(n) => self.order.scroll(n * page, self.page, rows),
            Key::Top => self.order.first = 0,
            Key::Bottom => self.order.scroll(isize::MAX / 2, self.page, rows),
            Key::Nothing => {}
        }
        true
    }

    fn draw(&mut self, terminal: &mut ratatui::DefaultTerminal) -> Result<(), String> {
        let (device, mut rows, more) = match &self.latest {
            Some(s) => (
                Some(model::device(s, self.before.as_ref())),
                model::rows(s, self.before.as_ref()),
                s.more,
            ),
            None => (None, Vec::new(), false),
        };
        model::sort(&mut rows, &self.order);
        self.order.scroll(0, self.page, rows.len());
        let mut page = self.page;
        terminal
            .draw(|f| {
                page = view::draw(
                    f,
                    &Screen {
                        device: device.as_ref(),
                        rows: &rows,
                        order: &self.order,
                        link: &self.link,
                        more,
                    },
                )
            })
            .map_err(|e| format!("cannot draw: {e}"))?;
        self.page = page;
        Ok(())
    }

    fn rows(&self) -> usize {
        self.latest.as_ref().map_or(0, |s| s.sessions.len())
    }
}

/// Time of day, HH:MM:SS UTC (the log's clock too).
fn clock(t: SystemTime) -> String {
    let s = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02} UTC", s / 3600 % 24, s / 60 % 60, s % 60)
}

async fn full_screen(
    terminal: &mut ratatui::DefaultTerminal,
    sampler: &mut Sampler<'_>,
    interval: f64,
) -> Result<(), String> {
    let mut events = terminal_events();
    let mut w = Watch {
        latest: None,
        before: None,
        link: Link::Connecting,
        order: Order::default(),
        page: 0,
    };
    let mut tick = tokio::time::interval(Duration::from_secs_f64(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    w.draw(terminal)?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let r = sampler.sample().await;
                w.refreshed(r);
            }
            e = events.recv() => match e {
                Some(Event::Key(k)) => {
                    let rows = w.rows();
                    if !w.pressed(key(k), rows) {
                        return Ok(());
                    }
                }
                Some(_) => {} // A resize: drawn again below at the new size.
                None => return Err("the terminal went away".into()),
            },
        }
        w.draw(terminal)?;
    }
}
