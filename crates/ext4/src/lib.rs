//! ext4: a writer that plans a whole filesystem from a tree (for `diskcast mkfs ext4` and
//! `mkdisk`), and a reader of ext2/3/4 on any virtual disk.
//!
//! The layout follows the kernel's "ext4 Data Structures and Algorithms"
//! (<https://www.kernel.org/doc/html/latest/filesystems/ext4/>); docs/ext4.md says what
//! we write and read, and why we wrote our own.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::as_conversions))]

mod journal;
#[allow(dead_code)] // constants kept for the features we name in errors and docs
mod layout;
mod reader;
mod writer;

pub use reader::Ext4Reader;
pub use writer::Ext4Builder;
