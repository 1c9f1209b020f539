//! Test fixtures shared by the backends' tests (compiled for tests only).

/// Runs `cmd args`; its stderr is the error.
pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A veth pair made for one test, removed on drop (also when the test panics).
pub struct Veth {
    pub a: String,
    pub b: String,
}

impl Veth {
    pub fn new(tag: &str) -> Result<Veth, String> {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: veth pairs need root".into());
        }
        let id = std::process::id() % 100_000;
        let a = format!("tv{tag}{id}a");
        let b = format!("tv{tag}{id}b");
        run(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        )?;
        let v = Veth { a, b };
        for d in [&v.a, &v.b] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{d}/disable_ipv6"), "1");
            run("ip", &["link", "set", d, "up"])?;
        }
        Ok(v)
    }

    /// `new`, or None with the reason printed: the test is then skipped (not root,
    /// no veth support).
    pub fn or_skip(tag: &str) -> Option<Veth> {
        Veth::new(tag).map_err(|e| eprintln!("skipped: {e}")).ok()
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.a])
            .output();
    }
}
