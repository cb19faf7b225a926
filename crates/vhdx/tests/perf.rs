//! Writing a 1 GiB half-filled raw disk to dynamic VHDX, ours vs `qemu-img convert -O vhdx`.
//! Run with `cargo test --release -p diskcast-vhdx --test perf -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_vhdx::VhdxDriver;
use std::time::Instant;

#[test]
#[ignore]
fn convert_1gib_half_filled() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", src.to_str().unwrap(), "1G"]);
    // Every other 8 MiB holds data: 512 MiB in all.
    let cmds: Vec<String> = (0..64).map(|i| format!("write -P {} {}M 8M", i + 1, i * 16)).collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io_fmt("raw", &src, &refs);
    let img = open_raw(&src);
    let out = dir.path().join("ours.vhdx");
    let files = OutputFiles::new();
    let t = Instant::now();
    let w = VhdxDriver.create(&out, img.size(), &CreateOptions::default(), &files).unwrap();
    copy(img.as_ref(), w.as_ref(), &CopyOptions::new(diskcast_testkit::all_cores()), &NoProgress).unwrap();
    w.finish().unwrap();
    let before_sync = t.elapsed();
    files.commit().unwrap();
    let ours = t.elapsed();
    println!("ours before the final fsync: {before_sync:?}");
    let q = dir.path().join("qemu.vhdx");
    let t = Instant::now();
    qemu_img(&["convert", "-O", "vhdx", src.to_str().unwrap(), q.to_str().unwrap()]);
    let theirs = t.elapsed();
    let t = Instant::now();
    std::fs::File::open(&q).unwrap().sync_all().unwrap();
    println!("qemu-img output fsync afterwards: {:?}", t.elapsed());
    println!(
        "ours: {ours:?}, qemu-img: {theirs:?}, ratio ours/qemu = {:.2}",
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    assert_qemu_compare(&src, "raw", &out, "vhdx");
    assert_qemu_check_clean(&out);
}
