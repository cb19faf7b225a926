//! `diskcast vulndb update DIR`: osv.dev's advisory zips fetched into DIR for
//! `inspect --vuln-db DIR` (crates/vulns/src/update.rs).

use crate::common::args::{OutputFormat, ProgressArgs, TlsArgs};
use crate::common::output::interrupt_flag;
use crate::common::print_json;
use clap::{Args, Subcommand};
use diskcast_block::Result;
use diskcast_vulns::update::{DEFAULT_BASE_URL, Status, UpdateOptions, check_ecosystem, update};
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum VulndbCommand {
    /// Fetch osv.dev's advisory database (all.zip, or one zip per --ecosystem) into DIR,
    /// only when it changed.
    #[command(after_help = "\
DIR gets osv.dev's layout: DIR/all.zip (every ecosystem, the default) or DIR/ECOSYSTEM/all.zip
for each --ecosystem (Debian, Ubuntu, Alpine, Red Hat, Rocky Linux, PyPI, npm, Go,
crates.io, Maven, RubyGems, Packagist...; osv.dev's directory names). `inspect --vuln-db
DIR` reads every zip there.

Each zip is downloaded beside its target as an unnamed file, opened as a zip, and only
then put in place: an error, a cut download, a server error or Ctrl-C leaves the database
that was there. The server's ETag and Last-Modified are kept in all.zip.headers and sent
back, so an unchanged database is not downloaded again (`unchanged`). Transport errors,
timeouts and 5xx answers are tried three times.

Examples:
  diskcast vulndb update osv/                                  # the whole database
  diskcast vulndb update osv/ --ecosystem Debian --ecosystem PyPI
  diskcast vulndb update osv/ --ecosystem Alpine --output json | jq -r '.databases[].status'
  diskcast vulndb update osv/ --url http://mirror.internal/osv/ --ecosystem Debian
  diskcast inspect --vuln-db osv/ --fail-on high disk.qcow2")]
    Update(UpdateArgs),
}

/// `diskcast vulndb update` arguments.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The database directory (made when missing).
    pub dir: PathBuf,
    /// Fetch this ecosystem's zip (DIR/ECOSYSTEM/all.zip); repeat for more. Without it,
    /// osv.dev's whole-database all.zip (DIR/all.zip).
    #[arg(long = "ecosystem", value_name = "ECOSYSTEM")]
    pub ecosystems: Vec<String>,
    /// The bucket to fetch from: URL/all.zip and URL/ECOSYSTEM/all.zip (a mirror).
    #[arg(long, value_name = "URL", default_value = DEFAULT_BASE_URL)]
    pub url: String,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub progress: ProgressArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

pub fn run(c: VulndbCommand) -> Result<u8> {
    match c {
        VulndbCommand::Update(a) => run_update(a),
    }
}

fn run_update(a: UpdateArgs) -> Result<u8> {
    // Every name is checked before anything is fetched.
    for e in &a.ecosystems {
        check_ecosystem(e)?;
    }
    diskcast_vulns::update::database_url(&a.url, None)?;
    let http = diskcast_http::HttpOptions { tls_verify: a.tls.tls_verify, ..Default::default() };
    let opts = UpdateOptions { base_url: a.url.clone(), cancel: Some(interrupt_flag()?), http };
    let wanted: Vec<Option<&str>> =
        if a.ecosystems.is_empty() { vec![None] } else { a.ecosystems.iter().map(|e| Some(e.as_str())).collect() };
    let mut done = Vec::new();
    for e in wanted {
        let progress = a.progress.reporter();
        let f = update(&a.dir, e, &opts, progress.as_ref())?;
        if a.output == OutputFormat::Human {
            let name = f.ecosystem.as_deref().unwrap_or("all ecosystems");
            match f.status {
                Status::Updated => println!(
                    "{name}: updated, {} bytes, {} files -> {}",
                    f.bytes,
                    f.members.unwrap_or(0),
                    f.path.display()
                ),
                Status::Unchanged => println!("{name}: unchanged ({})", f.path.display()),
            }
        }
        done.push(f);
    }
    if a.output == OutputFormat::Json {
        print_json(&json!({ "dir": a.dir.display().to_string(), "databases": done }));
    }
    Ok(0)
}
