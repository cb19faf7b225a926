//! The `diskcast` command: argument parsing, output and exit codes. All format and copy
//! logic lives in the library crates.
#![forbid(unsafe_code)]

mod args;
mod cmd;
mod progress;

use clap::{CommandFactory, FromArgMatches};
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
    match cmd::run(cli.command) {
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

/// Parses the command line; the top-level help lists every format and filesystem the
/// registries have.
fn parse() -> Result<args::Cli, clap::Error> {
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
    let matches = args::Cli::command().after_help(help).try_get_matches()?;
    args::Cli::from_arg_matches(&matches)
}

/// An error and the exit status it maps to (1 for most commands, 2 for `compare`).
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub exit_code: u8,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure { error, exit_code: 1 }
    }
}

/// The error and its causes, `outer: inner: innermost`.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
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
