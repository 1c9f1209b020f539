//! Draws `watch`'s screen with ratatui: the device lines, the session table (the
//! columns that fit the terminal's width, the sorted one marked), and a key line.
//! Any size works: what does not fit is cut, never an error.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::model::{age, si, si_rate, Column, Device, Order, Row};

/// Whether the device answered the last refresh.
#[derive(Clone, Debug, PartialEq)]
pub enum Link {
    /// No answer yet.
    Connecting,
    Up,
    /// The last refreshes failed since `since` (local time, HH:MM:SS).
    Down {
        since: String,
        error: String,
    },
    /// It answers again, with a new boot id: it restarted at `at`.
    Restarted {
        at: String,
    },
}

/// Everything one screen shows.
pub struct Screen<'a> {
    pub device: Option<&'a Device>,
    /// Sorted.
    pub rows: &'a [Row],
    pub order: &'a Order,
    pub link: &'a Link,
    /// The device holds more sessions than were read.
    pub more: bool,
}

/// Draws the screen; returns how many session rows fit (a page, for scrolling).
pub fn draw(f: &mut Frame, s: &Screen) -> usize {
    let [head, table, keys] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(Paragraph::new(device_lines(s)), head);
    let page = table.height.saturating_sub(1) as usize;
    draw_table(f, table, s, page);
    f.render_widget(Paragraph::new(key_line(s, page, keys.width)), keys);
    page
}

fn device_lines(s: &Screen) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let Some(d) = s.device else {
        lines.push(Line::from(
            "offloadd: waiting for the device's first answer",
        ));
        lines.push(link_line(s.link));
        return lines;
    };
    let boot = d.boot_id.get(..8).unwrap_or(&d.boot_id);
    lines.push(Line::from(vec![
        Span::styled(
            format!("offloadd {}", d.version),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  up {}  workers {}  boot {boot}",
            crate::stats::uptime(d.uptime_s),
            d.workers
        )),
    ]));
    let fill = if d.capacity > 0 {
        100.0 * d.sessions as f64 / d.capacity as f64
    } else {
        0.0
    };
    lines.push(Line::from(format!(
        "pps in {}  out {}   sessions {} of {} ({fill:.1}%)  closed waiting {}",
        si_rate(d.rx_pps),
        si_rate(d.tx_pps),
        si(d.sessions as f64),
        si(d.capacity as f64),
        d.closed_pending
    )));
    let closes = d.closes_per_s.map_or("-".into(), |c| {
        format!(
            "fin {} rst {} timeout {} deleted {}",
            si(c[0]),
            si(c[1]),
            si(c[2]),
            si(c[3])
        )
    });
    lines.push(Line::from(format!(
        "adds/s {}  closes/s {closes}  refused {} ({}/s)",
        si_rate(d.adds_per_s),
        d.refusals,
        si_rate(d.refusals_per_s)
    )));
    lines.push(link_line(s.link));
    lines
}

fn link_line(link: &Link) -> Line<'static> {
    match link {
        Link::Up | Link::Connecting => Line::from(""),
        Link::Down { since, error } => Line::from(Span::styled(
            format!("device unreachable since {since}: {error} (retrying)"),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        Link::Restarted { at } => Line::from(Span::styled(
            format!("device back at {at} with a new boot id: it restarted, its earlier sessions are gone"),
            Style::default().fg(Color::Yellow),
        )),
    }
}

/// The columns shown at a width, with theirs; the tuple takes what is left.
fn columns(width: u16) -> Vec<(Column, Constraint)> {
    use Column::*;
    let fixed = |c: Column| match c {
        Id => Constraint::Length(7),
        Tuple => Constraint::Fill(1),
        Protocol => Constraint::Length(5),
        Lifs => Constraint::Length(7),
        Action => Constraint::Length(7),
        State => Constraint::Length(6),
        Age => Constraint::Length(6),
        Packets => Constraint::Length(11),
        Bytes => Constraint::Length(13),
        Rate => Constraint::Length(11),
    };
    let shown: &[Column] = match width {
        0..100 => &[Id, Tuple, Protocol, State, Age, Packets, Rate],
        100..130 => &[Id, Tuple, Protocol, Lifs, Action, State, Age, Packets, Rate],
        _ => &Column::ALL,
    };
    shown.iter().map(|&c| (c, fixed(c))).collect()
}

/// Short state names: the column is narrow.
fn state(s: &str) -> &str {
    match s {
        "established" => "estab",
        "closing_1" => "fin1",
        "closing_2" => "fin2",
        other => other,
    }
}

fn cell(r: &Row, c: Column) -> String {
    match c {
        Column::Id => r.id.to_string(),
        Column::Tuple => r.tuple.clone(),
        Column::Protocol => r.protocol.clone(),
        Column::Lifs => r.lifs.clone(),
        Column::Action => r.action.clone(),
        Column::State => state(&r.state).to_string(),
        Column::Age => age(r.age_s),
        Column::Packets => format!("{}/{}", si(r.packets[0] as f64), si(r.packets[1] as f64)),
        Column::Bytes => format!("{}/{}", si(r.bytes[0] as f64), si(r.bytes[1] as f64)),
        Column::Rate => r
            .pps
            .map_or("-".into(), |p| format!("{}/{}", si(p[0]), si(p[1]))),
    }
}

fn draw_table(f: &mut Frame, area: Rect, s: &Screen, page: usize) {
    let cols = columns(area.width);
    let marker = if s.order.descending { "▼" } else { "▲" };
    let header = TableRow::new(cols.iter().map(|(c, _)| {
        if *c == s.order.by {
            format!("{}{marker}", c.title())
        } else {
            c.title().to_string()
        }
    }))
    .style(Style::default().add_modifier(Modifier::REVERSED));
    let body = s
        .rows
        .iter()
        .skip(s.order.first)
        .take(page)
        .map(|r| TableRow::new(cols.iter().map(|(c, _)| cell(r, *c))));
    let widths: Vec<Constraint> = cols.iter().map(|(_, w)| *w).collect();
    f.render_widget(Table::new(body, widths).header(header), area);
}

fn key_line(s: &Screen, page: usize, width: u16) -> Line<'static> {
    let n = s.rows.len();
    let shown = if n == 0 {
        "no sessions".to_string()
    } else {
        let first = s.order.first.min(n - 1) + 1;
        let last = (s.order.first + page).min(n);
        let more = if s.more { "+" } else { "" };
        format!("{first}-{last} of {n}{more}")
    };
    // The sort is marked in the header unless its column is not shown.
    let by = if columns(width).iter().any(|(c, _)| *c == s.order.by) {
        String::new()
    } else {
        let dir = if s.order.descending { "▼" } else { "▲" };
        format!("  by {}{dir}", s.order.by.title())
    };
    Line::from(vec![
        Span::styled("q", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            " quit  </> sort  r reverse  ↑↓ PgUp PgDn Home End  {shown}{by}"
        )),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::model::{device, rows, sort, tests::sample, tests::view};
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn text(t: &Terminal<TestBackend>) -> String {
        let b = t.backend().buffer();
        let w = b.area.width as usize;
        b.content
            .chunks(w)
            .map(|line| line.iter().map(|c| c.symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn render(width: u16, height: u16, link: &Link) -> (String, usize) {
        let s = sample(
            std::time::Instant::now(),
            (1..=40).map(|i| view(i, [i, i], true)).collect(),
            100,
        );
        let d = device(&s, None);
        let mut r = rows(&s, None);
        let order = Order {
            by: Column::Packets,
            descending: true,
            first: 0,
        };
        sort(&mut r, &order);
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        let mut page = 0;
        t.draw(|f| {
            page = draw(
                f,
                &Screen {
                    device: Some(&d),
                    rows: &r,
                    order: &order,
                    link,
                    more: false,
                },
            )
        })
        .unwrap();
        (text(&t), page)
    }

    #[test]
    fn an_80_by_24_terminal_shows_the_device_a_page_of_sessions_and_the_keys() {
        let (screen, page) = render(80, 24, &Link::Up);
        assert!(screen.starts_with("offloadd "), "{screen}");
        assert!(screen.contains("sessions 4 of 19"), "{screen}");
        assert!(screen.contains("PKTS▼"), "{screen}");
        assert!(screen.contains("10.0.0.1:1040 -> 10.1.0.2:53"), "{screen}");
        let first_row = screen.lines().nth(5).unwrap();
        assert!(
            first_row.starts_with("40 "),
            "sorted by packets, most first: {screen}"
        );
        assert_eq!(page, 18, "24 lines: 4 device, 1 header, 1 keys");
        assert!(screen.contains("1-18 of 40"), "{screen}");
        assert!(!screen.contains("BYTES"), "narrow: no bytes column");
    }

    #[test]
    fn a_wide_terminal_shows_every_column_and_a_tiny_one_does_not_fail() {
        let (screen, _) = render(160, 50, &Link::Up);
        for c in Column::ALL {
            assert!(screen.contains(c.title()), "{} in {screen}", c.title());
        }
        let (tiny, page) = render(10, 3, &Link::Up);
        assert_eq!(page, 0);
        assert!(!tiny.is_empty());
    }

    #[test]
    fn a_device_that_went_away_says_so() {
        let down = Link::Down {
            since: "12:00:01".into(),
            error: "connection refused".into(),
        };
        let (screen, _) = render(120, 24, &down);
        assert!(
            screen.contains("device unreachable since 12:00:01: connection refused (retrying)"),
            "{screen}"
        );
    }
}
