//! A program in a real terminal for the tests: a tmux session runs it in a pane of a
//! given size; the test reads the screen with `capture-pane`, types with `send-keys`
//! and can record every byte the program writes to the terminal (`pipe-pane`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for something to show on the screen.
pub const EVENT: Duration = Duration::from_secs(30);

/// A tmux session running one command; killed when dropped.
pub struct Pane {
    pub name: String,
    /// The folder where a recorded pane writes `terminal.log` and `exit-status`.
    record: Option<PathBuf>,
}

impl Pane {
    /// `command`, run by tmux's shell.
    pub fn start(command: &str, width: u16, height: u16) -> Pane {
        Pane::open(&[command], width, height)
    }

    /// A pane running `argv` (one element: a shell command line).
    fn open(argv: &[&str], width: u16, height: u16) -> Pane {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("offloadd-test-{}-{n}", std::process::id());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .args(argv)
            .status()
            .expect("tmux runs")
            .success();
        assert!(ok, "tmux started the pane");
        Pane { name, record: None }
    }

    /// `command` (a shell command line) in a pane that records in `dir` all it
    /// writes to the terminal (`written`) and its exit status (`wait_exit`), and stays
    /// on screen after the command ends.
    pub fn start_recorded(command: &str, width: u16, height: u16, dir: &Path) -> Pane {
        let status = dir.join("exit-status");
        // The shell waits for a line on the terminal, so nothing is written before
        // the recording starts. It catches SIGINT (a caught signal is the default
        // again in the command, so Ctrl-C reaches the command) and outlives the
        // command to write its status (tmux's own pane_dead_status is not always set).
        let line = format!(
            "trap true INT; read _ && {command}; echo $? > '{}'",
            status.display()
        );
        let mut pane = Pane::open(&["sh", "-c", &line], width, height);
        pane.record = Some(dir.to_path_buf());
        let target = pane.name.clone();
        let set = pane.tmux(&["set-option", "-w", "-t", &target, "remain-on-exit", "on"]);
        assert!(set.status.success(), "remain-on-exit: {set:?}");
        let log = format!("cat >> '{}'", dir.join("terminal.log").display());
        let piped = pane.tmux(&["pipe-pane", "-t", &target, &log]);
        assert!(piped.status.success(), "pipe-pane: {piped:?}");
        pane.keys("Enter");
        pane
    }

    /// Everything a recorded pane's command has written to the terminal so far.
    pub fn written(&self) -> String {
        let dir = self.record.as_ref().expect("a recorded pane");
        std::fs::read_to_string(dir.join("terminal.log")).unwrap_or_default()
    }

    pub fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(args).output().expect("tmux runs")
    }

    pub fn screen(&self) -> String {
        let o = self.tmux(&["capture-pane", "-p", "-t", &self.name]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn keys(&self, keys: &str) {
        assert!(self
            .tmux(&["send-keys", "-t", &self.name, keys])
            .status
            .success());
    }

    pub fn alive(&self) -> bool {
        self.tmux(&["has-session", "-t", &self.name])
            .status
            .success()
    }

    /// Waits until a recorded pane's command has ended; returns its exit status.
    pub async fn wait_exit(&self) -> i32 {
        let dir = self.record.as_ref().expect("a recorded pane");
        let deadline = Instant::now() + EVENT;
        loop {
            let status = std::fs::read_to_string(dir.join("exit-status")).unwrap_or_default();
            if let Ok(code) = status.trim().parse() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the command to end; the screen:\n{}",
                self.screen()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the screen passes `check`; returns it.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + EVENT;
        loop {
            let s = self.screen();
            if check(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-session", "-t", &self.name]);
    }
}
