//! A program in a real terminal for the tests: a tmux session runs it in a pane of a
//! given size; the test reads the screen with `capture-pane`, types with `send-keys`
//! and can record every byte the program writes to the terminal (`pipe-pane`).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for something to show on the screen.
pub const EVENT: Duration = Duration::from_secs(30);

/// A tmux session running one command; killed when dropped.
pub struct Pane {
    pub name: String,
}

impl Pane {
    pub fn start(command: &str, width: u16, height: u16) -> Pane {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("offloadd-test-{}-{n}", std::process::id());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name])
            .args(["-x", &width.to_string(), "-y", &height.to_string()])
            .arg(command)
            .status()
            .expect("tmux runs")
            .success();
        assert!(ok, "tmux started the pane");
        Pane { name }
    }

    /// `command` in a pane that records all it writes to the terminal in `log` and
    /// stays on screen after the command ends (see `exit_status`).
    pub fn start_recorded(command: &str, width: u16, height: u16, log: &Path) -> Pane {
        // The command waits for a line on the terminal, so nothing is written before
        // the recording starts.
        let pane = Pane::start(&format!("read _ && {command}"), width, height);
        let target = pane.name.clone();
        let set = pane.tmux(&["set-option", "-w", "-t", &target, "remain-on-exit", "on"]);
        assert!(set.status.success(), "remain-on-exit: {set:?}");
        let record = format!("cat >> '{}'", log.display());
        let piped = pane.tmux(&["pipe-pane", "-t", &target, &record]);
        assert!(piped.status.success(), "pipe-pane: {piped:?}");
        pane.keys("Enter");
        pane
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

    /// The exit status of a `start_recorded` command once it has ended.
    pub fn exit_status(&self) -> Option<i32> {
        let o = self.tmux(&[
            "display-message",
            "-p",
            "-t",
            &self.name,
            "#{pane_dead} #{pane_dead_status}",
        ]);
        let s = String::from_utf8_lossy(&o.stdout);
        let (dead, status) = s.trim().split_once(' ')?;
        (dead == "1").then(|| status.parse().ok()).flatten()
    }

    /// Waits until the command has ended; returns its exit status.
    pub async fn wait_exit(&self) -> i32 {
        let deadline = Instant::now() + EVENT;
        loop {
            if let Some(code) = self.exit_status() {
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
