//! `diskcast cat`: one file of a tree on standard output.

use crate::common::args::SourceArgs;
use crate::common::{threads, tree_source};
use clap::Args;
use diskcast_block::{Error, Result};
use diskcast_tree::display_name;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The source: directory, tar, or disk image (DISK, DISK:PART by partition number, name
    /// or type, DISK:VG/LV for an LVM logical volume).
    pub src: String,
    /// The file inside the tree. Symlinks are followed inside the tree, never out of it.
    pub path: OsString,
}

pub fn run(a: CatArgs) -> Result<u8> {
    let opened = tree_source::open(&a.src, &a.source, threads(None)?)?;
    let tree = &opened.tree;
    let path = a.path.as_bytes();
    let id = tree.resolve(path, true).map_err(|e| Error::from(e).with_file(&a.src))?;
    let node = tree.node(id);
    let Some(f) = node.as_file() else {
        return Err(Error::argument(format!("{} is a {}, not a regular file", display_name(path), node.kind.name()))
            .with_file(&a.src));
    };
    let mut r = f.reader()?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut r, &mut out).map_err(|e| match e.into_inner() {
        Some(inner) => match inner.downcast::<Error>() {
            Ok(err) => *err,
            Err(other) => Error::io("cannot copy", std::io::Error::other(other)),
        },
        None => Error::io("cannot write to standard output", std::io::Error::other("write failed")),
    })?;
    Ok(0)
}
