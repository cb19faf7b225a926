//! The `diskcast` command: argument parsing, output and exit codes. All format and copy
//! logic lives in the library crates.
//!
//! Layers, each importing only those below it: `main` (dispatch) and [`args`] (the
//! grammar), then [`cmd`] (one module per command; commands never import each other), then
//! [`common`] (argument groups, opening images, the thread budget, progress, the one
//! output path, tree sources).
#![forbid(unsafe_code)]

mod args;
mod cmd;
mod common;

use args::Command;
use clap::{CommandFactory, FromArgMatches};
use cmd::*;
use common::Failure;
use diskcast_block::{Error, ErrorKind};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1, as qemu-img's do (2 means "corruptions" to `check`).
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            if is_broken_pipe(&failure.error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("diskcast: {}", chain(&failure.error));
            ExitCode::from(failure.exit_code)
        }
    }
}

/// Runs a command; `Ok` carries the exit status.
fn run(command: Command) -> Result<u8, Failure> {
    match command {
        Command::Info(a) => info::run(a).map_err(Failure::from),
        Command::Convert(a) => convert::run(a).map_err(Failure::from),
        Command::Compare(a) => compare::run(a).map_err(|error| Failure { error, exit_code: 2 }),
        Command::Check(a) => check::run(a),
        Command::Map(a) => map::run(a).map_err(Failure::from),
        Command::Create(a) => create::run(a).map_err(Failure::from),
        Command::Measure(a) => measure::run(a).map_err(Failure::from),
        Command::Formats(a) => formats::run(a).map_err(Failure::from),
        Command::Iso(c) => iso::run(c).map_err(Failure::from),
        Command::Ls(a) => ls::run(a).map_err(Failure::from),
        Command::Cat(a) => cat::run(a).map_err(Failure::from),
        Command::Extract(a) => extract::run(a).map_err(Failure::from),
        Command::Inspect(a) => inspect::run(a).map_err(Failure::from),
        Command::Oci(c) => oci::run(c).map_err(Failure::from),
        Command::Mkfs(a) => mkfs::run(a).map_err(Failure::from),
        Command::Mkdisk(a) => mkdisk::run(a).map_err(Failure::from),
        Command::Vm(a) => vm::run(a).map_err(Failure::from),
        Command::Vulndb(c) => vulndb::run(c).map_err(Failure::from),
        Command::Wim(c) => wim::run(c).map_err(Failure::from),
        Command::Write(a) => write::run(a).map_err(Failure::from),
        Command::Resize(a) => resize::run(a).map_err(Failure::from),
        Command::Rebase(a) => rebase::run(a).map_err(Failure::from),
        Command::Commit(a) => commit::run(a).map_err(Failure::from),
        Command::Amend(a) => amend::run(a).map_err(Failure::from),
        Command::Bitmap(a) => bitmap::run(a).map_err(Failure::from),
        Command::Snapshot(a) => snapshot::run(a).map_err(Failure::from),
        Command::Dd(a) => dd::run(a).map_err(Failure::from),
        Command::Bench(a) => bench::run(a).map_err(Failure::from),
        Command::Usb(a) => usb::run(a).map_err(Failure::from),
        Command::Completions(a) => docs::completions(a, grammar()).map_err(Failure::from),
        Command::Man(a) => docs::man(a, grammar()).map_err(Failure::from),
    }
}

/// Parses the command line.
fn parse() -> Result<args::Cli, clap::Error> {
    let matches = grammar().try_get_matches()?;
    args::Cli::from_arg_matches(&matches)
}

/// The whole grammar, as `--help`, the completions and the man pages show it: the
/// top-level help lists every format and filesystem the registries have.
fn grammar() -> clap::Command {
    let registry = diskcast_formats::registry();
    let formats: Vec<String> = registry
        .drivers()
        .map(|d| match d.aliases() {
            [] => d.name().to_string(),
            aliases => format!("{} (also {})", d.name(), aliases.join(", ")),
        })
        .collect();
    let filesystems = diskcast_formats::filesystems();
    let filesystems: Vec<&str> = filesystems.iter().map(|f| f.name).collect();
    let help = format!(
        "{}\n\nFormats: {}; `diskcast formats` lists their -o options.\n\
         Filesystems: {}; `diskcast formats` says which diskcast reads and writes.\n\
         Errors, usage errors included, exit with status 1 (compare and check have their own codes).",
        args::EXAMPLES,
        formats.join(", "),
        filesystems.join(", ")
    );
    args::Cli::command().after_help(help)
}

/// The error and its causes, `outer: inner: innermost`; a cause whose text the chain
/// already holds (a message made with `format!("..: {e}")` that also keeps `e` as its
/// source) is printed once, not as `x: y: y`.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let cause = s.to_string();
        if !cause.is_empty() && !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

/// A reader of our standard output went away (`diskcast convert x - | head`): not an error.
fn is_broken_pipe(e: &Error) -> bool {
    e.kind() == ErrorKind::Io
        && std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
