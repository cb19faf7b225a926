//! One module per command, above the shared pieces in `common` and never importing each
//! other. Each turns its parsed arguments into calls to the libraries and prints the
//! result; `main` dispatches to them.

pub mod amend;
pub mod bench;
pub mod bitmap;
pub mod cat;
pub mod check;
pub mod commit;
pub mod compare;
pub mod convert;
pub mod create;
pub mod dd;
pub mod docs;
pub mod extract;
pub mod formats;
pub mod info;
pub mod inspect;
pub mod iso;
pub mod ls;
pub mod map;
pub mod measure;
pub mod mkdisk;
pub mod mkfs;
pub mod oci;
pub mod rebase;
pub mod resize;
pub mod snapshot;
pub mod usb;
pub mod vm;
pub mod vulndb;
pub mod wim;
pub mod write;
