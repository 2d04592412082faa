//! The `kvferry` binary: turns the result of [`kvferry::cli::run`] into an exit code.
//! 0 done, 1 done with problems listed by name (failed keys, differences, damage), 2 error,
//! 130 interrupted (`kvferry --help` says it in full).

fn main() {
    // Snapshots, manifests, checkpoints, reports and RESP files hold production data: every file
    // kvferry creates is 0600 and every directory 0700, whatever the umask was (issue 11).
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    kvferry::interrupt::install();
    let code = match kvferry::cli::run() {
        Ok(code) => {
            kvferry::progress::print_result(code, None);
            code
        }
        // `kvferry cat ... | head` closes the pipe early: that is success, not an error.
        Err(e) if kvferry::cli::is_broken_pipe(&e) => 0,
        Err(e) => {
            // Under --progress json the error is the result line's, so stderr stays JSON.
            if kvferry::progress::json_lines() {
                kvferry::progress::print_result(2, Some(&format!("{e:#}")));
            } else {
                eprintln!("kvferry: error: {e:#}");
            }
            2
        }
    };
    std::process::exit(code);
}
