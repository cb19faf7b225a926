//! rebase, commit and convert -B: each run by diskcast on one copy of a qemu-made chain and
//! by qemu-img on another copy, with the same arguments; qemu-img judges the pair (compare,
//! check, info --backing-chain, map) and the exit codes and messages of the refusals.

use crate::backing::make_chain;
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Two copies of the chain `build` makes: `ours/` for diskcast, `theirs/` for qemu-img.
pub(crate) fn twin(build: impl Fn(&Path)) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tmp();
    let (ours, theirs) = (d.path().join("ours"), d.path().join("theirs"));
    for dir in [&ours, &theirs] {
        std::fs::create_dir(dir).unwrap();
        build(dir);
    }
    (d, ours, theirs)
}

/// Runs `diskcast ARGS` in `ours` and `qemu-img ARGS` in `theirs`: both must exit with the
/// same status; returns diskcast's run.
fn both(ours: &Path, theirs: &Path, args: &[&str]) -> Run {
    let q = qemu_img_in(Some(theirs), args);
    let r = dc_in(Some(ours), args);
    assert_eq!(r.code, q.code, "exit status differs from qemu-img's\n{}\nqemu-img: {}", r.describe(), q.describe());
    r
}

/// `qemu-img info --backing-chain --output=json`: each image's file name, backing name and
/// backing format, top first.
fn chain_names(p: &Path) -> Vec<(String, Option<String>, Option<String>)> {
    let v = qemu_img(&["info", "--backing-chain", "--output=json", &s(p)]).json();
    let field = |i: &Value, k: &str| i.get(k).and_then(Value::as_str).map(str::to_string);
    let name = |i: &Value| {
        let f = field(i, "filename").unwrap_or_default();
        Path::new(&f).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(f)
    };
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| (name(i), field(i, "backing-filename"), field(i, "backing-filename-format")))
        .collect()
}

/// qemu-img's map of `p` as (start, length, depth, zero, data) rows of the image itself
/// (depth 0), adjacent rows of one kind merged by qemu-img already.
fn own_clusters(p: &Path) -> Vec<(u64, u64, bool, bool)> {
    let v = qemu_img(&["map", "--output=json", &s(p)]).json();
    map_entries(&v).into_iter().filter(|e| e.2 == 0).map(|e| (e.0, e.1, e.4, e.5)).collect()
}

fn own_bytes(p: &Path) -> u64 {
    own_clusters(p).iter().filter(|e| e.3).map(|e| e.1).sum()
}

/// base.qcow2 <- mid.qcow2 <- top.qcow2 (10 MiB over 8 MiB), each level writing over the
/// one below: data, zeros over data, data the level below also holds, and past the base's end.
fn qcow2_chain(dir: &Path) {
    let create = |args: &[&str]| qemu_img_in(Some(dir), args).expect_ok();
    create(&["create", "-q", "-f", "qcow2", "base.qcow2", "8M"]);
    qemu_io("qcow2", &dir.join("base.qcow2"), &["write -P 0xaa 0 4M", "write -P 0xab 5M 1M"]);
    create(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2"]);
    qemu_io("qcow2", &dir.join("mid.qcow2"), &["write -P 0xbb 1M 1M", "write -z 5M 64K", "write -P 0xaa 3M 64K"]);
    create(&["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", "10M"]);
    qemu_io("qcow2", &dir.join("top.qcow2"), &["write -P 0xcc 1536K 64K", "write -P 0xdd 9M 64K", "write -z 0 4K"]);
    create(&["create", "-q", "-f", "qcow2", "other.qcow2", "8M"]);
    qemu_io("qcow2", &dir.join("other.qcow2"), &["write -P 0xee 2M 2M", "write -P 0xab 5M 64K"]);
}

/// qemu-img judges every image of both copies: the same guest content, and clean.
fn same_chains(ours: &Path, theirs: &Path, names: &[&str]) {
    for n in names {
        qemu_compare(&ours.join(n), "qcow2", &theirs.join(n), "qcow2");
        qemu_check_clean(&ours.join(n));
        assert_eq!(chain_names(&ours.join(n)), chain_names(&theirs.join(n)), "{n}");
    }
}

#[test]
fn safe_rebase_keeps_the_guest_view() {
    for args in [
        &["rebase", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"][..], // down the chain
        &["rebase", "-b", "other.qcow2", "-F", "qcow2", "top.qcow2"],    // onto another image
        &["rebase", "-b", "", "top.qcow2"],                              // standalone
        &["rebase", "-p", "-b", "other.qcow2", "-F", "qcow2", "mid.qcow2"],
        &["rebase", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2"], // onto its own backing file
    ] {
        let (_d, ours, theirs) = twin(qcow2_chain);
        let view = ours.join("view.raw");
        qemu_img(&["convert", "-O", "raw", &s(&ours.join(args[args.len() - 1])), &s(&view)]);
        both(&ours, &theirs, args);
        same_chains(&ours, &theirs, &["top.qcow2", "mid.qcow2"]);
        qemu_compare(&ours.join(args[args.len() - 1]), "qcow2", &view, "raw");
        let new = chain_names(&ours.join(args[args.len() - 1]));
        let named = args.iter().skip_while(|a| **a != "-b").nth(1).copied().filter(|b| !b.is_empty());
        assert_eq!(new[0].1.as_deref(), named, "{args:?}: {new:?}");
    }
}

/// `rebase -c`: the clusters the safe mode copies are written compressed, as qemu-img
/// writes them: the guest view kept, both results identical and clean, `qemu-img map`
/// reports the same ranges compressed in each (the overlay's own clusters untouched);
/// with `-u` it is accepted and copies nothing; a raw FILE is refused as qemu-img refuses it.
#[test]
fn rebase_c_writes_compressed_clusters_like_qemu_img() {
    for args in [
        &["rebase", "-c", "-b", "other.qcow2", "-F", "qcow2", "top.qcow2"][..],
        &["rebase", "-c", "-b", "", "mid.qcow2"],
        &["rebase", "-c", "-u", "-b", "other.qcow2", "-F", "qcow2", "top.qcow2"],
    ] {
        let (_d, ours, theirs) = twin(qcow2_chain);
        let file = args[args.len() - 1];
        let view = ours.join("view.raw");
        qemu_img(&["convert", "-O", "raw", &s(&ours.join(file)), &s(&view)]);
        both(&ours, &theirs, args).expect_ok();
        same_chains(&ours, &theirs, &[file]);
        if !args.contains(&"-u") {
            qemu_compare(&ours.join(file), "qcow2", &view, "raw");
        }
        let compressed = |p: &Path| {
            let v = qemu_img(&["map", "--output=json", "-f", "qcow2", &s(p)]).json();
            let e = v.as_array().cloned().unwrap_or_default();
            e.iter()
                .filter(|e| e["compressed"] == true)
                .map(|e| (e["start"].as_u64(), e["length"].as_u64()))
                .collect::<Vec<_>>()
        };
        assert_eq!(compressed(&ours.join(file)), compressed(&theirs.join(file)), "{args:?}");
        assert_eq!(compressed(&ours.join(file)).is_empty(), args.contains(&"-u"), "{args:?}");
    }
    let (_d, ours, theirs) = twin(|dir| {
        qemu_img_in(Some(dir), &["create", "-q", "-f", "raw", "r.raw", "1M"]).expect_ok();
        qcow2_chain(dir);
    });
    both(&ours, &theirs, &["rebase", "-c", "-f", "raw", "-b", "base.qcow2", "-F", "qcow2", "r.raw"])
        .expect_code(1)
        .expect_stderr_all(&["compression not supported for this file format"]);
}

/// Onto an image further down its own chain, past the end of a shorter image between:
/// the old chain reads zeros there, the new backing file data, so zeros are written.
#[test]
fn safe_rebase_down_past_a_shorter_image() {
    let (_d, ours, theirs) = twin(|dir| {
        let create = |args: &[&str]| qemu_img_in(Some(dir), args).expect_ok();
        create(&["create", "-q", "-f", "qcow2", "base.qcow2", "4M"]);
        qemu_io("qcow2", &dir.join("base.qcow2"), &["write -P 0x31 0 4M"]);
        create(&["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2", "2M"]);
        qemu_io("qcow2", &dir.join("mid.qcow2"), &["write -P 0x32 1M 64K"]);
        create(&["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", "4M"]);
        qemu_io("qcow2", &dir.join("top.qcow2"), &["write -P 0x33 3M 64K"]);
    });
    let view = ours.join("view.raw");
    qemu_img(&["convert", "-O", "raw", &s(&ours.join("top.qcow2")), &s(&view)]);
    both(&ours, &theirs, &["rebase", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"]);
    same_chains(&ours, &theirs, &["top.qcow2"]);
    qemu_compare(&ours.join("top.qcow2"), "qcow2", &view, "raw");
    qemu_io("qcow2", &ours.join("top.qcow2"), &["read -P 0x31 0 1M", "read -P 0x32 1M 64K", "read -P 0 2M 1M"]);
}

#[test]
fn commit_into_a_qcow2_base_matches_qemu_img() {
    let (_d, ours, theirs) = twin(qcow2_chain);
    let r = both(&ours, &theirs, &["commit", "top.qcow2"]);
    assert_eq!(r.stdout_str(), "Image committed.\n", "{}", r.describe());
    same_chains(&ours, &theirs, &["top.qcow2", "mid.qcow2", "base.qcow2"]);
    assert!(own_clusters(&ours.join("top.qcow2")).is_empty(), "top still holds data");
    assert_eq!(file_len(&ours.join("top.qcow2")), file_len(&theirs.join("top.qcow2")), "emptied overlay's length");
    let mid = qemu_info(&ours.join("mid.qcow2"));
    assert_eq!(mid["virtual-size"], 10 * MIB, "the base grows to the overlay's size: {mid}");
    // And on down: mid (with top's data now) into base, through -b.
    both(&ours, &theirs, &["commit", "-b", "base.qcow2", "top.qcow2"]);
    same_chains(&ours, &theirs, &["top.qcow2", "mid.qcow2", "base.qcow2"]);
}

#[test]
fn commit_into_a_raw_base_matches_qemu_img() {
    let (_d, ours, theirs) = twin(make_chain);
    // mid.qcow2 into base.raw; the overlay emptied as qemu-img empties it.
    let r = both(&ours, &theirs, &["commit", "mid.qcow2"]);
    assert_eq!(r.stdout_str(), "Image committed.\n", "{}", r.describe());
    qemu_compare(&ours.join("base.raw"), "raw", &theirs.join("base.raw"), "raw");
    qemu_compare(&ours.join("top.qcow2"), "qcow2", &theirs.join("top.qcow2"), "qcow2");
    qemu_check_clean(&ours.join("mid.qcow2"));
    assert!(
        own_clusters(&ours.join("mid.qcow2")).is_empty(),
        "mid still holds data: {:?}",
        own_clusters(&ours.join("mid.qcow2"))
    );
    assert_eq!(file_len(&ours.join("mid.qcow2")), file_len(&theirs.join("mid.qcow2")), "emptied overlay's length");
    assert_eq!(chain_names(&ours.join("top.qcow2")), chain_names(&theirs.join("top.qcow2")));
}

#[test]
fn commit_grows_a_smaller_base_and_keeps_the_overlay_with_d() {
    let build = |dir: &Path| {
        qemu_img_in(Some(dir), &["create", "-q", "-f", "raw", "base.raw", "1M"]).expect_ok();
        qemu_io("raw", &dir.join("base.raw"), &["write -P 0x11 0 1M"]);
        qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "ov.qcow2", "3M"])
            .expect_ok();
        qemu_io("qcow2", &dir.join("ov.qcow2"), &["write -P 0x22 512K 100K", "write -P 0x33 2M 64K", "write -z 0 4K"]);
    };
    let (_d, ours, theirs) = twin(build);
    let before = read(&ours.join("ov.qcow2"));
    let r = both(&ours, &theirs, &["commit", "-q", "-d", "ov.qcow2"]);
    assert!(r.stdout.is_empty(), "{}", r.describe());
    assert_eq!(file_len(&ours.join("base.raw")), 3 * MIB, "the base grows to the overlay's size");
    qemu_compare(&ours.join("base.raw"), "raw", &theirs.join("base.raw"), "raw");
    qemu_compare(&ours.join("base.raw"), "raw", &ours.join("ov.qcow2"), "qcow2");
    assert!(read(&ours.join("ov.qcow2")) == before, "-d changed the overlay");
}

#[test]
fn commit_through_the_chain_with_b() {
    let (_d, ours, theirs) = twin(make_chain);
    let (top_before, mid_before) = (read(&ours.join("top.qcow2")), read(&ours.join("mid.qcow2")));
    let r = both(&ours, &theirs, &["commit", "-b", "base.raw", "top.qcow2"]);
    assert_eq!(r.stdout_str(), "Image committed.\n", "{}", r.describe());
    qemu_compare(&ours.join("base.raw"), "raw", &theirs.join("base.raw"), "raw");
    // The top and what lies between keep their data (-b implies -d).
    assert!(read(&ours.join("top.qcow2")) == top_before && read(&ours.join("mid.qcow2")) == mid_before);
    qemu_compare(&ours.join("base.raw"), "raw", &ours.join("top.qcow2"), "qcow2");
}

#[test]
fn rebase_unsafe_rewrites_only_the_header() {
    let (_d, ours, theirs) = twin(|dir| {
        make_chain(dir);
        std::fs::copy(dir.join("base.raw"), dir.join("moved.raw")).unwrap();
        let create = |args: &[&str]| qemu_img_in(Some(dir), args).expect_ok();
        create(&["create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw", "v2.qcow2"]);
        create(&["create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", "orphan.qcow2", "4M"]);
    });
    for args in [
        &["rebase", "-u", "-b", "moved.raw", "-F", "raw", "mid.qcow2"][..],
        &["rebase", "-u", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2"],
        &["rebase", "-u", "-b", "moved.raw", "-F", "raw", "v2.qcow2"],
        // -u opens no backing file: one that is gone is no obstacle.
        &["rebase", "-u", "-b", "base.raw", "-F", "raw", "orphan.qcow2"],
    ] {
        both(&ours, &theirs, args);
        qemu_check_clean(&ours.join(args[args.len() - 1]));
    }
    assert_eq!(chain_names(&ours.join("top.qcow2")), chain_names(&theirs.join("top.qcow2")));
    assert_eq!(chain_names(&ours.join("top.qcow2"))[1].1.as_deref(), Some("moved.raw"));
    qemu_compare(&ours.join("top.qcow2"), "qcow2", &theirs.join("top.qcow2"), "qcow2");
    // No -b in unsafe mode: the backing file is dropped, as qemu-img drops it.
    both(&ours, &theirs, &["rebase", "-u", "mid.qcow2"]);
    assert_eq!(chain_names(&ours.join("mid.qcow2")), chain_names(&theirs.join("mid.qcow2")));
    assert_eq!(chain_names(&ours.join("mid.qcow2")).len(), 1);
    qemu_check_clean(&ours.join("mid.qcow2"));
    // Each header cluster as qemu-img rewrote it, byte for byte (v3 with qemu's feature
    // name table, v2, and a name dropped).
    for n in ["top.qcow2", "mid.qcow2", "v2.qcow2", "orphan.qcow2"] {
        assert!(read(&ours.join(n))[..64 << 10] == read(&theirs.join(n))[..64 << 10], "{n}: header differs");
    }
}

/// A longer name grows into the header cluster; one that does not fit is refused, as
/// qemu-img refuses it, and the image is left as it was.
#[test]
fn rebase_unsafe_fits_the_header_cluster_or_refuses() {
    let (_d, ours, theirs) = twin(|dir| {
        qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "small.qcow2", "1M"])
            .expect_ok();
        qemu_io("qcow2", &dir.join("small.qcow2"), &["write -P 0x5a 0 4K"]);
        let deep = dir.join("d/".repeat(145));
        std::fs::create_dir_all(&deep).unwrap();
        qemu_img_in(Some(&deep), &["create", "-q", "-f", "qcow2", "base.qcow2", "1M"]).expect_ok();
    });
    // Names longer than a file name, in directories that need not exist (-u opens nothing).
    let (fits, too_long) = ("d/".repeat(145) + "base.qcow2", "d/".repeat(195) + "base.qcow2");
    both(&ours, &theirs, &["rebase", "-u", "-b", &fits, "-F", "qcow2", "small.qcow2"]);
    let (o, t) = (ours.join("small.qcow2"), theirs.join("small.qcow2"));
    assert_eq!(qemu_info(&o)["backing-filename"].as_str(), Some(fits.as_str()));
    qemu_check_clean(&o);
    // The header cluster as qemu-img lays it out (the feature name table left out: it no
    // longer fits beside the name).
    assert_eq!(read(&o)[..512], read(&t)[..512], "header cluster differs from qemu-img's");
    let before = read(&ours.join("small.qcow2"));
    both(&ours, &theirs, &["rebase", "-u", "-b", &too_long, "-F", "qcow2", "small.qcow2"])
        .expect_code(1)
        .expect_stderr_all(&["no space left in the file header"]);
    assert!(read(&ours.join("small.qcow2")) == before, "a refused rebase changed the image");
}

#[test]
fn convert_b_writes_only_what_differs() {
    let build = |dir: &Path| {
        qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "base.qcow2", "8M"]).expect_ok();
        qemu_io("qcow2", &dir.join("base.qcow2"), &["write -P 0xaa 0 4M"]);
        qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2"])
            .expect_ok();
        // New data, zeros over backing data, and a write of what the base already holds.
        qemu_io(
            "qcow2",
            &dir.join("ov.qcow2"),
            &["write -P 0xcc 2M 64K", "write -z 1M 128K", "write -P 0xaa 3M 64K", "write -P 0xdd 6M 64K"],
        );
        qemu_img_in(Some(dir), &["convert", "-O", "raw", "ov.qcow2", "flat.raw"]).expect_ok();
    };
    let (_d, ours, theirs) = twin(build);
    for (src, out) in [("ov.qcow2", "out.qcow2"), ("flat.raw", "flat-out.qcow2")] {
        both(&ours, &theirs, &["convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", src, out]);
        let (o, t) = (ours.join(out), theirs.join(out));
        qemu_check_clean(&o);
        qemu_compare(&o, "qcow2", &t, "qcow2");
        qemu_compare(&o, "qcow2", &ours.join(src), if src.ends_with("raw") { "raw" } else { "qcow2" });
        assert_eq!(chain_names(&o), chain_names(&t), "the backing name and format recorded");
        // From the overlay: qemu-img's clusters but the one equal to the base's.
        // From the flat copy: only what differs (qemu-img copies all the data there).
        let (mine, qemus) = (own_bytes(&o), own_bytes(&t));
        assert_eq!(mine, 128 * KIB, "{src}: ours {:?}, qemu-img's {:?}", own_clusters(&o), own_clusters(&t));
        assert!(mine <= qemus, "{src}: ours {mine} bytes of data, qemu-img's {qemus}");
        let zeros: Vec<_> = own_clusters(&o).into_iter().filter(|e| e.2).collect();
        assert_eq!(zeros, [(MIB, 128 * KIB, true, false)], "the zeroed range is zero clusters over the base");
    }
}

/// Refusals: the same exit status as qemu-img's, and a message saying the same thing.
#[test]
fn refusals_exit_as_qemu_img_does() {
    let (_d, ours, theirs) = twin(|dir| {
        make_chain(dir);
        qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "other.qcow2", "4M"]).expect_ok();
        qemu_img_in(Some(dir), &["create", "-q", "-f", "vmdk", "disk.vmdk", "4M"]).expect_ok();
        qemu_img_in(
            Some(dir),
            &["create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", "orphan.qcow2", "4M"],
        )
        .expect_ok();
        std::fs::copy(dir.join("base.raw"), dir.join("src.raw")).unwrap();
    });
    let cases: &[(&[&str], &[&str])] = &[
        (&["commit", "base.raw"], &["does not have a backing file"]),
        (&["commit", "-b", "other.qcow2", "top.qcow2"], &["did not find", "backing chain"]),
        (&["commit", "-r", "fast", "top.qcow2"], &["invalid rate limit"]),
        (&["commit", "orphan.qcow2"], &["gone.qcow2"]),
        (&["rebase", "top.qcow2"], &["must specify backing file"]),
        (&["rebase", "-u", "-b", "base.raw", "top.qcow2"], &["backing format must be specified"]),
        (&["rebase", "-b", "nosuch.qcow2", "-F", "qcow2", "top.qcow2"], &["nosuch.qcow2"]),
        (&["rebase", "-b", "src.raw", "-F", "qcow2", "top.qcow2"], &["src.raw"]),
        (&["rebase", "-b", "base.raw", "-F", "raw", "orphan.qcow2"], &["gone.qcow2"]),
        (&["rebase", "-u", "-b", "base.raw", "-F", "raw", "disk.vmdk"], &["operation not supported"]),
        (&["convert", "-O", "qcow2", "-B", "base.raw", "src.raw", "o1.qcow2"], &["requires explicit backing format"]),
        (&["convert", "-O", "qcow2", "-F", "raw", "src.raw", "o2.qcow2"], &["cannot be used without backing file"]),
        (
            &["convert", "-O", "raw", "-B", "base.raw", "-F", "raw", "src.raw", "o3.raw"],
            &["not supported for file format"],
        ),
        (&["convert", "-O", "qcow2", "-B", "nosuch.raw", "-F", "raw", "src.raw", "o4.qcow2"], &["nosuch.raw"]),
    ];
    for (args, words) in cases {
        let before = read(&ours.join("top.qcow2"));
        both(&ours, &theirs, args).expect_code(1).expect_diskcast_error().expect_stderr_all(words);
        assert!(read(&ours.join("top.qcow2")) == before, "{args:?} changed top.qcow2");
    }
    for out in ["o1.qcow2", "o2.qcow2", "o3.raw", "o4.qcow2"] {
        assert!(!ours.join(out).exists(), "{out} was left behind");
    }
}

/// An overlay, or a backing file, a VM (here qemu-io) has open for writing is refused by
/// both, and nothing is changed.
#[test]
fn an_image_in_use_is_refused() {
    let (_d, ours, theirs) = twin(|dir| {
        make_chain(dir);
        qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "other.qcow2", "4M"]).expect_ok();
    });
    let cases: &[(&str, &[&str])] = &[
        ("top.qcow2", &["commit", "top.qcow2"]),
        ("top.qcow2", &["rebase", "-u", "-b", "base.raw", "-F", "raw", "top.qcow2"]),
        ("mid.qcow2", &["commit", "top.qcow2"]),
        ("other.qcow2", &["rebase", "-b", "other.qcow2", "-F", "qcow2", "top.qcow2"]),
        ("mid.qcow2", &["rebase", "-b", "other.qcow2", "-F", "qcow2", "top.qcow2"]),
    ];
    for (held, args) in cases {
        let _holders = [QemuHolder::start("qcow2", &ours.join(held)), QemuHolder::start("qcow2", &theirs.join(held))];
        let before = [read(&ours.join("top.qcow2")), read(&ours.join("mid.qcow2"))];
        both(&ours, &theirs, args).expect_code(1).expect_stderr_any(&["in use", "lock"]);
        assert!([read(&ours.join("top.qcow2")), read(&ours.join("mid.qcow2"))] == before, "{args:?} wrote");
    }
}

/// Overlays qemu cannot empty completely (qcow2 v2, internal snapshots) are emptied as
/// qemu-img empties them, every cluster discarded: the bases identical, each overlay
/// reading through to its base (`qemu-img map` the same, host offsets aside), check
/// clean, the snapshot kept and readable. An overlay with persistent bitmaps (which
/// qemu-img marks dirty while it empties it) is refused unless -d, before anything is
/// written; with -d the commit is qemu-img's.
#[test]
fn commit_empties_v2_and_snapshotted_overlays_like_qemu_img() {
    let (_d, ours, theirs) = twin(|dir| {
        qemu_img_in(Some(dir), &["create", "-q", "-f", "raw", "base.raw", "2M"]).expect_ok();
        qemu_img_in(Some(dir), &["create", "-q", "-f", "qcow2", "base2.qcow2", "2M"]).expect_ok();
        let v2 = ["create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw", "v2.qcow2"];
        qemu_img_in(Some(dir), &v2).expect_ok();
        qemu_io("qcow2", &dir.join("v2.qcow2"), &["write -P 0x42 64K 128K"]);
        let sn = ["create", "-q", "-f", "qcow2", "-b", "base2.qcow2", "-F", "qcow2", "sn.qcow2"];
        qemu_img_in(Some(dir), &sn).expect_ok();
        qemu_io("qcow2", &dir.join("sn.qcow2"), &["write -P 0x43 0 1M"]);
        qemu_img_in(Some(dir), &["snapshot", "-c", "s1", "sn.qcow2"]).expect_ok();
        qemu_io("qcow2", &dir.join("sn.qcow2"), &["write -P 0x44 512K 64K"]);
    });
    for (top, base, fmt) in [("v2.qcow2", "base.raw", "raw"), ("sn.qcow2", "base2.qcow2", "qcow2")] {
        both(&ours, &theirs, &["commit", top]).expect_ok();
        qemu_compare(&ours.join(base), fmt, &theirs.join(base), fmt);
        qemu_compare(&ours.join(top), "qcow2", &theirs.join(top), "qcow2");
        qemu_check_clean(&ours.join(top));
        assert_eq!(qemu_map_view(&ours.join(top), "qcow2"), qemu_map_view(&theirs.join(top), "qcow2"), "{top}");
    }
    let (a, b) = (ours.join("s1-ours.raw"), ours.join("s1-qemu.raw"));
    qemu_img(&["convert", "-l", "s1", "-O", "raw", &s(&ours.join("sn.qcow2")), &s(&a)]);
    qemu_img(&["convert", "-l", "s1", "-O", "raw", &s(&theirs.join("sn.qcow2")), &s(&b)]);
    qemu_compare(&a, "raw", &b, "raw");
    let (_d, ours, theirs) = twin(|dir| {
        qemu_img_in(Some(dir), &["create", "-q", "-f", "raw", "base.raw", "2M"]).expect_ok();
        let bm = ["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "bm.qcow2"];
        qemu_img_in(Some(dir), &bm).expect_ok();
        qemu_io("qcow2", &dir.join("bm.qcow2"), &["write -P 0x42 64K 128K"]);
        qemu_img_in(Some(dir), &["bitmap", "--add", "bm.qcow2", "b0"]).expect_ok();
    });
    let before = read(&ours.join("base.raw"));
    dc_in(Some(&ours), &["commit", "bm.qcow2"]).expect_code(1).expect_diskcast_error().expect_stderr_all(&["-d"]);
    assert!(read(&ours.join("base.raw")) == before, "a refused commit wrote the base");
    both(&ours, &theirs, &["commit", "-d", "bm.qcow2"]).expect_ok();
    qemu_compare(&ours.join("base.raw"), "raw", &theirs.join("base.raw"), "raw");
    qemu_compare(&ours.join("base.raw"), "raw", &ours.join("bm.qcow2"), "qcow2");
}
