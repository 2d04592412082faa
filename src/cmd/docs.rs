//! `kvferry completions SHELL` and `kvferry man`: shell completions and manual pages, made from
//! the command-line definitions themselves (clap_complete, clap_mangen), so they always match.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write kvferry.1 and one page per command (kvferry-export.1, ...) into this directory
    /// instead of printing kvferry.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn completions(a: CompletionsArgs) -> anyhow::Result<i32> {
    let mut cmd = crate::cli::Cli::command();
    // Made in memory, then written: a closed stdout is then an error to report (or, for a pipe
    // closed early, success), not a panic inside the generator.
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "kvferry", &mut buf);
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()?;
    Ok(0)
}

pub fn man(a: ManArgs) -> anyhow::Result<i32> {
    let cmd = crate::cli::Cli::command();
    let Some(dir) = a.out else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        let mut out = std::io::stdout().lock();
        out.write_all(&buf)?;
        out.flush()?;
        return Ok(0);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create the directory", dir.display()))?;
    let mut written = Vec::new();
    let mut page = |name: String, c: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("{}: cannot write", path.display()))?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("kvferry-{}", sub.get_name());
        page(name.clone(), sub.clone().display_name(name.clone()).bin_name(name))?;
    }
    page("kvferry".into(), cmd)?;
    for p in &written {
        println!("{}", p.display());
    }
    Ok(0)
}
