//! End-to-end tests of the `diskcast` binary, judged by qemu's own tools (qemu-img,
//! qemu-io), never by diskcast alone. One binary, one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod backing;
mod check;
mod compare;
mod convert;
mod create;
mod hostile;
mod info;
mod map_measure;
mod mutants;
mod pairs;
mod safety;
