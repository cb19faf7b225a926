//! Host directories and the tree model: [`read_dir`] turns a directory into a
//! [`diskcast_tree::Tree`] (lstat only, symlinks never followed, content as references
//! to the host files), and [`extract`] writes a tree into a directory without ever
//! leaving it, whatever names and links the tree holds.
#![forbid(unsafe_code)]

mod dir;
mod extract;
mod undo;

pub use dir::{DirOptions, read_dir};
pub use extract::{ExtractOptions, ExtractReport, RaceHook, RaceStep, StagedFile, Staging, Target, extract};
