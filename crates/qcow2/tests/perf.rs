//! Rough throughput numbers (run with `--ignored --nocapture`; test profile, not release).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::copy::{CopyOptions, copy};
use diskcast_block::output::OutputFiles;
use diskcast_block::progress::NoProgress;
use diskcast_block::registry::{CreateOptions, Driver};
use diskcast_qcow2::Qcow2Driver;
use std::time::Instant;

#[test]
#[ignore]
fn throughput_512mib() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.qcow2");
    create(&src, "512M", "");
    let cmds: Vec<String> = (0..64).map(|i| format!("write -P {} {}M 8M", i + 1, i * 8)).collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(&src, &refs);
    let img = open(&src).unwrap();
    let t = Instant::now();
    let _ = read_all(img.as_ref());
    println!("read 512 MiB: {:?}", t.elapsed());
    for (name, compress) in [("plain", false), ("zlib", true)] {
        let out = dir.path().join(format!("{name}.qcow2"));
        let files = OutputFiles::new();
        let o = CreateOptions { compress, ..CreateOptions::default() };
        let w = Qcow2Driver.create(&out, img.size(), &o, &files).unwrap();
        let t = Instant::now();
        copy(img.as_ref(), w.as_ref(), &CopyOptions::new(diskcast_testkit::all_cores()), &NoProgress).unwrap();
        w.finish().unwrap();
        files.commit().unwrap();
        println!("convert {name} (ours, 2 threads): {:?}", t.elapsed());
        assert_qemu_check_clean(&out);
        let q = dir.path().join(format!("q{name}.qcow2"));
        let t = Instant::now();
        let mut args = vec!["convert", "-O", "qcow2"];
        if compress {
            args.push("-c");
        }
        args.extend_from_slice(&[src.to_str().unwrap(), q.to_str().unwrap()]);
        qemu_img(&args);
        println!("convert {name} (qemu-img): {:?}", t.elapsed());
    }
}
