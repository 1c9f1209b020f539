//! Test fixtures shared by the backends' tests (compiled for tests only), and the
//! crate's skip policy for tests the machine cannot run.

/// What a test does when this machine cannot run it (not root, a tool missing): under
/// `CI=true` a failure, so CI never counts an untested behaviour as passed; elsewhere
/// it prints `skipped: <why>` and the caller returns. A setup step that fails where
/// the test could run is not a reason to skip: the test panics.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and this test cannot run: {why}");
    }
    eprintln!("skipped: {why}");
}

/// Why `tool` cannot be run, if it is not on the PATH.
pub fn missing_tool(tool: &str) -> Option<String> {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| format!("`{tool}` is not installed"))
}

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
    /// A veth pair `tv<tag><pid>a` / `...b`, both up with IPv6 off; the error says
    /// which step failed.
    pub fn new(tag: &str) -> Result<Veth, String> {
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

    /// The test's veth pair, or None where the machine cannot make one (not root, no
    /// `ip`: `skip_or_fail`). As root with `ip`, failing to make it panics.
    pub fn or_skip(tag: &str) -> Option<Veth> {
        // SAFETY: geteuid has no preconditions.
        let why = if unsafe { libc::geteuid() } != 0 {
            Some("not root: veth pairs need root".to_string())
        } else {
            missing_tool("ip")
        };
        if let Some(why) = why {
            skip_or_fail(&why);
            return None;
        }
        Some(Veth::new(tag).unwrap_or_else(|e| panic!("veth setup: {e}")))
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.a])
            .output();
    }
}
