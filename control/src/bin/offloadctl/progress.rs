//! Progress of long work (bench's phases, fw-sim's running totals) on stderr, drawn
//! by indicatif. Drawn only for a person: when stderr is a terminal and the output is
//! not `--json`. Otherwise every bar is hidden and costs nothing, so piped and JSON
//! output are byte for byte what they are without progress.

use std::io::{self, IsTerminal};
use std::time::Duration;

use indicatif::{
    HumanCount, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle, TermLike,
};

/// How often a shown bar redraws by itself, so rates, times and the spinner move while
/// a phase waits on the device.
const REDRAW: Duration = Duration::from_millis(200);

/// Redraws a second at most.
const REDRAWS_PER_S: u8 = 20;

/// Whether progress is drawn: not under --json, and only onto a terminal.
pub fn shown(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A bar of `len` steps, e.g.
/// `removing 1,000,000 sessions ======>      420,000/1,000,000 85,000/s 7s`.
pub fn bar(json: bool, len: u64, message: String) -> ProgressBar {
    let style =
        ProgressStyle::with_template("{msg} {wide_bar} {human_pos}/{human_len} {per_sec:0} {eta}")
            .expect("a valid template")
            .progress_chars("=> ");
    start(json, Some(len), style, message)
}

/// A status line for work of no known length: a spinner, the time so far and a
/// message the caller updates.
pub fn spinner(json: bool, message: String) -> ProgressBar {
    let style =
        ProgressStyle::with_template("{spinner} {elapsed} {wide_msg}").expect("a valid template");
    start(json, None, style, message)
}

fn start(json: bool, len: Option<u64>, style: ProgressStyle, message: String) -> ProgressBar {
    if !shown(json) {
        return ProgressBar::hidden();
    }
    let stderr = Box::new(Stderr(console::Term::buffered_stderr()));
    let target = ProgressDrawTarget::term_like_with_hz(stderr, REDRAWS_PER_S);
    let bar = ProgressBar::with_draw_target(len, target)
        .with_style(style)
        .with_message(message)
        // An early return (an error) leaves no stale bar above the error line.
        .with_finish(ProgressFinish::AndClear);
    // Drawn at once: a phase shorter than one redraw still says what it did.
    bar.tick();
    bar.enable_steady_tick(REDRAW);
    bar
}

/// The terminal on stderr, two columns narrower than it is. indicatif pads a bar's line
/// to the width and leaves the cursor at its end, where the `^C` a terminal echoes on
/// Ctrl-C (how fw-sim stops) would wrap onto a new line, and clearing the bar would
/// then clear that line instead of the bar's.
#[derive(Debug)]
struct Stderr(console::Term);

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        self.0.size().1.saturating_sub(2)
    }
    fn height(&self) -> u16 {
        self.0.size().0
    }
    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_up(n)
    }
    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_down(n)
    }
    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_right(n)
    }
    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor_left(n)
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.0.write_line(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.0.write_str(s)
    }
    fn clear_line(&self) -> io::Result<()> {
        self.0.clear_line()
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A count for people: 1000000 as "1,000,000".
pub fn count(n: u64) -> String {
    HumanCount(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_never_shows_progress() {
        assert!(!shown(true));
        // Hidden bars take updates and draw nothing.
        let b = bar(true, 10, "adding 10 sessions".into());
        b.inc(3);
        assert!(b.is_hidden());
        assert_eq!(b.position(), 3);
        assert!(spinner(true, "x".into()).is_hidden());
    }

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(count(999), "999");
    }
}
