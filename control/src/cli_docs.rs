//! Man pages and shell completions of offloadd and offloadctl, written from their clap
//! definitions (the Debian package ships them; `packaging/build-deb.sh` asks each
//! binary for its own).
//!
//! The request is a hidden argument that only the parsing command knows
//! (`offloadd --write-docs DIR`, `offloadctl write-docs DIR`): the pages and
//! completions are written from the public command, so the request itself appears in
//! neither, and `--help` is unchanged.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, Command};
use clap_complete::Shell;

/// Name of the hidden flag (offloadd) or subcommand (offloadctl).
pub const WRITE_DOCS: &str = "write-docs";

/// `cmd` as parsed by offloadd: with the hidden `--write-docs DIR` flag.
pub fn with_write_docs_flag(cmd: Command) -> Command {
    cmd.arg(docs_dir_arg().long(WRITE_DOCS))
}

/// `cmd` as parsed by offloadctl: with the hidden `write-docs DIR` subcommand.
pub fn with_write_docs_subcommand(cmd: Command) -> Command {
    cmd.subcommand(
        Command::new(WRITE_DOCS)
            .hide(true)
            .arg(docs_dir_arg().required(true)),
    )
}

fn docs_dir_arg() -> Arg {
    Arg::new(WRITE_DOCS)
        .value_name("DIR")
        .value_parser(clap::value_parser!(PathBuf))
        .hide(true)
}

/// The directory of a `--write-docs DIR` flag or a `write-docs DIR` subcommand, if
/// that is what was asked for.
pub fn requested_dir(m: &ArgMatches) -> Option<PathBuf> {
    let m = match m.subcommand() {
        Some((WRITE_DOCS, sub)) => sub,
        _ => m,
    };
    m.try_get_one::<PathBuf>(WRITE_DOCS).ok().flatten().cloned()
}

/// The shells completions are written for, and each one's file name for `bin`.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes `DIR/man/<bin>.1` (and `<bin>-<subcommand>.1` for each subcommand) and
/// `DIR/completions/<bin>.{bash,fish}` and `_<bin>` (zsh). Returns the files written.
pub fn write(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let bin = cmd.get_name().to_owned();
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    clap_mangen::generate_to(cmd.clone(), &man)
        .map_err(|e| format!("cannot write the man pages into {}: {e}", man.display()))?;
    let mut written = pages_of(&man, &bin)?;
    for shell in SHELLS {
        let mut cmd = cmd.clone();
        let path =
            clap_complete::generate_to(shell, &mut cmd, &bin, &completions).map_err(|e| {
                format!(
                    "cannot write the {shell} completion into {}: {e}",
                    completions.display()
                )
            })?;
        written.push(path);
    }
    Ok(written)
}

/// Whether `path` is `bin`'s man page or one of its subcommands'.
fn is_page_of(path: &Path, bin: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == format!("{bin}.1") || n.starts_with(&format!("{bin}-")))
}

/// The man pages of `bin` in `dir` (other binaries may have written theirs there).
fn pages_of(dir: &Path, bin: &str) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_page_of(p, bin))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Command {
        Command::new("demo")
            .version("1.2.3")
            .about("A demo tool")
            .arg(Arg::new("config").long("config").help("Config file"))
            .subcommand(Command::new("run").about("Runs it"))
    }

    #[test]
    fn writes_pages_and_completions_without_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(demo(), dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        for want in [
            "man/demo.1",
            "man/demo-run.1",
            "completions/demo.bash",
            "completions/_demo",
            "completions/demo.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let page = std::fs::read_to_string(dir.path().join("man/demo.1")).unwrap();
        assert!(
            page.contains("A demo tool") && page.contains("config"),
            "{page}"
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/demo.bash")).unwrap();
        assert!(bash.contains("--config") && bash.contains("run"), "{bash}");
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(
                !text.contains(WRITE_DOCS),
                "{} names {WRITE_DOCS}",
                f.display()
            );
        }
    }

    #[test]
    fn the_request_is_parsed_and_hidden() {
        let flag = with_write_docs_flag(demo());
        let m = flag
            .clone()
            .try_get_matches_from(["demo", "--write-docs", "/tmp/d"])
            .unwrap();
        assert_eq!(requested_dir(&m), Some(PathBuf::from("/tmp/d")));
        let m = flag.clone().try_get_matches_from(["demo"]).unwrap();
        assert_eq!(requested_dir(&m), None);
        let sub = with_write_docs_subcommand(demo());
        let m = sub
            .clone()
            .try_get_matches_from(["demo", "write-docs", "/tmp/d"])
            .unwrap();
        assert_eq!(requested_dir(&m), Some(PathBuf::from("/tmp/d")));
        let m = sub.clone().try_get_matches_from(["demo", "run"]).unwrap();
        assert_eq!(requested_dir(&m), None);
        for mut cmd in [flag, sub] {
            let help = cmd.render_long_help().to_string();
            assert!(!help.contains(WRITE_DOCS), "{help}");
        }
    }
}
