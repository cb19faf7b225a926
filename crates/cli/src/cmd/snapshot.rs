//! `diskcast snapshot`: an image's internal snapshots listed, created, applied or
//! deleted in place, with qemu-img snapshot's flags, table, messages and exit codes.
//! The format's driver does the work; formats without internal snapshots list none and
//! refuse the rest, as qemu-img does.

use crate::common::args::{OpenArgs, OutputFormat, ShareArgs};
use crate::common::{Images, image_and_format, open_to_change, print_json, snapshot_json, snapshot_table};
use clap::Args;
use diskcast_block::registry::SnapshotOp;
use diskcast_block::source::open_file;
use diskcast_block::{Error, Result};
use std::path::PathBuf;

pub fn run(a: SnapshotArgs) -> Result<u8> {
    let (path, format) = image_and_format(&a.file, a.image_opts, a.format.as_ref())?;
    let op = a.op()?;
    let Some(op) = op else {
        // -l: read, locked as qemu-img reads (-U shares).
        let images = Images::new(&OpenArgs { share: a.share, ..OpenArgs::default() })?;
        images.locks.lock(&path)?;
        crate::common::refuse_stream(&path)?;
        let driver = images.driver(&path, format.as_deref())?;
        let snaps = driver.snapshots(open_file(&path)?)?;
        match a.output {
            OutputFormat::Json => print_json(&snaps.iter().map(snapshot_json).collect::<Vec<_>>().into()),
            OutputFormat::Human => print!("{}", snapshot_table(&snaps)),
        }
        return Ok(0);
    };
    if a.share.force_share {
        return Err(Error::argument("-U (force share) only reads; -c, -a and -d write the image"));
    }
    // Locked as qemu-img snapshot locks it: a VM or qemu-io using the image is refused.
    let (file, images) = open_to_change(&path)?;
    let driver = images.driver(&path, format.as_deref())?;
    let what = match &op {
        SnapshotOp::Create(n) => format!("create snapshot '{n}'"),
        SnapshotOp::Apply(n) => format!("apply snapshot '{n}'"),
        SnapshotOp::Delete(n) => format!("delete snapshot '{n}'"),
    };
    driver
        .snapshot(&file, &op)
        .map_err(|e| Error::new(e.kind(), format!("Could not {what}: {}", e.message())).with_file(&path))?;
    Ok(0)
}

/// `diskcast snapshot` arguments, as qemu-img snapshot takes them.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// FILE is qemu's option string `driver=FMT,file.filename=PATH` (plain forms only).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// List the snapshots (the default): qemu-img's table, or with --output json the
    /// list `qemu-img info --output=json` shows under "snapshots".
    #[arg(short = 'l', long = "list")]
    pub list: bool,
    /// Create a snapshot of the image as it is now, named NAME (IDs are assigned as qemu does).
    #[arg(short = 'c', long = "create", value_name = "NAME")]
    pub create: Option<String>,
    /// Revert the image to the snapshot with this ID or name (what was written since is lost).
    #[arg(short = 'a', long = "apply", value_name = "SNAPSHOT")]
    pub apply: Option<String>,
    /// Delete the snapshot named NAME, freeing the clusters only it used.
    #[arg(short = 'd', long = "delete", value_name = "NAME")]
    pub delete: Option<String>,
    /// Print nothing on success (accepted; -c, -a and -d print nothing anyway).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    #[command(flatten)]
    pub share: ShareArgs,
    /// Report format of -l: human (qemu-img's table) or json.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// The image.
    pub file: PathBuf,
}

impl SnapshotArgs {
    /// The change asked for, or `None` to list; more than one is qemu-img's error.
    fn op(&self) -> Result<Option<SnapshotOp>> {
        let ops = [
            self.create.clone().map(SnapshotOp::Create),
            self.apply.clone().map(SnapshotOp::Apply),
            self.delete.clone().map(SnapshotOp::Delete),
        ];
        let given = ops.iter().flatten().count() + usize::from(self.list);
        if given > 1 {
            return Err(Error::argument("Cannot mix '-l', '-a', '-c', '-d'"));
        }
        Ok(ops.into_iter().flatten().next())
    }
}
