//! `diskcast completions SHELL` and `diskcast man [DIR]`: shell completion scripts and
//! man pages generated from the same clap definitions as `--help` (`main` hands over the
//! built command, so this module never imports the grammar it describes).

use crate::common::args::OutputFormat;
use crate::common::print_json;
use clap::{Args, ValueEnum};
use diskcast_block::output::OutputFiles;
use diskcast_block::{Error, Result};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// The shells `completions` writes for (clap_complete's generators).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory the pages go into (created if missing; default: the current directory).
    /// Existing pages of the same names are replaced.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The list of pages written: human text (one path a line) or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}

/// Prints the completion script for `a.shell` on standard output.
pub fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> Result<u8> {
    use clap_complete::Shell as S;
    let shell = match a.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::Powershell => S::PowerShell,
    };
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    write_stdout(&script)?;
    Ok(0)
}

/// Writes `diskcast.1` and one page per command and subcommand (`diskcast-convert.1`,
/// `diskcast-iso-create.1`, ...) into `a.dir`, each as an unnamed file put in place
/// only when all are rendered.
pub fn man(a: ManArgs, cmd: clap::Command) -> Result<u8> {
    let dir = a.dir.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create the man page directory", e).with_file(&dir))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, &mut pages);
    let date = page_date()?;
    let source = format!("diskcast {}", cmd.get_version().unwrap_or_default());
    let files = OutputFiles::new();
    let mut written = Vec::new();
    for page in pages {
        let man = clap_mangen::Man::new(page).date(&date).source(&source).manual("diskcast manual");
        let path = dir.join(man.get_filename());
        let mut text = Vec::new();
        man.render(&mut text).map_err(|e| Error::io("cannot render the man page", e).with_file(&path))?;
        // clap_mangen separates an option's help from its "Possible values:" with two line
        // breaks around a blank line; one `.sp` says the same without the empty-paragraph
        // warnings of `mandoc -Tlint`.
        let text = String::from_utf8_lossy(&text).replace("\n.br\n\n.br\n", "\n.sp\n");
        let file = files.create(&path)?;
        file.file().write_all(text.as_bytes()).map_err(|e| Error::io("cannot write", e).with_file(&path))?;
        written.push(path);
    }
    files.commit()?;
    match a.output {
        OutputFormat::Json => {
            let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
            print_json(&json!({ "pages": names }));
        }
        OutputFormat::Human => {
            let list: String = written.iter().map(|p| format!("{}\n", p.display())).collect();
            write_stdout(list.as_bytes())?;
        }
    }
    Ok(0)
}

/// The date the pages carry: the commit's when built from a clone (so the pages of one
/// commit are the same bytes), else SOURCE_DATE_EPOCH's, else today's (UTC).
fn page_date() -> Result<String> {
    let commit = env!("DISKCAST_COMMIT_DATE");
    if !commit.is_empty() {
        return Ok(commit.to_string());
    }
    let now = diskcast_block::provenance::Provenance::from_env()?.now();
    let c = diskcast_tree::Timestamp::from_secs(i64::try_from(now).unwrap_or(i64::MAX)).civil();
    Ok(format!("{:04}-{:02}-{:02}", c.year, c.month, c.day))
}

/// `cmd` and every visible subcommand below it, parents first.
fn collect(cmd: &clap::Command, pages: &mut Vec<clap::Command>) {
    pages.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, pages);
    }
}

/// Standard output; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("cannot write to standard output", e)),
        _ => Ok(()),
    }
}
