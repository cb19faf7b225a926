//! Images opened from byte sources that are not files: a range of a file (a partition),
//! memory, and a range of another image's guest disk. qemu-img judges the content from
//! a standalone copy of the same bytes; files named inside such images are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_block::gate::Gate;
use diskcast_block::registry::{OpenContext, Registry};
use diskcast_block::source::{DiskSource, MemSource, SliceSource, Source, open_file};
use diskcast_block::{BlockRead, ErrorKind, Result};
use diskcast_testkit as tk;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

fn open_source(reg: &Registry, src: Source, format: Option<&str>) -> Result<Box<dyn BlockRead>> {
    let gate = Gate::new();
    reg.open_source(src, format, &OpenContext::new(reg, &gate))
}

/// A qemu-made qcow2 with data, zeros and holes.
fn qcow2(dir: &Path, name: &str, opts: &str) -> PathBuf {
    let p = dir.join(name);
    tk::qemu_create("qcow2", &p, "6M", opts);
    tk::qemu_io(
        "qcow2",
        &p,
        &["write -P 0x11 0 64k", "write -P 0x22 1M 300k", "write -z 3M 1M", "write -P 0x33 5M 4k"],
    );
    p
}

/// `inner`'s bytes at `at` inside a new raw file of `at + len + tail` bytes; returns the
/// file and `len`.
fn embed(dir: &Path, name: &str, inner: &Path, at: u64, tail: u64) -> (PathBuf, u64) {
    let bytes = std::fs::read(inner).unwrap();
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(at + bytes.len() as u64 + tail).unwrap();
    // Only blocks holding data are written, so the inner image's holes stay holes.
    for (i, block) in bytes.chunks(4096).enumerate() {
        if block.iter().any(|&b| b != 0) {
            tk::patch(&p, at + i as u64 * 4096, block);
        }
    }
    (p, bytes.len() as u64)
}

fn partition(disk: &Path, at: u64, len: u64) -> Source {
    Arc::new(SliceSource::new("disk.raw partition 1", open_file(disk).unwrap(), at, len).unwrap())
}

#[test]
fn qcow2_in_a_partition_of_a_raw_file_reads_as_qemu_reads_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let reg = diskcast_formats::registry();
    let inner = qcow2(dir.path(), "inner.qcow2", "");
    let (disk, len) = embed(dir.path(), "disk.raw", &inner, 2 * MIB, MIB);
    let part = partition(&disk, 2 * MIB, len);
    // Probed from its content, not a name.
    let img = open_source(&reg, part.clone(), None).unwrap();
    assert_eq!(img.info().format, "qcow2");
    tk::assert_matches_qemu(img.as_ref(), &inner, "qcow2", dir.path());
    // Its check runs from the partition too.
    let gate = Gate::new();
    let rep = reg.get("qcow2").unwrap().check(part, &OpenContext::new(&reg, &gate)).unwrap();
    assert_eq!((rep.corruptions, rep.leaks, rep.check_errors), (0, 0, 0), "{:?}", rep.messages);
}

/// A qemu-made raw disk of `size` with data, zeros and holes, converted by qemu-img to
/// `fmt` with `opts`.
fn converted(dir: &Path, name: &str, size: &str, fmt: &str, opts: &str) -> PathBuf {
    let raw = dir.join(format!("{name}.src.raw"));
    tk::qemu_create("raw", &raw, size, "");
    tk::qemu_io(
        "raw",
        &raw,
        &["write -P 0x41 0 64k", "write -P 0x42 1M 100k", "write -z 2M 512k", "write -P 0x43 3M 4k"],
    );
    let p = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([raw.to_str().unwrap(), p.to_str().unwrap()]);
    tk::qemu_img(&args);
    p
}

#[test]
fn every_format_opens_from_memory_as_qemu_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let reg = diskcast_formats::registry();
    for (i, (ours, theirs, opts)) in [
        ("qcow2", "qcow2", "compat=0.10"),
        ("vmdk", "vmdk", "subformat=streamOptimized"),
        ("vmdk", "vmdk", ""),
        ("vhd", "vpc", ""),
        ("vhd", "vpc", "subformat=fixed"),
        ("vhdx", "vhdx", ""),
        ("vdi", "vdi", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let p = converted(dir.path(), &format!("m{i}.{ours}"), "4M", theirs, opts);
        let mem: Source =
            Arc::new(MemSource::new(format!("memory copy of {}", p.display()), std::fs::read(&p).unwrap()));
        let img = open_source(&reg, mem, Some(ours)).unwrap_or_else(|e| panic!("{ours} {opts}: {e}"));
        tk::assert_matches_qemu(img.as_ref(), &p, theirs, dir.path());
    }
    // Raw from memory has no holes to report, so only its bytes are compared; raw from a
    // range of a sparse file keeps the file's holes, and qemu's map agrees.
    let p = converted(dir.path(), "r.raw", "4M", "raw", "");
    let mem: Source = Arc::new(MemSource::new("raw in memory", std::fs::read(&p).unwrap()));
    let img = open_source(&reg, mem, Some("raw")).unwrap();
    assert_eq!(tk::read_all(img.as_ref()), tk::qemu_raw(&p, "raw", dir.path()));
    let (disk, len) = embed(dir.path(), "disk.raw", &p, MIB, MIB);
    let img = open_source(&reg, partition(&disk, MIB, len), Some("raw")).unwrap();
    tk::assert_matches_qemu(img.as_ref(), &p, "raw", dir.path());
}

#[test]
fn vmdk_inside_the_guest_disk_of_a_qcow2_reads_as_qemu_reads_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let reg = diskcast_formats::registry();
    let inner = converted(dir.path(), "inner.vmdk", "5M", "vmdk", "subformat=streamOptimized");
    // The vmdk's bytes at 1 MiB of a raw disk, which qemu converts to a qcow2.
    let (disk, len) = embed(dir.path(), "outer.raw", &inner, MIB, 3 * MIB);
    let outer = dir.path().join("outer.qcow2");
    tk::qemu_img(&["convert", "-f", "raw", "-O", "qcow2", disk.to_str().unwrap(), outer.to_str().unwrap()]);
    let outer_img: Arc<dyn BlockRead> = tk::open_with(&reg, &outer, Some("qcow2")).unwrap().into();
    let src: Source = Arc::new(DiskSource::new("outer.qcow2 at 1 MiB", outer_img, MIB, len).unwrap());
    let img = open_source(&reg, src, None).unwrap();
    assert_eq!(img.info().format, "vmdk");
    tk::assert_matches_qemu(img.as_ref(), &inner, "vmdk", dir.path());
}

#[test]
fn images_not_in_a_file_refuse_the_files_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let reg = diskcast_formats::registry();
    qcow2(dir.path(), "base.qcow2", "");
    let top = dir.path().join("top.qcow2");
    tk::qemu_create("qcow2", &top, "6M", "backing_file=base.qcow2,backing_fmt=qcow2");
    // From its file the backing file beside it opens; from a partition it is refused.
    assert!(tk::open_with(&reg, &top, None).unwrap().backing().is_some());
    let (disk, len) = embed(dir.path(), "disk.raw", &top, MIB, 0);
    let part = partition(&disk, MIB, len);
    let e = open_source(&reg, part.clone(), None).unwrap_err();
    tk::assert_error(&e, ErrorKind::Refused, "not read from a file on disk");
    assert_eq!(e.field(), Some("backing_file"), "{e}");
    assert_eq!(e.file(), Some(Path::new("disk.raw partition 1")), "{e}");
    // Described without its backing file it still opens (as `info` does).
    let gate = Gate::new();
    let img = reg.open_source(part, None, &OpenContext::without_backing(&reg, &gate)).unwrap();
    assert_eq!(img.info().backing_file.as_deref(), Some("base.qcow2"));

    // A VMDK descriptor in memory cannot reach its extent file.
    let flat = dir.path().join("f.vmdk");
    tk::qemu_create("vmdk", &flat, "1M", "subformat=monolithicFlat");
    let mem: Source = Arc::new(MemSource::new("f.vmdk in memory", std::fs::read(&flat).unwrap()));
    assert!(mem.file_path().is_none());
    let e = open_source(&reg, mem, Some("vmdk")).unwrap_err();
    tk::assert_error(&e, ErrorKind::Refused, "not read from a file on disk");
    assert_eq!(e.field(), Some("extent"), "{e}");
}

#[test]
fn vmdk_in_an_ova_reads_from_its_tar_member_as_qemu_reads_it_alone() {
    // An OVA is a tar of an OVF descriptor and streamOptimized disks, made here by bsdtar.
    let dir = tempfile::tempdir().unwrap();
    let reg = diskcast_formats::registry();
    let disk = converted(dir.path(), "disk1.vmdk", "5M", "vmdk", "subformat=streamOptimized");
    std::fs::write(dir.path().join("appliance.ovf"), "<Envelope/>\n").unwrap();
    let ova = dir.path().join("appliance.ova");
    tk::run(
        "bsdtar",
        &[
            "--format",
            "ustar",
            "-cf",
            ova.to_str().unwrap(),
            "-C",
            dir.path().to_str().unwrap(),
            "appliance.ovf",
            "disk1.vmdk",
        ],
    );
    let mut tar = diskcast_tar::TarReader::from_file(std::fs::File::open(&ova).unwrap(), "appliance.ova").unwrap();
    let mut member = None;
    while let Some(m) = tar.next_member().unwrap() {
        if m.path == b"disk1.vmdk" {
            member = Some(m);
        }
    }
    let m = member.expect("disk1.vmdk in the OVA");
    assert!(m.sparse.is_none() && m.data_len == m.size);
    let src: Source = Arc::new(
        SliceSource::new("appliance.ova:disk1.vmdk", open_file(&ova).unwrap(), m.data_offset, m.size).unwrap(),
    );
    let img = open_source(&reg, src, None).unwrap();
    assert_eq!(img.info().format, "vmdk");
    tk::assert_matches_qemu(img.as_ref(), &disk, "vmdk", dir.path());
}
