//! Ctrl-C and SIGTERM (issue 11): the first asks the running command to stop cleanly (write
//! its checkpoint, say what was done and how to resume, exit with [`EXIT_INTERRUPTED`]); a
//! second one stops the process at once.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// The exit code of a command stopped by Ctrl-C or SIGTERM: 128 + SIGINT, as shells report it.
pub const EXIT_INTERRUPTED: i32 = 130;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The running command stops cleanly on Ctrl-C (export, import); the others stop at once.
static CLEAN: AtomicBool = AtomicBool::new(false);

/// Says that the running command checks [`interrupted`] and stops cleanly.
pub fn stops_cleanly() {
    CLEAN.store(true, Relaxed);
}

/// Installs the handler. Called once by the binary; a library user keeps its own.
pub fn install() {
    let installed = ctrlc::set_handler(|| {
        if !CLEAN.load(Relaxed) {
            crate::note!("kvferry: interrupted");
            std::process::exit(EXIT_INTERRUPTED);
        }
        if INTERRUPTED.swap(true, Relaxed) {
            crate::note!("kvferry: interrupted again: stopping at once (the last checkpoint stands)");
            std::process::exit(EXIT_INTERRUPTED);
        }
        crate::note!(
            "kvferry: interrupted: stopping after the current page, with a checkpoint (Ctrl-C again stops at once)"
        );
    });
    if let Err(e) = installed {
        crate::note!("kvferry: warning: Ctrl-C will stop at once, without a checkpoint: {e}");
    }
}

/// True once Ctrl-C or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Relaxed)
}

/// The error a command stops with when interrupted.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The command line that continues this run: the same arguments with `--resume` added when it
/// is not there, and secrets left out: passwords in URLs and literal namespace tokens become
/// `PASSWORD` and `TOKEN`, for the operator to fill in (secrets never show).
pub fn resume_command() -> String {
    let args: Vec<String> = std::env::args().collect();
    resume_of(&args)
}

fn resume_of(args: &[String]) -> String {
    let mut out = Vec::new();
    let mut tokens_next = false;
    for a in args {
        let a = if tokens_next || a.starts_with("--namespace-map=") {
            hide_tokens(a)
        } else if let Some((scheme, rest)) = a.split_once("://") {
            match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://:PASSWORD@{host}"),
                None => a.clone(),
            }
        } else {
            a.clone()
        };
        tokens_next = a == "--namespace-map";
        out.push(shell_quote(&a));
    }
    if !args.iter().any(|a| a == "--resume") {
        out.push("--resume".into());
    }
    out.join(" ")
}

/// `DB=TOKEN,...` with each literal token replaced (`env:` and `file:` ones are not secrets).
fn hide_tokens(a: &str) -> String {
    let (flag, list) = a
        .split_once("--namespace-map=")
        .map_or(("", a), |(_, l)| ("--namespace-map=", l));
    let hidden: Vec<String> = list
        .split(',')
        .map(|pair| match pair.split_once('=') {
            Some((db, t)) if !t.starts_with("env:") && !t.starts_with("file:") => format!("{db}=TOKEN"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{flag}{}", hidden.join(","))
}

/// `a` quoted for a POSIX shell when it needs it.
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_command_hides_secrets() {
        let args: Vec<String> = [
            "kvferry",
            "import",
            "snap dir",
            "--target",
            "redis://:s3cret@h:1",
            "--namespace-map",
            "0=tok1,1=env:T",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = resume_of(&args);
        assert_eq!(
            c,
            "kvferry import 'snap dir' --target redis://:PASSWORD@h:1 --namespace-map 0=TOKEN,1=env:T --resume"
        );
        let again = resume_of(&[args, vec!["--resume".into()]].concat());
        assert!(
            again.ends_with("--resume") && !again.ends_with("--resume --resume"),
            "{again}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("redis://h:1"), "redis://h:1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
