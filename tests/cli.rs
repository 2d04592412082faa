//! The `inspect`, `cat` and `check` commands as an operator runs them: output, filters, exit
//! codes (0 ok, 1 damage found, 2 error).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kvferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvferry")).args(args).output().unwrap()
}

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cat_filters_by_key_prefix_and_shard() {
    let all = fixture("good/all-types");
    let o = kvferry(&["cat", &all, "--key", "multi"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 2, "both types of the multi-type key");
    assert!(text.lines().all(|l| l.contains("\"key\":\"multi\"")));
    let o = kvferry(&["cat", &all, "--prefix", "stream:"]);
    assert_eq!(stdout(&o).lines().count(), 2);
    let o = kvferry(&["cat", &all, "--shard", "src0-db3"]);
    assert_eq!(stdout(&o).lines().count(), 1);
    assert!(stdout(&o).contains("\"key\":\"other-db\""));
    let o = kvferry(&["cat", &all, "--shard", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no shard \"nope\"; the snapshot has: src0-db0, src0-db3"));
}

#[test]
fn cat_of_a_binary_key_from_the_shell() {
    use std::os::unix::ffi::OsStrExt;
    // The key is \xff \0 "bin"; an argument cannot hold NUL, so select by the byte before it.
    let prefix = std::ffi::OsStr::from_bytes(b"\xff");
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .arg("cat")
        .arg(fixture("good/all-types"))
        .arg("--prefix")
        .arg(prefix)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("\"key\":{\"base64\":\"/wBiaW4=\"}"),
        "{}",
        stdout(&o)
    );
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn cat_of_one_file() {
    let o = kvferry(&["cat", &fixture("good/parts/src0-db0.0001.kvf")]);
    assert!(o.status.success());
    assert!(stdout(&o).lines().count() >= 1);
}

/// `kvferry cat | head`, `check --json | head -1`, `inspect --json | head -1`: a reader that
/// goes away is success, not "Broken pipe" and exit 2 (issue 12).
#[test]
fn output_into_a_closed_pipe_exits_zero() {
    for args in [
        vec!["cat", "good/parts"],
        vec!["check", "good/all-types", "--json"],
        vec!["inspect", "good/all-types", "--json"],
    ] {
        // The pipe's reading end is closed before the command starts: its first write fails.
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
            .arg(args[0])
            .arg(fixture(args[1]))
            .args(&args[2..])
            .stdout(w)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn inspect_json_summarises_the_snapshot() {
    let o = kvferry(&["inspect", "--json", &fixture("good/all-types")]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["complete"], true);
    assert_eq!(v["totals"]["keys"], 14);
    assert_eq!(v["totals"]["keys_by_type"]["string"], 6);
    assert_eq!(v["per_db"]["3"]["keys"], 1);
    assert_eq!(v["expiry"]["expiring_keys"], 3);
    assert_eq!(v["biggest_keys"][0]["key"], "zset:scores");
    assert_eq!(v["biggest_keys"].as_array().unwrap().len(), 10);
    assert!(v["totals"]["compression_ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn inspect_says_when_a_snapshot_is_incomplete() {
    let o = kvferry(&["inspect", &fixture("corrupt/no-manifest")]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("complete   NO"), "{}", stdout(&o));
    let o = kvferry(&["inspect", "--json", &fixture("corrupt/no-manifest")]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["complete"], false);
    assert_eq!(v["totals"]["keys"], 1);
}

#[test]
fn check_exit_codes() {
    assert_eq!(kvferry(&["check", &fixture("good/parts")]).status.code(), Some(0));
    assert_eq!(
        kvferry(&["check", &fixture("corrupt/missing-part")]).status.code(),
        Some(1)
    );
    assert_eq!(
        kvferry(&["check", &fixture("good/parts/src0-db0.0000.kvf")])
            .status
            .code(),
        Some(0)
    );
    // A newer format is not damage: exit 2, and a newer kvferry is what helps (issue 11).
    for newer in ["corrupt/newer-major", "corrupt/newer-major-manifest"] {
        let o = kvferry(&["check", &fixture(newer)]);
        assert_eq!(o.status.code(), Some(2), "{newer}");
        assert!(stdout(&o).contains("use a newer kvferry"), "{}", stdout(&o));
    }
    let o = kvferry(&["check", "/nonexistent/snapshot"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "kvferry: error: /nonexistent/snapshot: no such file or directory\n"
    );
}

#[test]
fn check_json_report_names_files_and_blocks() {
    let o = kvferry(&["check", "--json", &fixture("corrupt/flipped-byte")]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &v["files"][0];
    assert_eq!(f["bad_blocks"], serde_json::json!([1]));
    assert!(PathBuf::from(f["file"].as_str().unwrap()).ends_with("src0-db0.0000.kvf"));
    assert_eq!(f["shard"], "src0-db0");
}

#[test]
fn help_has_examples() {
    for cmd in ["export", "import", "verify", "migrate", "inspect", "cat", "check"] {
        let o = kvferry(&[cmd, "--help"]);
        assert!(o.status.success());
        assert!(stdout(&o).contains("Examples:"), "{cmd} --help");
    }
    // The top level: examples, the shared words, and what each exit code means.
    let o = kvferry(&["--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    for says in [
        "Examples:",
        "kvferry migrate --source",
        "--parallel N",
        "130  interrupted",
        "1    done, with problems",
    ] {
        assert!(help.contains(says), "{says}: {help}");
    }
}

/// One vocabulary: the same option names and placeholders in every command (`--parallel N` for
/// shards at once, `--connections N` per shard, `--source URL`, `--report FILE`,
/// `--progress MODE`), and no placeholder made from a field name.
#[test]
fn every_command_speaks_the_same_words() {
    let shared: [(&str, &[&str]); 8] = [
        ("--parallel <N>", &["export", "import", "verify", "migrate", "check"]),
        ("--connections <N>", &["export", "import", "verify", "migrate"]),
        ("--report <FILE>", &["export", "import", "verify", "migrate"]),
        ("--progress <MODE>", &["export", "import", "verify", "migrate"]),
        ("--max-ops-per-sec <N>", &["export", "import", "verify", "migrate"]),
        ("--read-timeout <DURATION>", &["export", "import", "verify", "migrate"]),
        ("--max-latency-ms <MS>", &["export", "import", "verify", "migrate"]),
        ("--metrics-addr <HOST:PORT>", &["export", "import", "verify", "migrate"]),
    ];
    for (option, cmds) in shared {
        for cmd in cmds {
            let help = stdout(&kvferry(&[cmd, "--help"]));
            assert!(help.contains(option), "{cmd} --help lacks {option}");
        }
    }
    for cmd in ["export", "import", "verify", "migrate", "inspect", "cat", "check"] {
        let help = stdout(&kvferry(&[cmd, "--help"]));
        for bad in [
            "<SOURCES>",
            "<OUT>",
            "<PARALLEL>",
            "<READERS>",
            "<THREADS>",
            "<CONNECTIONS>",
            "<REPORT>",
            "<PROGRESS>",
            "<MULTI_TYPE>",
            "<CONFLICT>",
        ] {
            assert!(!help.contains(bad), "{cmd} --help shows {bad}");
        }
    }
    // The --multi-type default is the same wherever it appears.
    for cmd in ["import", "verify", "migrate"] {
        let help = stdout(&kvferry(&[cmd, "--help"]));
        assert!(help.contains("[default: fail]"), "{cmd}: {help}");
    }
}

/// Argument errors are kvferry's errors: `kvferry: error: ...`, exit 2; the old names still work.
#[test]
fn argument_errors_say_kvferry_and_old_names_still_parse() {
    let o = kvferry(&["export", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("kvferry: error: unexpected argument '--bogus'"),
        "{err}"
    );
    let o = kvferry(&["check", "fixtures/good/all-types", "--threads", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let o = kvferry(&["check", "fixtures/good/all-types", "--parallel", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("kvferry: error: invalid value '0'"));
}

/// A rate of 0 or below is refused by every command that takes one, naming the value, before
/// anything connects (issue 11: 0 ran unthrottled, -5 was "an unexpected argument").
#[test]
fn a_rate_limit_must_be_positive() {
    for cmd in [
        &["export", "--source", "redis://127.0.0.1:1", "--out", "/nonexistent/x"][..],
        &["import", "fixtures/good/all-types", "--target", "redis://127.0.0.1:1"],
        &["verify", "fixtures/good/all-types", "--target", "redis://127.0.0.1:1"],
    ] {
        for (rate, says) in [("0", "0 is not in 1.."), ("-5", "invalid value '-5'")] {
            let o = kvferry(&[cmd, &["--max-ops-per-sec", rate]].concat());
            assert_eq!(o.status.code(), Some(2), "{cmd:?} {rate}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(says) && err.contains("--max-ops-per-sec"),
                "{cmd:?} {rate}: {err}"
            );
        }
    }
}

/// An unwritable `--report` is refused before any work, naming the file (issue 11: it was found
/// after the whole run).
#[test]
fn an_unwritable_report_is_refused_first() {
    for cmd in [
        &["export", "--source", "redis://127.0.0.1:1", "--out", "/nonexistent/x"][..],
        &["import", "fixtures/good/all-types", "--target", "redis://127.0.0.1:1"],
        &["verify", "fixtures/good/all-types", "--target", "redis://127.0.0.1:1"],
    ] {
        let o = kvferry(&[cmd, &["--report", "/nonexistent/dir/r.json"]].concat());
        assert_eq!(o.status.code(), Some(2), "{cmd:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--report /nonexistent/dir/r.json: cannot write the file")
                && !err.contains("connection refused"),
            "{cmd:?}: {err}"
        );
    }
}

/// A missing path, a file, and an empty directory are each one clear line and exit 2
/// (issue 11: "is not a directory" for a missing one, exit 0 for an empty one).
#[test]
fn snapshot_paths_that_are_not_snapshots() {
    let empty = tempfile::tempdir().unwrap();
    let empty = empty.path().to_str().unwrap();
    for (path, says) in [
        ("/nonexistent/snap", "/nonexistent/snap: no such directory"),
        (
            "Cargo.toml",
            "Cargo.toml: not a directory: a snapshot is a directory holding MANIFEST.json",
        ),
    ] {
        // (cat of a file reads it as a shard file: another error, tested with the fixtures.)
        let cat = [&["cat", path][..]];
        let others = [
            &["inspect", path][..],
            &["import", path, "--resp", "-"],
            &["verify", path, "--target", "redis://127.0.0.1:1"],
        ];
        for cmd in others.iter().chain(cat.iter().filter(|_| path != "Cargo.toml")) {
            let o = kvferry(cmd);
            assert_eq!(o.status.code(), Some(2), "{cmd:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.starts_with(&format!("kvferry: error: {says}")) && err.lines().count() == 1,
                "{cmd:?}: {err}"
            );
        }
    }
    let o = kvferry(&["inspect", empty]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a kvferry snapshot"));
}

/// Shell completions and manual pages come from the command-line definitions: every command
/// and option is in them, the bash script parses, and a closed pipe is no panic.
#[test]
fn completions_and_man_pages() {
    let o = kvferry(&["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    let script = stdout(&o);
    for word in [
        "migrate",
        "verify",
        "--parallel",
        "--connections",
        "--source-connections",
    ] {
        assert!(script.contains(word), "{word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvferry.bash");
    std::fs::write(&path, &script).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    for shell in ["zsh", "fish"] {
        assert!(stdout(&kvferry(&["completions", shell])).contains("migrate"), "{shell}");
    }
    let (r, w) = std::io::pipe().unwrap();
    drop(r);
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .args(["completions", "bash"])
        .stdout(w)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // One page on stdout, or one per command into a directory.
    let page = stdout(&kvferry(&["man"]));
    assert!(page.contains(".TH kvferry 1") && page.contains("migrate"), "{page}");
    let man = dir.path().join("man1");
    let o = kvferry(&["man", "--out", man.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    for cmd in ["export", "import", "verify", "migrate", "inspect", "cat", "check"] {
        let p = std::fs::read_to_string(man.join(format!("kvferry-{cmd}.1"))).unwrap();
        assert!(
            p.contains(&format!(".TH kvferry-{cmd} 1")) && p.contains("Examples:"),
            "{cmd}: {p}"
        );
    }
}
