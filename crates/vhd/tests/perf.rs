//! Rough throughput against qemu-img (run with
//! `cargo test --release -p diskcast-vhd --test perf -- --ignored --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_vhd::VhdDriver;
use std::os::unix::fs::FileExt;
use std::time::Instant;

#[test]
#[ignore]
fn convert_1gib_half_filled_raw_to_dynamic() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let src = dir.path().join("src.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(1 << 30).unwrap();
    // Every other 4 MiB holds data (512 MiB in all), each 4 KiB unit tagged.
    let chunk = pattern(4 << 20, 5);
    for i in (0..256u64).step_by(2) {
        let mut c = chunk.clone();
        c[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all_at(&c, i * (4 << 20)).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let img = registry().open(&src, Some("raw"), &ctx()).unwrap();
    let out = dir.path().join("ours.vhd");
    let t = Instant::now();
    let files = OutputFiles::new();
    let w = VhdDriver.create(&out, img.size(), &CreateOptions::default(), &files).unwrap();
    copy(img.as_ref(), w.as_ref(), &CopyOptions::new(diskcast_testkit::all_cores()), &NoProgress).unwrap();
    let copied = t.elapsed();
    w.finish().unwrap();
    files.commit().unwrap();
    let ours = t.elapsed();
    println!("ours: copy {copied:?}, finish + fsync {:?}", ours - copied);
    let q = dir.path().join("qemu.vhd");
    let t = Instant::now();
    qemu_img(&["convert", "-f", "raw", "-O", "vpc", src.to_str().unwrap(), q.to_str().unwrap()]);
    run("sync", &[]);
    let theirs = t.elapsed();
    println!("ours {ours:?}, qemu-img {theirs:?}, ratio {:.2}", ours.as_secs_f64() / theirs.as_secs_f64());
    assert_qemu_compare(&src, &out);
}

fn ctx() -> diskcast_block::registry::OpenContext<'static> {
    let reg: &'static _ = Box::leak(Box::new(registry()));
    let gate: &'static _ = Box::leak(Box::new(diskcast_block::gate::Gate::new()));
    diskcast_block::registry::OpenContext::new(reg, gate)
}
