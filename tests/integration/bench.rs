//! `diskcast bench` against `qemu-img bench` on the same qemu-made images: the same flags
//! accepted and refused with the same exit codes, the same lines printed (the time
//! aside), and the bytes `-w` leaves read back by qemu-io and compared by qemu-img.

use crate::support::*;
use std::path::Path;

/// The lines a bench run printed, the time of the last replaced by `T`.
fn shape(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| match l.strip_prefix("Run completed in ").and_then(|t| t.strip_suffix(" seconds.")) {
            Some(t) => {
                let (secs, millis) = t.split_once('.').unwrap_or_else(|| panic!("no decimals in {l:?}"));
                assert!(secs.bytes().all(|b| b.is_ascii_digit()) && !secs.is_empty(), "{l:?}");
                assert!(millis.len() == 3 && millis.bytes().all(|b| b.is_ascii_digit()), "{l:?}");
                "Run completed in T seconds.".to_string()
            }
            None => l.to_string(),
        })
        .collect()
}

/// Runs `bench ARGS FILE` with both tools, each on its own copy of `image`, and asserts
/// the same exit status and the same lines; the status.
fn both(dir: &Path, image: &Path, args: &[&str]) -> Option<i32> {
    let (ours, theirs) = (dir.join("ours.img"), dir.join("theirs.img"));
    for copy in [&ours, &theirs] {
        std::fs::copy(image, copy).unwrap();
    }
    let with = |file: &Path| [&["bench"], args, &[s(file).as_str()]].concat().iter().map(|a| a.to_string()).collect();
    let (a, b): (Vec<String>, Vec<String>) = (with(&ours), with(&theirs));
    let q = qemu_img_status(&b.iter().map(String::as_str).collect::<Vec<_>>());
    let d = dc(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(d.code, q.code, "bench {args:?}: exit status\nqemu-img: {}\ndiskcast: {}", q.describe(), d.describe());
    assert_eq!(shape(&d.stdout_str()), shape(&q.stdout_str()), "bench {args:?}\n{}\n{}", q.describe(), d.describe());
    assert!(d.code == Some(0) || !d.stderr.trim().is_empty(), "a refusal says why\n{}", d.describe());
    q.code
}

/// Every flag of qemu-img bench, alone and together, and its refusals: same status,
/// same lines. Each run is short (a few thousand small requests on a 4 MiB image), and
/// none wraps past `size - BUFFER_SIZE`, where qemu-img 10.0 still wraps modulo the size
/// and fails the request that runs past the end (its master wraps as diskcast does).
#[test]
fn bench_takes_qemu_img_flags_and_prints_its_lines() {
    let d = tmp();
    let raw = d.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&raw), "4M"]);
    qemu_io("raw", &raw, &["write -P 0x42 0 1M"]);
    let qcow2 = d.path().join("src.qcow2");
    qemu_img(&["convert", "-q", "-f", "raw", "-O", "qcow2", &s(&raw), &s(&qcow2)]);
    let ok: &[&[&str]] = &[
        &["-f", "raw", "-c", "2000"],
        &["-f", "raw", "-c", "0x100", "-d", "1", "-s", "1k", "-S", "8k", "-o", "512"],
        &["-f", "raw", "--count=50", "--depth=8", "--buffer-size=64K", "--step-size=0", "--offset=1.5k"],
        &["-f", "raw", "-c", "100", "-t", "none", "-n"],
        &["-f", "raw", "-c", "100", "-t", "directsync", "-i", "native"],
        &["-f", "raw", "-c", "100", "--cache=writethrough", "--aio=threads", "-q", "-U"],
        &["-f", "raw", "-w", "-c", "500", "-d", "4", "--pattern=0xab", "--flush-interval=100"],
        &["-f", "raw", "-w", "-c", "500", "-d", "4", "--pattern", "7", "--flush-interval", "4", "--no-drain"],
        &["-f", "raw", "-w", "-c", "200", "-t", "writethrough"],
        &["-f", "qcow2", "-c", "1000", "-s", "512"],
    ];
    for args in ok {
        let image = if args.contains(&"qcow2") { &qcow2 } else { &raw };
        assert_eq!(both(d.path(), image, args), Some(0), "{args:?}");
    }
    // --image-opts: the image named by qemu's option string.
    let spec = format!("driver=raw,file.filename={}", s(&raw));
    let q = qemu_img(&["bench", "--image-opts", "-c", "100", "-t", "unsafe", &spec]);
    let ours = dc_ok(&["bench", "--image-opts", "-c", "100", "-t", "unsafe", &spec]);
    assert_eq!(shape(&ours.stdout_str()), shape(&q.stdout_str()));
    let refused: &[&[&str]] = &[
        &["-c", "0"],
        &["-c", "-1"],
        &["-c", "x"],
        &["-c", "2147483648"],
        &["-d", "0"],
        &["-d", "x"],
        &["-o", "-1"],
        &["-o", "x"],
        &["-s", "0"],
        &["-s", "3G"],
        &["-S", "3G"],
        &["--pattern=256"],
        &["--pattern=x"],
        &["--flush-interval=64"],
        &["-w", "--flush-interval=8"],
        &["-w", "--flush-interval=x"],
        &["-t", "bogus"],
        &["-i", "bogus"],
        &["-n"],
        &["-w", "-U"],
        &["--image-opts", "-f", "raw"],
        // Requests past the end: both print the first line, then fail.
        &["-c", "3", "-o", "4M"],
        &["-c", "3", "-s", "8M"],
    ];
    for args in refused {
        let mut all = vec!["-f", "raw"];
        all.extend_from_slice(args);
        if args.contains(&"--image-opts") {
            all.drain(..2);
        }
        assert_eq!(both(d.path(), &raw, &all), Some(1), "{all:?}");
    }
}

/// `-w` writes the pattern where qemu-img writes it: qemu-io reads every request's bytes
/// back and qemu-img compare finds our image and qemu-img's the same; the step wraps to
/// keep each request inside the image; an OVA (no in-place writer) is refused untouched.
#[test]
fn bench_write_leaves_the_pattern_qemu_io_reads() {
    let d = tmp();
    let base = d.path().join("base.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&base), "1M"]);
    qemu_io("raw", &base, &["write -P 0x11 0 1M"]);
    // Seven requests of 1000 bytes from offset 5, 140000 apart: none wraps.
    let args = ["-f", "raw", "-w", "-c", "7", "-d", "2", "-s", "1000", "-S", "140000", "-o", "5", "--pattern=0xcd"];
    assert_eq!(both(d.path(), &base, &args), Some(0));
    let (ours, theirs) = (d.path().join("ours.img"), d.path().join("theirs.img"));
    qemu_compare(&ours, "raw", &theirs, "raw");
    let mut reads: Vec<String> = (0..7).map(|i| format!("read -P 0xcd {} 1000", 5 + i * 140_000)).collect();
    reads.push("read -P 0x11 0 5".into());
    reads.push("read -P 0x11 1005 139000".into());
    reads.push("read -P 0x11 841005 207571".into());
    qemu_io("raw", &ours, &reads.iter().map(String::as_str).collect::<Vec<_>>());

    // 20 requests of 4 KiB, 300000 apart: offsets wrap below size - 4096, as qemu's bench
    // wraps them since it stopped letting a wrapped request run past the end.
    let wrap = d.path().join("wrap.raw");
    std::fs::copy(&base, &wrap).unwrap();
    dc_ok(&["bench", "-f", "raw", "-w", "-c", "20", "-S", "300000", "--pattern=0x77", &s(&wrap)]);
    let span = MIB - 4096;
    let reads: Vec<String> = (0..20u64).map(|i| format!("read -P 0x77 {} 4096", (i * 300_000) % span)).collect();
    qemu_io("raw", &wrap, &reads.iter().map(String::as_str).collect::<Vec<_>>());

    let ova = d.path().join("q.ova");
    dc_ok(&["convert", "-f", "raw", "-O", "ova", &s(&base), &s(&ova)]);
    let before = read(&ova);
    dc(&["bench", "-w", "-c", "10", &s(&ova)]).expect_code(1).expect_stderr_all(&["ova", "in-place writer"]);
    assert_eq!(read(&ova), before, "a refused bench -w changed the image");
}

/// `-w` into formats diskcast edits in place (a block or grain allocated on first write):
/// the same lines as qemu-img bench -w on a copy, and the two images the same to qemu-img
/// compare (and clean to qemu-img check where it has one), with some requests landing
/// in blocks the image stores and some in blocks it does not.
#[test]
fn bench_write_into_edited_formats_matches_qemu_img() {
    for (fmt, opts, checkable) in [
        ("vdi", "static=off", true),
        ("vpc", "subformat=dynamic", false),
        ("vmdk", "subformat=monolithicSparse", true),
        ("vhdx", "subformat=dynamic", true),
    ] {
        let d = tmp();
        let image = d.path().join("image");
        qemu_img(&["create", "-q", "-f", fmt, "-o", opts, &s(&image), "8M"]);
        qemu_io(fmt, &image, &["write -P 0x11 0 1M"]);
        let args = ["-f", fmt, "-w", "-c", "9", "-s", "3000", "-S", "700000", "-o", "4096", "--pattern=0xcd"];
        assert_eq!(both(d.path(), &image, &args), Some(0), "{fmt}");
        let (ours, theirs) = (d.path().join("ours.img"), d.path().join("theirs.img"));
        qemu_compare(&ours, fmt, &theirs, fmt);
        if checkable {
            qemu_img(&["check", "-q", "-f", fmt, &s(&ours)]);
        }
        let reads: Vec<String> = (0..9).map(|i| format!("read -P 0xcd {} 3000", 4096 + i * 700_000)).collect();
        qemu_io(fmt, &ours, &reads.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
