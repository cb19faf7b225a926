//! convert: a matrix of qemu-made sources x diskcast output formats, judged by
//! `qemu-img compare` / `check` / `info`.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Virtual size of the matrix sources: not a multiple of 64 KiB or 2 MiB clusters (qcow2
/// needs a multiple of 512).
const SIZE: u64 = 5 * MIB + 1536;

/// The writes every matrix source gets: data at odd offsets, zero ranges, holes, written
/// zeros, and data ending exactly at the end of the image.
fn fill(fmt: &str, p: &Path) {
    let tail = SIZE - 777;
    let cmds = [
        "write -P 0x11 1000 3000".to_string(),
        "write -P 0x22 65535 70001".to_string(),
        "write -P 0x33 1M 1M".to_string(),
        "write -z 1536K 128K".to_string(),     // zeros punched into data
        "write -P 0 3584K 64K".to_string(),    // zeros written as data
        "write -z 4M 64K".to_string(),         // zero range over a hole
        "write -P 0x44 4259839 3".to_string(), // 3 bytes straddling a 64K boundary
        format!("write -P 0x55 {tail} 777"),   // the last bytes of the image
    ];
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io(fmt, p, &refs);
}

struct Source {
    name: &'static str,
    path: PathBuf,
    fmt: &'static str,
}

fn make_sources(dir: &Path) -> Vec<Source> {
    let mut v = Vec::new();
    let size = SIZE.to_string();
    // raw
    let raw = dir.join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&raw), &size]);
    fill("raw", &raw);
    v.push(Source { name: "raw", path: raw, fmt: "raw" });
    // qcow2 v3 with three cluster sizes, and v2
    for (name, opts) in [
        ("v3-512", "cluster_size=512"),
        ("v3-64k", "cluster_size=65536"),
        ("v3-2m", "cluster_size=2M"),
        ("v2-64k", "compat=0.10"),
        ("v2-512", "compat=0.10,cluster_size=512"),
    ] {
        let p = dir.join(format!("src-{name}.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, &s(&p), &size]);
        fill("qcow2", &p);
        v.push(Source { name, path: p, fmt: "qcow2" });
    }
    // compressed sources made by qemu-img convert -c
    let base = dir.join("src-v3-64k.qcow2");
    for (name, ctype, cs) in [("zlib", "zlib", "65536"), ("zstd", "zstd", "65536"), ("zstd-4k", "zstd", "4096")] {
        let p = dir.join(format!("src-{name}.qcow2"));
        let o = format!("compression_type={ctype},cluster_size={cs}");
        qemu_img(&["convert", "-c", "-f", "qcow2", "-O", "qcow2", "-o", &o, &s(&base), &s(&p)]);
        let info = qemu_info(&p);
        assert_eq!(info["format-specific"]["data"]["compression-type"], ctype, "{info}");
        let chk = qemu_check_clean(&p);
        assert!(chk["compressed-clusters"].as_u64().unwrap_or(0) > 0, "source not compressed: {chk}");
        v.push(Source { name, path: p, fmt: "qcow2" });
    }
    v
}

/// One diskcast output variant: args, and what qemu-img info must then say.
struct Target {
    name: &'static str,
    args: &'static [&'static str],
    fmt: &'static str,
    compat: Option<&'static str>,
    cluster: Option<u64>,
    compression: Option<&'static str>,
}

const TARGETS: &[Target] = &[
    Target { name: "raw", args: &["-O", "raw"], fmt: "raw", compat: None, cluster: None, compression: None },
    Target {
        name: "qcow2",
        args: &["-O", "qcow2"],
        fmt: "qcow2",
        compat: Some("1.1"),
        cluster: Some(65536),
        compression: None,
    },
    Target {
        name: "qcow2-v2",
        args: &["-O", "qcow2", "-o", "compat=0.10"],
        fmt: "qcow2",
        compat: Some("0.10"),
        cluster: Some(65536),
        compression: None,
    },
    Target {
        name: "qcow2-zlib",
        args: &["-O", "qcow2", "-c"],
        fmt: "qcow2",
        compat: Some("1.1"),
        cluster: Some(65536),
        compression: Some("zlib"),
    },
    Target {
        name: "qcow2-zstd",
        args: &["-O", "qcow2", "-c", "-o", "compression_type=zstd"],
        fmt: "qcow2",
        compat: Some("1.1"),
        cluster: Some(65536),
        compression: Some("zstd"),
    },
    Target {
        name: "qcow2-512",
        args: &["-O", "qcow2", "-o", "cluster_size=512"],
        fmt: "qcow2",
        compat: Some("1.1"),
        cluster: Some(512),
        compression: None,
    },
    Target {
        name: "qcow2-2m",
        args: &["-O", "qcow2", "-o", "cluster_size=2M"],
        fmt: "qcow2",
        compat: Some("1.1"),
        cluster: Some(2 * MIB),
        compression: None,
    },
];

/// Converts `src` to every target and judges each output with qemu. Returns failures
/// as text so one run reports the whole matrix.
fn convert_all(dir: &Path, src: &Source, targets: &[&Target]) -> Vec<String> {
    let mut failures = Vec::new();
    for t in targets {
        let out = dir.join(format!("out-{}-to-{}", src.name, t.name));
        let mut args: Vec<String> = vec!["convert".into(), "-f".into(), src.fmt.into()];
        args.extend(t.args.iter().map(|a| a.to_string()));
        args.push(s(&src.path));
        args.push(s(&out));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = std::panic::catch_unwind(|| {
            dc_ok(&refs);
            qemu_compare(&src.path, src.fmt, &out, t.fmt);
            let info = qemu_info_fmt(&out, t.fmt);
            assert_eq!(info["virtual-size"].as_u64(), Some(SIZE), "virtual size: {info}");
            if t.fmt == "qcow2" {
                let chk = qemu_check_clean(&out);
                let data = &info["format-specific"]["data"];
                if let Some(c) = t.compat {
                    assert_eq!(data["compat"], c, "compat: {info}");
                }
                if let Some(c) = t.cluster {
                    assert_eq!(info["cluster-size"].as_u64(), Some(c), "cluster size: {info}");
                }
                match t.compression {
                    Some(c) => {
                        assert_eq!(data["compression-type"], c, "compression type: {info}");
                        assert!(
                            chk["compressed-clusters"].as_u64().unwrap_or(0) > 0,
                            "-c produced no compressed clusters: {chk}"
                        );
                    }
                    None => assert_eq!(
                        chk["compressed-clusters"].as_u64().unwrap_or(0),
                        0,
                        "compressed clusters without -c: {chk}"
                    ),
                }
                // Holes and zeros must not be stored as data: the output is no larger than
                // what qemu-img convert makes with the same options (plus some slack).
                let reference = dir.join("qemu-reference.qcow2");
                let mut qargs: Vec<String> = vec!["convert".into(), "-f".into(), src.fmt.into()];
                qargs.extend(t.args.iter().map(|a| a.to_string()));
                qargs.push(s(&src.path));
                qargs.push(s(&reference));
                let qrefs: Vec<&str> = qargs.iter().map(String::as_str).collect();
                qemu_img(&qrefs);
                let (ours, theirs) = (file_len(&out), file_len(&reference));
                let _ = std::fs::remove_file(&reference);
                let cluster = t.cluster.unwrap_or(65536);
                assert!(
                    ours <= theirs + theirs / 4 + 2 * cluster,
                    "output is {ours} bytes, qemu-img convert {} makes {theirs}: zeros/holes stored as data?",
                    t.args.join(" ")
                );
            }
            // diskcast agrees with itself, too.
            dc(&["compare", "-f", src.fmt, "-F", t.fmt, &s(&src.path), &s(&out)]).expect_ok();
        });
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("[{} -> {}] {msg}", src.name, t.name));
        }
        let _ = std::fs::remove_file(&out);
    }
    failures
}

fn run_matrix(source_filter: &dyn Fn(&Source) -> bool, target_filter: &dyn Fn(&Target) -> bool) {
    let d = tmp();
    let sources = make_sources(d.path());
    let targets: Vec<&Target> = TARGETS.iter().filter(|t| target_filter(t)).collect();
    let mut failures = Vec::new();
    for src in sources.iter().filter(|s| source_filter(s)) {
        failures.extend(convert_all(d.path(), src, &targets));
    }
    assert!(failures.is_empty(), "{} conversions failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn matrix_raw_source_to_raw() {
    run_matrix(&|s| s.fmt == "raw", &|t| t.fmt == "raw");
}

#[test]
fn matrix_raw_source_to_qcow2_variants() {
    run_matrix(&|s| s.fmt == "raw", &|t| t.fmt == "qcow2");
}

#[test]
fn matrix_qcow2_sources_to_raw() {
    run_matrix(&|s| s.fmt == "qcow2", &|t| t.fmt == "raw");
}

#[test]
fn matrix_qcow2_sources_to_qcow2_variants() {
    run_matrix(&|s| s.fmt == "qcow2", &|t| t.fmt == "qcow2");
}

/// Each 4 KiB block carries its own index: a misplaced block says where it went.
#[test]
fn index_pattern_survives_qcow2_round_trip() {
    let d = tmp();
    let raw = d.path().join("pattern.raw");
    let size = 3 * MIB + 5 * 4096 + 512; // odd number of blocks, not a cluster multiple
    write_index_pattern(&raw, size, 7);
    let src = d.path().join("pattern.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", &s(&raw), &s(&src)]);
    for (name, extra) in [
        ("raw", &["-O", "raw"][..]),
        ("q64k", &["-O", "qcow2"][..]),
        ("q512", &["-O", "qcow2", "-o", "cluster_size=512"][..]),
        ("qzstd", &["-O", "qcow2", "-c", "-o", "compression_type=zstd"][..]),
    ] {
        let out = d.path().join(format!("out-{name}"));
        let mut args = vec!["convert", "-f", "qcow2"];
        args.extend_from_slice(extra);
        let (ss, os) = (s(&src), s(&out));
        args.push(&ss);
        args.push(&os);
        dc_ok(&args);
        // Back to raw with qemu, then byte-compare with the original pattern.
        let back = d.path().join(format!("back-{name}.raw"));
        let fmt = if name == "raw" { "raw" } else { "qcow2" };
        qemu_img(&["convert", "-f", fmt, "-O", "raw", &s(&out), &s(&back)]);
        assert_same_bytes(&raw, &back);
        if fmt == "qcow2" {
            qemu_check_clean(&out);
        }
    }
}

/// The raw index pattern straight through diskcast raw -> raw, with several thread counts.
#[test]
fn index_pattern_raw_to_raw_threads() {
    let d = tmp();
    let raw = d.path().join("pattern.raw");
    write_index_pattern(&raw, 8 * MIB + 12345, 5);
    for j in ["1", "2", "7"] {
        let out = d.path().join(format!("out-{j}.raw"));
        dc_ok(&["convert", "-f", "raw", "-O", "raw", "-j", j, &s(&raw), &s(&out)]);
        assert_same_bytes(&raw, &out);
        qemu_compare(&raw, "raw", &out, "raw");
    }
}

/// A raw source whose size is not a multiple of 512: qcow2 must round up like qemu and
/// the extra bytes read as zeros.
#[test]
fn odd_size_raw_to_qcow2() {
    let d = tmp();
    let raw = d.path().join("odd.raw");
    let size = 3 * MIB + 1001;
    write_index_pattern(&raw, size, 0);
    let out = d.path().join("odd.qcow2");
    dc_ok(&["convert", "-f", "raw", "-O", "qcow2", &s(&raw), &s(&out)]);
    qemu_check_clean(&out);
    let info = qemu_info(&out);
    let vs = info["virtual-size"].as_u64().expect("virtual-size");
    assert!(vs >= size && vs < size + 512, "virtual size {vs} for a {size}-byte source: {info}");
    // qemu-img compare (non-strict) accepts a zero tail.
    qemu_compare(&raw, "raw", &out, "qcow2");
    let reference = d.path().join("ref.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", &s(&raw), &s(&reference)]);
    assert_eq!(vs, qemu_info(&reference)["virtual-size"].as_u64().expect("vs"), "qemu rounds differently");
}

/// raw -> raw keeps holes; -S 0 allocates everything.
#[test]
fn raw_to_raw_stays_sparse_and_s0_allocates() {
    let d = tmp();
    let src = d.path().join("sparse.raw");
    let size = 64 * MIB;
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), &size.to_string()]);
    qemu_io("raw", &src, &["write -P 0x77 1M 64K", "write -P 0x78 40M 4K", "write -P 0 50M 1M"]);
    let out = d.path().join("sparse-out.raw");
    dc_ok(&["convert", "-f", "raw", "-O", "raw", &s(&src), &s(&out)]);
    qemu_compare(&src, "raw", &out, "raw");
    assert_eq!(file_len(&out), size);
    let used = allocated(&out);
    assert!(used < 2 * MIB, "raw -> raw allocated {used} bytes for 68 KiB of data (written zeros must become holes)");

    let full = d.path().join("full.raw");
    dc_ok(&["convert", "-f", "raw", "-O", "raw", "-S", "0", &s(&src), &s(&full)]);
    qemu_compare(&src, "raw", &full, "raw");
    let used = allocated(&full);
    assert!(used >= size, "-S 0 must allocate every block: {used} of {size} bytes allocated");
}

/// A zero-sized image converts to an empty image of each format.
#[test]
fn empty_raw_image_converts() {
    let d = tmp();
    let src = d.path().join("empty.raw");
    write_file(&src, b"");
    let out = d.path().join("empty-out.raw");
    dc_ok(&["convert", "-O", "raw", &s(&src), &s(&out)]);
    assert_eq!(file_len(&out), 0);
    dc_ok(&["compare", &s(&src), &s(&out)]);
}

#[test]
fn empty_qcow2_image_converts() {
    let d = tmp();
    for size in ["0", "64M"] {
        let src = d.path().join(format!("empty-{size}.qcow2"));
        qemu_img(&["create", "-q", "-f", "qcow2", &s(&src), size]);
        for (ofmt, name) in [("qcow2", "q"), ("raw", "r")] {
            let out = d.path().join(format!("out-{size}.{name}"));
            let r = dc_ok(&["convert", "-O", ofmt, &s(&src), &s(&out)]);
            assert!(r.elapsed < Duration::from_secs(20));
            qemu_compare(&src, "qcow2", &out, ofmt);
            let info = qemu_info_fmt(&out, ofmt);
            assert_eq!(info["virtual-size"], qemu_info(&src)["virtual-size"], "{info}");
            if ofmt == "qcow2" {
                qemu_check_clean(&out);
                assert!(file_len(&out) <= 1024 * KIB, "empty qcow2 output is {} bytes", file_len(&out));
            } else {
                assert!(allocated(&out) <= 64 * KIB, "empty raw output allocates {} bytes", allocated(&out));
            }
        }
    }
}

/// A 1 TiB sparse qcow2 with a few writes: convert and compare take seconds, output tiny.
#[test]
fn one_tib_sparse_qcow2_is_fast() {
    let d = tmp();
    let src = d.path().join("big.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&src), "1T"]);
    let tib = 1u64 << 40;
    let near_end = (tib - 64 * KIB).to_string();
    qemu_io("qcow2", &src, &["write -P 0x01 0 64K", "write -P 0x02 500G 1M", &format!("write -P 0x03 {near_end} 64K")]);
    let out = d.path().join("big-out.qcow2");
    let r = dc_ok(&["convert", "-O", "qcow2", &s(&src), &s(&out)]);
    assert!(r.elapsed < Duration::from_secs(20), "convert of a sparse 1 TiB image took {:?}", r.elapsed);
    assert!(file_len(&out) < 8 * MIB, "output of 1.1 MiB data is {} bytes", file_len(&out));
    assert_eq!(qemu_info(&out)["virtual-size"].as_u64(), Some(tib));
    qemu_check_clean(&out);
    let r = dc(&["compare", &s(&src), &s(&out)]).expect_ok();
    assert!(r.elapsed < Duration::from_secs(20), "compare of a sparse 1 TiB image took {:?}", r.elapsed);
    qemu_compare(&src, "qcow2", &out, "qcow2");
}

/// The raw stream on stdout equals qemu-img convert -O raw byte for byte.
fn stdout_equals_qemu(src: &Path, fmt: &str, dir: &Path) {
    let r = dc_ok(&["convert", "-f", fmt, "-O", "raw", &s(src), "-"]);
    let reference = dir.join("reference.raw");
    qemu_img(&["convert", "-f", fmt, "-O", "raw", &s(src), &s(&reference)]);
    let piped = dir.join("piped.raw");
    write_file(&piped, &r.stdout);
    assert_same_bytes(&reference, &piped);
}

#[test]
fn stdout_raw_source_equals_qemu() {
    let d = tmp();
    let src = d.path().join("p.raw");
    write_index_pattern(&src, 3 * MIB + 1024, 3);
    stdout_equals_qemu(&src, "raw", d.path());
}

/// An odd-sized raw source: qemu pads its output to 512 bytes; diskcast writes exactly
/// the source's bytes (the padding qemu adds is zeros).
#[test]
fn stdout_odd_raw_source_is_exact() {
    let d = tmp();
    let src = d.path().join("p.raw");
    write_index_pattern(&src, 3 * MIB + 777, 3);
    let r = dc_ok(&["convert", "-f", "raw", "-O", "raw", &s(&src), "-"]);
    let piped = d.path().join("piped.bin");
    write_file(&piped, &r.stdout);
    assert_same_bytes(&src, &piped);
    let reference = d.path().join("reference.bin");
    qemu_img(&["convert", "-f", "raw", "-O", "raw", &s(&src), &s(&reference)]);
    let q = read(&reference);
    assert_eq!(&q[..r.stdout.len()], &r.stdout[..]);
    assert!(q[r.stdout.len()..].iter().all(|&b| b == 0) && q.len() - r.stdout.len() < 512);
}

#[test]
fn stdout_qcow2_source_equals_qemu() {
    let d = tmp();
    let raw = d.path().join("p.raw");
    write_index_pattern(&raw, 3 * MIB + 512, 3);
    let src = d.path().join("p.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", &s(&raw), &s(&src)]);
    qemu_io("qcow2", &src, &["write -z 8K 64K", "write -P 0x99 1000000 333"]);
    stdout_equals_qemu(&src, "qcow2", d.path());
}

#[test]
fn stdout_refuses_non_raw() {
    let d = tmp();
    let src = d.path().join("p.raw");
    write_index_pattern(&src, MIB, 0);
    dc(&["convert", "-f", "raw", "-O", "qcow2", &s(&src), "-"]).expect_code(1).expect_stderr_any(&[
        "standard output",
        "-o raw",
        "-O raw",
    ]);
}

/// `diskcast convert X - | head -c 1000`: the reader going away is not an error.
#[test]
fn stdout_broken_pipe_exits_zero() {
    use std::io::Read;
    let d = tmp();
    let src = d.path().join("big.raw");
    write_file(&src, &pseudo_random(48 * MIB as usize, 7));
    let mut child = std::process::Command::new(diskcast_bin())
        .args(["convert", "-f", "raw", "-O", "raw", &s(&src), "-"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn diskcast");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut head = vec![0u8; 1000];
    stdout.read_exact(&mut head).expect("read 1000 bytes");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(&head[..], &read(&src)[..1000], "first 1000 bytes differ");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(out.status.code(), Some(0), "broken pipe must exit 0, got {:?}; stderr: {stderr}", out.status);

    // Same through a real shell pipeline with head (pipefail: diskcast's status counts).
    let sh = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' convert -f raw -O raw '{}' - | head -c 1000 | wc -c",
            diskcast_bin(),
            s(&src)
        ))
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&sh.stdout);
    let err = String::from_utf8_lossy(&sh.stderr);
    assert!(sh.status.success(), "pipeline failed ({:?}): {text} {err}", sh.status);
    assert_eq!(text.trim(), "1000");
    assert!(!err.contains("panicked") && !err.contains("diskcast:"), "stderr: {err}");
}

/// A backing chain of three made by qemu, flattened by diskcast.
#[test]
fn backing_chain_flattens() {
    let d = tmp();
    crate::backing::make_chain(d.path());
    let top = d.path().join("top.qcow2");
    let reference = d.path().join("ref.raw");
    qemu_img(&["convert", "-O", "raw", &s(&top), &s(&reference)]);
    let flat = d.path().join("flat.raw");
    dc_ok(&["convert", "-O", "raw", &s(&top), &s(&flat)]);
    assert_same_bytes(&reference, &flat);
    let flat_q = d.path().join("flat.qcow2");
    dc_ok(&["convert", "-O", "qcow2", &s(&top), &s(&flat_q)]);
    qemu_check_clean(&flat_q);
    let info = qemu_info(&flat_q);
    assert!(info.get("backing-filename").is_none(), "flattened image still has a backing file: {info}");
    qemu_compare(&top, "qcow2", &flat_q, "qcow2");
    qemu_compare(&reference, "raw", &flat_q, "qcow2");
}

/// Parallel writers: the qcow2 output must be identical in content and clean for any -j.
#[test]
fn qcow2_output_any_thread_count() {
    let d = tmp();
    let raw = d.path().join("pattern.raw");
    write_index_pattern(&raw, 6 * MIB + 4096 * 3, 3);
    for j in ["1", "3", "8"] {
        for (name, extra) in [("plain", &[][..]), ("c512", &["-o", "cluster_size=512"][..]), ("zlib", &["-c"][..])] {
            let out = d.path().join(format!("out-{j}-{name}.qcow2"));
            let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-j", j];
            args.extend_from_slice(extra);
            let (rs, os) = (s(&raw), s(&out));
            args.push(&rs);
            args.push(&os);
            dc_ok(&args);
            qemu_check_clean(&out);
            let back = d.path().join("back.raw");
            qemu_img(&["convert", "-f", "qcow2", "-O", "raw", &s(&out), &s(&back)]);
            assert_same_bytes(&raw, &back);
            std::fs::remove_file(&out).expect("rm");
        }
    }
}

/// Metadata that spans several clusters: with 512-byte clusters, 24 MiB of data needs a
/// refcount table of more than one cluster and hundreds of L2 tables.
#[test]
fn small_clusters_many_metadata_clusters() {
    let d = tmp();
    let raw = d.path().join("dense.raw");
    write_file(&raw, &pseudo_random(24 * MIB as usize, 5));
    let out = d.path().join("dense.qcow2");
    dc_ok(&["convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512", &s(&raw), &s(&out)]);
    qemu_check_clean(&out);
    let h = Qcow2Header::read(&out);
    assert!(h.refcount_table_clusters > 1, "premise: refcount table should span clusters: {h:?}");
    qemu_compare(&raw, "raw", &out, "qcow2");
}

/// An 8 TiB image with data at the far end: the L1 table spans more than one 64 KiB cluster.
#[test]
fn huge_virtual_size_l1_spans_clusters() {
    let d = tmp();
    let src = d.path().join("huge.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&src), "8T"]);
    let end = (8u64 << 40) - 64 * KIB;
    qemu_io("qcow2", &src, &["write -P 0x21 0 64K", &format!("write -P 0x22 {end} 64K")]);
    let out = d.path().join("huge-out.qcow2");
    let r = dc_ok(&["convert", "-O", "qcow2", &s(&src), &s(&out)]);
    assert!(r.elapsed < Duration::from_secs(20), "took {:?}", r.elapsed);
    let h = Qcow2Header::read(&out);
    assert!(u64::from(h.l1_size) * 8 > h.cluster_size(), "premise: L1 spans clusters: {h:?}");
    qemu_check_clean(&out);
    qemu_compare(&src, "qcow2", &out, "qcow2");
}

/// qemu keeps writing into a diskcast-made image (allocating, overwriting, discarding)
/// and the image stays consistent: refcounts and COPIED flags are right.
#[test]
fn qemu_can_keep_writing_diskcast_output() {
    let d = tmp();
    let raw = d.path().join("p.raw");
    write_index_pattern(&raw, 4 * MIB, 2);
    for (name, extra) in
        [("v3", &[][..]), ("v2", &["-o", "compat=0.10"][..]), ("zstd", &["-c", "-o", "compression_type=zstd"][..])]
    {
        let out = d.path().join(format!("w-{name}.qcow2"));
        let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
        args.extend_from_slice(extra);
        let (rs, os) = (s(&raw), s(&out));
        args.push(&rs);
        args.push(&os);
        dc_ok(&args);
        qemu_io(
            "qcow2",
            &out,
            &[
                "write -P 0xaa 0 192K",
                "write -P 0xbb 3M 1M",
                "discard 1M 512K",
                "write -z 2M 64K",
                "write -P 0xcc 4096 1",
            ],
        );
        qemu_check_clean(&out);
        // diskcast reads qemu's changes back correctly.
        let mine = d.path().join("mine.raw");
        dc_ok(&["convert", "-O", "raw", &s(&out), &s(&mine)]);
        qemu_compare(&out, "qcow2", &mine, "raw");
        std::fs::remove_file(&mine).expect("rm");
    }
}
