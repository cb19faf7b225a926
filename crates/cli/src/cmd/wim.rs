//! `diskcast wim split`: a Windows WIM into `.swm` parts Windows Setup reads, each small
//! enough for FAT32 (or a size given), resources copied as they are (crates/wim).

use crate::common::args::OutputFormat;
use crate::common::print_json;
use clap::{Args, Subcommand};
use diskcast_block::Result;
use diskcast_block::output::parent_dir;
use diskcast_block::size::parse_size;
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum WimCommand {
    /// Split a WIM into install.swm, install2.swm, ... (Windows Setup takes them in
    /// place of install.wim, on FAT32 sticks whose files stop at 4 GiB).
    #[command(after_help = "\
Each part is at most SIZE bytes, header, blob table and XML included (default 4G-1, the
largest file FAT32 holds). Resources are copied as they are, never recompressed; every
image's metadata goes into the first part, as wimlib does. Parts share the WIM's GUID, so
`wimlib-imagex join` gives back the original WIM. Solid (LZMS, install.esd) WIMs are split
between solid resources; one bigger than SIZE is an error. The parts are written as
unnamed files and linked into place at the end; existing parts of the same names are
replaced. The integrity table is not kept.

Examples:
  diskcast wim split sources/install.wim                 # sources/install.swm, install2.swm, ...
  diskcast wim split install.wim -o /mnt/stick/sources --size 1G
  diskcast wim split install.wim -o parts --output json | jq -r '.parts[]'")]
    Split(SplitArgs),
}

/// `diskcast wim split` arguments.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The WIM file.
    pub wim: PathBuf,
    /// Directory the parts go into (default: the WIM's own).
    #[arg(short = 'o', long = "out", alias = "out-dir", value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Largest part, in bytes or with K, M, G suffixes (default 4G-1: FAT32's largest file).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}

pub fn run(c: WimCommand) -> Result<u8> {
    match c {
        WimCommand::Split(a) => split(a),
    }
}

fn split(a: SplitArgs) -> Result<u8> {
    let limit = a.size.as_deref().map(parse_size).transpose()?.unwrap_or(diskcast_wim::FAT32_PART_LIMIT);
    let dir = a.out_dir.clone().unwrap_or_else(|| parent_dir(&a.wim).to_path_buf());
    let parts = diskcast_wim::split_file(&a.wim, &dir, limit)?;
    match a.output {
        OutputFormat::Json => {
            let names: Vec<String> = parts.iter().map(|p| p.display().to_string()).collect();
            print_json(&json!({ "parts": names }));
        }
        OutputFormat::Human => {
            for p in &parts {
                println!("{}", p.display());
            }
        }
    }
    Ok(0)
}
