//! qemu-img's convert/create flags: a qemu-img script run with diskcast in qemu-img's
//! place gives what qemu-img gives (judged by qemu-img compare, check and info JSON), and
//! each flag's effect and refusals match qemu-img's on the same input.

use crate::support::*;
use std::path::Path;
use std::time::Instant;

/// A typical qemu-img script; `$1` is the tool (qemu-img or diskcast). Data is written
/// by qemu-io, never by the tool under test.
const SCRIPT: &str = r#"set -eu
IMG=$1
$IMG create -q -f qcow2 base.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x5a 0 4M' -c 'write -P 0xa5 60M 4M' -c 'write -z 8M 1M' base.qcow2 >/dev/null
$IMG convert -p -O raw base.qcow2 flat.raw
$IMG convert -q -t unsafe -T none -W -m 4 -O qcow2 -o cluster_size=128k,compat=1.1 -f raw flat.raw re.qcow2
$IMG convert -q -c -O qcow2 -o compression_type=zstd base.qcow2 small.qcow2
$IMG convert -q -O raw -o preallocation=full base.qcow2 full.raw
$IMG convert -q -t writeback -r 256M -O vmdk base.qcow2 d.vmdk
$IMG create -q -f raw zero.raw 64M
$IMG convert -q -n --target-is-zero -O raw base.qcow2 zero.raw
$IMG convert -q --image-opts -O qcow2 driver=qcow2,file.filename=base.qcow2 opts.qcow2
$IMG resize -q re.qcow2 +64M
$IMG resize -q -f raw --shrink flat.raw 32M
$IMG dd -O qcow2 if=base.qcow2 of=dd.qcow2 bs=1M count=8 skip=2
$IMG info --output=json re.qcow2 > re.json
$IMG info --output=json small.qcow2 > small.json
"#;

fn run_script(dir: &Path, tool: &str) {
    std::fs::write(dir.join("script.sh"), SCRIPT).unwrap();
    let out = std::process::Command::new("bash").arg("script.sh").arg(tool).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "the qemu-img script failed with {tool}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn qemu_img_script_runs_unchanged() {
    let (ours, theirs) = (tmp(), tmp());
    run_script(ours.path(), diskcast_bin());
    run_script(theirs.path(), "qemu-img");
    for (name, fmt) in [
        ("flat.raw", "raw"),
        ("re.qcow2", "qcow2"),
        ("small.qcow2", "qcow2"),
        ("full.raw", "raw"),
        ("d.vmdk", "vmdk"),
        ("zero.raw", "raw"),
        ("opts.qcow2", "qcow2"),
        ("dd.qcow2", "qcow2"),
    ] {
        let (a, b) = (ours.path().join(name), theirs.path().join(name));
        if fmt == "qcow2" {
            qemu_check_clean(&a);
        }
        qemu_compare(&a, fmt, &b, fmt);
        let (ia, ib) = (qemu_info_fmt(&a, fmt), qemu_info_fmt(&b, fmt));
        assert_eq!(ia["virtual-size"], ib["virtual-size"], "{name}");
        if fmt == "qcow2" {
            assert_eq!(ia["cluster-size"], ib["cluster-size"], "{name}");
            for key in ["compat", "compression-type"] {
                assert_eq!(ia["format-specific"]["data"][key], ib["format-specific"]["data"][key], "{name} {key}");
            }
        }
    }
    // preallocation=full: every byte of the raw file allocated, as qemu-img leaves it.
    assert!(allocated(&ours.path().join("full.raw")) >= 64 * MIB);
    // What `info --output=json` printed, read as a script reads it.
    for json in ["re.json", "small.json"] {
        let a: serde_json::Value = serde_json::from_slice(&read(&ours.path().join(json))).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&read(&theirs.path().join(json))).unwrap();
        for key in ["virtual-size", "format", "cluster-size"] {
            assert_eq!(a[key], b[key], "{json} {key}: ours {a}\nqemu-img's {b}");
        }
        assert_eq!(a["format-specific"]["data"]["compression-type"], b["format-specific"]["data"]["compression-type"]);
    }
}

/// A qcow2 whose compressed cluster at 1 MiB holds garbage: reading it fails.
fn damaged(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("bad.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&p), "4M"]);
    qemu_io("qcow2", &p, &["write -P 0x11 0 1M", "write -c -P 0x22 1M 64K", "write -P 0x33 2M 1M"]);
    // The compressed data's host offset, from the L2 entry (qemu-img map does not give it).
    let h = Qcow2Header::read(&p);
    let entry = read_be_u64(&p, h.l2_entry_pos(&p, MIB));
    assert_ne!(entry & (1 << 62), 0, "the cluster at 1 MiB is compressed");
    let host = entry & ((1u64 << 54) - 1);
    patch(&p, host, &[0xff; 64]);
    p
}

#[test]
fn salvage_writes_zeros_where_qemu_img_does() {
    let d = tmp();
    let bad = damaged(d.path());
    let (ours, theirs) = (d.path().join("ours.raw"), d.path().join("theirs.raw"));
    dc(&["convert", "-O", "raw", &s(&bad), &s(&ours)]).expect_code(1);
    assert!(!ours.exists());
    qemu_img_status(&["convert", "-O", "raw", &s(&bad), &s(&theirs)]).expect_code(1);
    dc(&["convert", "--salvage", "-O", "raw", &s(&bad), &s(&ours)]).expect_ok().expect_stderr_all(&[
        "warning",
        "at offset 1048576",
        "--salvage",
    ]);
    qemu_img(&["convert", "--salvage", "-O", "raw", &s(&bad), &s(&theirs)]);
    qemu_compare(&ours, "raw", &theirs, "raw");
    qemu_io("raw", &ours, &["read -P 0x11 0 1M", "read -P 0 1M 64K", "read -P 0x33 2M 1M"]);
}

#[test]
fn rate_limit_paces_the_copy() {
    let d = tmp();
    let src = d.path().join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&src), "16M"]);
    qemu_io("qcow2", &src, &["write -P 0x42 0 8M"]);
    let out = d.path().join("out.raw");
    let start = Instant::now();
    dc_ok(&["convert", "-r", "4M", "-O", "raw", &s(&src), &s(&out)]);
    let took = start.elapsed().as_secs_f64();
    assert!(took >= 1.5, "8 MiB at 4 MiB/s took {took:.2} s");
    qemu_compare(&src, "qcow2", &out, "raw");
}

#[test]
fn target_is_zero_skips_zeros_like_qemu_img() {
    let d = tmp();
    let src = d.path().join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&src), "8M"]);
    qemu_io("qcow2", &src, &["write -P 0x42 1M 1M"]);
    // Targets that do NOT read as zeros: the promise is the user's, and both tools keep it.
    let (ours, theirs) = (d.path().join("ours.raw"), d.path().join("theirs.raw"));
    for t in [&ours, &theirs] {
        write_file(t, &vec![0xee; 8 << 20]);
    }
    dc_ok(&["convert", "-n", "--target-is-zero", "-O", "raw", &s(&src), &s(&ours)]);
    qemu_img(&["convert", "-n", "--target-is-zero", "-O", "raw", &s(&src), &s(&theirs)]);
    assert_same_bytes(&theirs, &ours);
    qemu_io("raw", &ours, &["read -P 0xee 0 1M", "read -P 0x42 1M 1M"]);
}

#[test]
fn flags_refused_as_qemu_img_refuses_them() {
    let d = tmp();
    let src = d.path().join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&src), "1M"]);
    let out = d.path().join("out.img");
    let (i, o) = (s(&src), s(&out));
    for (args, qemu_too, message) in [
        (vec!["-m", "17"], true, "invalid number of coroutines specified. must be between 1 and 16."),
        (vec!["-C", "-c", "-O", "qcow2"], true, "cannot enable copy offloading when -c is used"),
        (vec!["--target-is-zero"], true, "--target-is-zero requires use of -n flag"),
        (vec!["-r", "1X"], true, "invalid rate limit specified: '1x'."),
        (vec!["-t", "bogus"], true, "bogus"),
        (vec!["-o", "preallocation=metadata"], true, "unsupported preallocation mode: metadata"),
        (vec!["-o", "preallocation=bogus"], true, "invalid preallocation mode 'bogus'"),
        (
            vec!["-O", "qcow2", "-c", "-o", "preallocation=metadata"],
            true,
            "compression and preallocation not supported at the same time",
        ),
        (vec!["-C", "-S", "64k"], true, "cannot enable copy offloading when -s is used"),
        (vec!["-C", "--salvage"], true, "cannot use copy offloading in salvaging mode"),
    ] {
        let mut v = vec!["convert"];
        v.extend(&args);
        v.extend([i.as_str(), o.as_str()]);
        if qemu_too {
            qemu_img_status(&v).expect_code(1);
            let _ = std::fs::remove_file(&out);
        }
        dc(&v).expect_code(1).expect_stderr_all(&[message]);
        assert!(!out.exists(), "{args:?} left an output");
    }
    // --image-opts beyond the plain forms is refused, naming the option.
    let spec = format!("driver=qcow2,file.driver=http,file.filename={i}");
    dc(&["convert", "--image-opts", &spec, &o]).expect_code(1).expect_stderr_all(&["only local files"]);
}

#[test]
fn create_preallocation_like_qemu_img() {
    let d = tmp();
    for (fmt, mode, allocated_all) in
        [("raw", "off", false), ("raw", "falloc", true), ("raw", "full", true), ("vmdk", "falloc", false)]
    {
        let p = d.path().join(format!("{mode}.{fmt}"));
        dc_ok(&["create", "-q", "-f", fmt, "-o", &format!("preallocation={mode}"), &s(&p), "8M"]);
        let q = d.path().join(format!("q-{mode}.{fmt}"));
        qemu_img(&["create", "-q", "-f", fmt, "-o", &format!("preallocation={mode}"), &s(&q), "8M"]);
        qemu_compare(&p, fmt, &q, fmt);
        assert_eq!(allocated(&p) >= 8 * MIB, allocated_all, "{fmt} {mode}: {} bytes", allocated(&p));
    }
}

/// qcow2 `-o preallocation=`: every guest cluster allocated where qemu-img puts it with
/// `metadata`, so `qemu-img map --output=json` prints the same (offsets included) for
/// `create` and for `convert`, and the file is as long and as sparse as qemu's. With
/// `falloc` and `full` (where qemu puts the L2 tables first and the refcounts at the
/// end, which we do not copy) the map is the same but for host offsets, and the file is
/// fully allocated; qemu-img check is clean and the data the same.
#[test]
fn qcow2_preallocation_is_laid_out_as_qemu_img_does() {
    let d = tmp();
    let src = d.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), "20M"]);
    qemu_io("raw", &src, &["write -P 7 1M 64K", "write -P 9 9M 3M"]);
    let map = |p: &Path| qemu_img(&["map", "--output=json", "-f", "qcow2", &s(p)]).stdout_str();
    let view = |p: &Path| qemu_map_view(p, "qcow2");
    let same_map = |p: &Path, q: &Path, mode: &str, what: &str| match mode {
        "metadata" => assert_eq!(map(p), map(q), "{what}"),
        _ => assert_eq!(view(p), view(q), "{what}"),
    };
    for (opts, size) in [
        ("", "10M"),
        ("compat=0.10", "10M"),
        ("cluster_size=4096,refcount_bits=64", "300M"),
        ("cluster_size=2M", "20M"),
        ("", "1100M"),
    ] {
        for mode in ["metadata", "falloc", "full"] {
            if size == "1100M" && mode != "metadata" {
                continue; // keep the test's disk use small
            }
            let o = format!("preallocation={mode}{}{opts}", if opts.is_empty() { "" } else { "," });
            let (p, q) = (d.path().join("ours.qcow2"), d.path().join("qemu.qcow2"));
            dc_ok(&["create", "-q", "-f", "qcow2", "-o", &o, &s(&p), size]);
            qemu_img(&["create", "-q", "-f", "qcow2", "-o", &o, &s(&q), size]);
            same_map(&p, &q, mode, &format!("create -o {o} {size}"));
            assert_eq!(file_len(&p), file_len(&q), "create -o {o} {size}");
            qemu_check_clean(&p);
            let virtual_size = qemu_info(&p)["virtual-size"].as_u64().unwrap_or(0);
            match mode {
                "metadata" => assert_eq!(allocated(&p), allocated(&q), "create -o {o} {size}"),
                _ => assert!(allocated(&p) >= virtual_size, "{o}: {} bytes allocated", allocated(&p)),
            }
            if size == "20M" || size == "10M" && opts.is_empty() {
                std::fs::remove_file(&p).expect("rm");
                std::fs::remove_file(&q).expect("rm");
                dc_ok(&["convert", "-f", "raw", "-O", "qcow2", "-o", &o, &s(&src), &s(&p)]);
                qemu_img(&["convert", "-f", "raw", "-O", "qcow2", "-o", &o, &s(&src), &s(&q)]);
                // (With 2 MiB clusters qemu writes only the source's data into a cluster,
                // leaving the rest a hole, and we write the whole cluster: holes differ.)
                if !opts.contains("2M") {
                    same_map(&p, &q, mode, &format!("convert -o {o}"));
                }
                qemu_check_clean(&p);
                qemu_compare(&src, "raw", &p, "qcow2");
            }
            std::fs::remove_file(&p).expect("rm");
            std::fs::remove_file(&q).expect("rm");
        }
    }
    // qemu-img's refusal of a backing file with preallocation, in its words.
    let (b, p) = (d.path().join("b.qcow2"), d.path().join("over.qcow2"));
    qemu_img(&["create", "-q", "-f", "qcow2", &s(&b), "1M"]);
    let args = ["create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "-o", "preallocation=metadata", &s(&p)];
    qemu_img_status(&args).expect_code(1);
    dc(&args).expect_code(1).expect_stderr_all(&["backing file and preallocation"]);
    assert!(!p.exists());
}

/// The `calls` system calls `diskcast convert ARGS` makes (strace's lines, one a call).
fn traced_convert(trace: &Path, calls: &str, convert_args: &[&str]) -> Vec<String> {
    let mut args = vec!["-f", "-qq", "-e", calls, "-o"];
    let trace_name = s(trace);
    args.extend([trace_name.as_str(), diskcast_bin(), "convert"]);
    args.extend(convert_args);
    let r = std::process::Command::new("strace").args(&args).output().expect("strace is required (scripts/setup.sh)");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8_lossy(&read(trace)).lines().map(str::to_string).collect()
}

/// The sync calls diskcast makes converting `src` with `extra` flags, as strace counts them.
fn syncs(dir: &Path, src: &Path, extra: &[&str], name: &str) -> usize {
    let out = dir.join(name);
    let (i, o) = (s(src), s(&out));
    let mut args = extra.to_vec();
    args.extend(["-O", "qcow2", i.as_str(), o.as_str()]);
    let lines = traced_convert(&dir.join(format!("{name}.trace")), "trace=fsync,fdatasync,syncfs,sync", &args);
    qemu_compare(src, "raw", &out, "qcow2");
    lines.iter().filter(|l| l.contains("sync")).count()
}

/// `convert -C`: the data of a raw source reaches a raw target by copy_file_range (strace
/// sees it), holes stay holes, and a zero block inside data is copied as data: `qemu-img
/// map` of the result is exactly that of `qemu-img convert -C` on the same input (without
/// -C both tools make the zero block a hole). Where offloading cannot work (a qcow2
/// target, a target on another filesystem) both tools copy through memory and succeed.
#[test]
fn copy_offloading_like_qemu_img() {
    let d = tmp();
    let src = d.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), "16M"]);
    qemu_io("raw", &src, &["write -P 0x11 0 1M", "write -P 0 4M 64k", "write -P 0x22 8M 64k"]);
    let map = |p: &Path| qemu_img(&["map", "--output=json", "-f", "raw", &s(p)]).stdout_str();
    let i = s(&src);
    for offload in [true, false] {
        let flags: &[&str] = if offload { &["-C"] } else { &[] };
        let (ours, theirs) = (d.path().join("ours.raw"), d.path().join("theirs.raw"));
        let (o, t) = (s(&ours), s(&theirs));
        let mut args = flags.to_vec();
        args.extend(["-f", "raw", "-O", "raw"]);
        let mut q = vec!["convert"];
        q.extend(&args);
        q.extend([i.as_str(), t.as_str()]);
        qemu_img(&q);
        args.extend([i.as_str(), o.as_str()]);
        let calls = traced_convert(&d.path().join("cfr.trace"), "trace=copy_file_range", &args);
        let copied = calls.iter().filter(|l| l.contains("copy_file_range(") && !l.contains("= -1")).count();
        assert_eq!(copied > 0, offload, "copy_file_range calls with {flags:?}: {calls:?}");
        qemu_compare(&src, "raw", &ours, "raw");
        assert_eq!(map(&ours), map(&theirs), "{flags:?}: the map differs from qemu-img's");
        assert!(allocated(&ours) < 4 * MIB, "holes not kept: {} bytes", allocated(&ours));
        std::fs::remove_file(&ours).unwrap();
        std::fs::remove_file(&theirs).unwrap();
    }
    // No offloading possible: a qcow2 target, and a raw target on another filesystem.
    let shm = Path::new("/dev/shm");
    let other_fs = if shm.is_dir() { tempfile::tempdir_in(shm).unwrap() } else { tmp() };
    for (fmt, out) in [("qcow2", d.path().join("out.qcow2")), ("raw", other_fs.path().join("out.raw"))] {
        let theirs = out.with_extension("qemu");
        qemu_img(&["convert", "-C", "-f", "raw", "-O", fmt, &s(&src), &s(&theirs)]);
        dc_ok(&["convert", "-C", "-f", "raw", "-O", fmt, &s(&src), &s(&out)]);
        qemu_compare(&src, "raw", &out, fmt);
        qemu_compare(&theirs, fmt, &out, fmt);
        if fmt == "qcow2" {
            qemu_check_clean(&out);
        }
    }
}

#[test]
fn cache_unsafe_skips_the_sync_other_modes_keep_it() {
    let d = tmp();
    let src = d.path().join("src.raw");
    qemu_img(&["create", "-q", "-f", "raw", &s(&src), "4M"]);
    qemu_io("raw", &src, &["write -P 0x42 0 1M"]);
    assert_eq!(syncs(d.path(), &src, &["-t", "unsafe"], "unsafe.qcow2"), 0, "-t unsafe synced");
    for (mode, name) in
        [(&[][..], "default.qcow2"), (&["-t", "writeback"], "wb.qcow2"), (&["-t", "none"], "none.qcow2")]
    {
        assert!(syncs(d.path(), &src, mode, name) >= 1, "{mode:?} did not sync the output");
    }
}

/// The progress lines of `-p` in `text`: each `    (NN.NN/100%)` ended by `\r`, the whole
/// ended by `\r\n` (and what follows it, such as commit's "Image committed."), checked
/// to be qemu-img's format. Returns the percentages.
fn qemu_progress(text: &str, what: &str) -> Vec<f64> {
    let (lines, _) = text.split_once("\r\n").unwrap_or_else(|| panic!("{what}: no \\r\\n ending: {text:?}"));
    lines
        .split('\r')
        .map(|l| {
            let n = l
                .strip_prefix("    (")
                .and_then(|l| l.strip_suffix("/100%)"))
                .unwrap_or_else(|| panic!("{what}: {l:?}"));
            assert!(n.split_once('.').is_some_and(|(_, f)| f.len() == 2), "{what}: {l:?} has not two decimals");
            n.parse::<f64>().unwrap_or_else(|_| panic!("{what}: {l:?}"))
        })
        .collect()
}

/// `-p` of convert, commit, rebase and amend prints what qemu-img prints, on standard
/// output even when it is not a terminal: `    (0.00/100%)\r` first, rising, the last
/// `    (100.00/100%)\r` then a newline (checked on both tools' output on the same input);
/// with the image on standard output (`convert ... -`) the lines go to standard error.
#[test]
fn progress_lines_like_qemu_img() {
    let d = tmp();
    let (ours, theirs) = (d.path().join("ours"), d.path().join("theirs"));
    for dir in [&ours, &theirs] {
        std::fs::create_dir(dir).unwrap();
        let create = |args: &[&str]| qemu_img_in(Some(dir), args).expect_ok();
        create(&["create", "-q", "-f", "raw", "src.raw", "16M"]);
        qemu_io("raw", &dir.join("src.raw"), &["write -P 1 0 4M", "write -P 2 8M 4M"]);
        create(&["create", "-q", "-f", "qcow2", "base.qcow2", "16M"]);
        for top in ["top.qcow2", "re.qcow2"] {
            create(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top]);
            qemu_io("qcow2", &dir.join(top), &["write -P 3 0 2M"]);
        }
    }
    for args in [
        &["convert", "-p", "-f", "raw", "-O", "qcow2", "src.raw", "out.qcow2"][..],
        &["commit", "-p", "top.qcow2"],
        &["rebase", "-p", "-b", "", "re.qcow2"],
        &["amend", "-p", "-o", "refcount_bits=8", "base.qcow2"],
    ] {
        let q = qemu_img_in(Some(&theirs), args).expect_ok();
        let r = dc_in(Some(&ours), args).expect_ok();
        for (who, run) in [("qemu-img", &q), ("diskcast", &r)] {
            let what = format!("{who} {args:?}");
            let p = qemu_progress(&run.stdout_str(), &what);
            assert_eq!(p.first(), Some(&0.0), "{what}");
            assert_eq!(p.last(), Some(&100.0), "{what}");
            assert!(p.windows(2).all(|w| w[0] <= w[1]), "{what}: {p:?}");
        }
        assert_eq!(r.stdout_str().split_once("\r\n").map(|x| x.1), q.stdout_str().split_once("\r\n").map(|x| x.1));
    }
    let r = dc_in(Some(&ours), &["convert", "-p", "-f", "raw", "-O", "raw", "src.raw", "-"]).expect_ok();
    assert!(r.stdout == read(&ours.join("src.raw")), "the image on standard output is not the source");
    qemu_progress(&r.stderr, "convert -p to standard output");
}
