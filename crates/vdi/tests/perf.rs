//! Throughput against qemu-img (run in release with `--ignored --nocapture`):
//! a 1 GiB raw disk, half of it data, converted to a dynamic VDI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::Driver;
use diskcast_vdi::VdiDriver;
use std::time::Instant;

#[test]
#[ignore]
fn convert_1gib_half_filled_raw_to_dynamic() {
    let dir = tempfile::tempdir_in(std::env::var("PERF_DIR").unwrap_or_else(|_| "/var/tmp".into())).unwrap();
    let src = dir.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", src.to_str().unwrap(), "1G"]);
    // 32 runs of 16 MiB data, each followed by a 16 MiB hole.
    let cmds: Vec<String> = (0..32).map(|i| format!("write -P {} {}M 16M", i + 1, i * 32)).collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io("raw", &src, &refs);
    run("sync", &[]);
    let mut ours_best = f64::MAX;
    let mut qemu_best = f64::MAX;
    for round in 0..4 {
        let q = dir.path().join(format!("q{round}.vdi"));
        let t = Instant::now();
        qemu_img(&["convert", "-f", "raw", "-O", "vdi", src.to_str().unwrap(), q.to_str().unwrap()]);
        let qt = t.elapsed().as_secs_f64();
        qemu_best = qemu_best.min(qt);

        let out = dir.path().join(format!("o{round}.vdi"));
        let t = Instant::now();
        let img = open_as(&src, Some("raw")).unwrap();
        let files = OutputFiles::new();
        let w = VdiDriver.create(&out, img.size(), &opts(&[]), &files).unwrap();
        copy(img.as_ref(), w.as_ref(), &CopyOptions::new(diskcast_testkit::all_cores()), &NoProgress).unwrap();
        w.finish().unwrap();
        let before_sync = t.elapsed().as_secs_f64();
        files.commit().unwrap();
        let ot = t.elapsed().as_secs_f64();
        println!("round {round}: diskcast before the final fsync {before_sync:.3} s");
        ours_best = ours_best.min(ot);
        println!("round {round}: qemu-img convert -O vdi {qt:.3} s, diskcast {ot:.3} s, ratio {:.2}", ot / qt);
        assert_qemu_compare(&src, &out);
        assert_qemu_check_clean(&out);
        std::fs::remove_file(&q).unwrap();
        std::fs::remove_file(&out).unwrap();
    }
    println!("best: qemu-img {qemu_best:.3} s, diskcast {ours_best:.3} s, ratio {:.2}", ours_best / qemu_best);
}
