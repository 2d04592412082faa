//! Subcommands, one module each, each with `Args` and `run`.

pub mod cat;
pub mod check;
pub mod docs;
pub mod export;
pub mod follow;
pub mod import;
pub mod inspect;
pub mod migrate;
pub mod undo;
pub mod verify;
pub mod watch;

use crate::util::Problem;

/// `3 empty databases: src0-db1 (db 1), ...`: the shards with nothing in them, in one line.
pub(crate) fn empty_line(out: &mut impl std::io::Write, noun: &str, empty: &[impl AsRef<str>]) -> std::io::Result<()> {
    if empty.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = empty.iter().map(|e| e.as_ref()).collect();
    writeln!(
        out,
        "{}: {}",
        crate::util::count(empty.len() as u64, noun),
        names.join(", ")
    )
}

/// Writes the first keys of `list` to a summary as `  WHAT KEY: REASON`, and how many more the
/// `--report` holds (or would hold, without one): a summary stays readable with a million
/// listed keys.
pub(crate) fn list_keys(
    out: &mut dyn std::io::Write,
    what: &str,
    list: &[Problem],
    report: bool,
) -> std::io::Result<()> {
    const SHOWN: usize = 20;
    for p in list.iter().take(SHOWN) {
        writeln!(out, "  {what} {}: {}", p.key, p.reason)?;
    }
    if list.len() > SHOWN {
        writeln!(
            out,
            "  ... and {} more {what} keys {}",
            list.len() - SHOWN,
            rest(report)
        )?;
    }
    Ok(())
}

/// Where the rest of a list shown in part is.
pub(crate) fn rest(report: bool) -> &'static str {
    if report {
        "(all in the --report file)"
    } else {
        "(give --report FILE to list them all)"
    }
}
