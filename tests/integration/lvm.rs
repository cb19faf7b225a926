//! LVM2 logical volumes read out of disk images: the PVs, VGs and LVs are made by lvm2's
//! own `pvcreate`/`vgcreate`/`lvcreate`/`lvextend` on loop devices over a disk's
//! partitions, the ext4 by `mkfs.ext4 -d`, written where lvm2's own `lvs` report
//! (`seg_pe_ranges`) puts each segment; `lvs`/`pvs --reportformat json` are the oracle
//! of the listing, and the source directory the oracle of the files.
//!
//! There is no device-mapper in the test container, so lvm2 runs with
//! `--driverloaded n` (metadata only, nothing activated) and without udev
//! (`obtain_device_list_from_udev=0`, `udev_sync=0`); each test's lvm2 sees only its own
//! loop devices (a filter), so tests running in parallel do not see each other's PVs.

use crate::support::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

/// Partition `n`'s first byte and length, as `sgdisk -i` reports them.
fn part_range(disk: &Path, n: u32) -> (u64, u64) {
    let info = tool_out("sgdisk", &["-i", &n.to_string(), &s(disk)]);
    let field = |name: &str| -> u64 {
        let line = info.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("sgdisk -i: no {name}: {info}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let (first, last) = (field("First sector:"), field("Last sector:"));
    (first * 512, (last - first + 1) * 512)
}

/// A loop device over one partition of a disk image (lvm2 works on block devices).
fn part_loop(disk: &Path, n: u32) -> (Loop, u64) {
    let (off, len) = part_range(disk, n);
    let (o, l) = (off.to_string(), len.to_string());
    let dev = tool_out("losetup", &["-f", "--show", "-o", &o, "--sizelimit", &l, &s(disk)]).trim().to_string();
    assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
    (Loop { dev }, off)
}

/// lvm2 on exactly `devs`, without udev, device-mapper or backup files.
fn lvm(devs: &[&str], cmd: &str, args: &[&str]) -> String {
    let accept: Vec<String> = devs.iter().map(|d| format!("\"a|^{d}$|\"")).collect();
    let config = format!(
        "devices {{ obtain_device_list_from_udev=0 filter=[{0}, \"r|.*|\"] global_filter=[{0}, \"r|.*|\"] }} \
         activation {{ udev_sync=0 udev_rules=0 }} backup {{ backup=0 archive=0 }}",
        accept.join(", ")
    );
    let out = Command::new(cmd)
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is required (install lvm2): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd} {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// `lvs`' rows (one per segment) as JSON objects.
fn lvs_segments(devs: &[&str], vg: &str) -> Vec<Value> {
    let j = lvm(
        devs,
        "lvs",
        &[
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_name,vg_name,lv_size,seg_count,segtype,seg_start,seg_size,seg_pe_ranges,stripe_size",
            vg,
        ],
    );
    let v: Value = serde_json::from_str(&j).unwrap();
    v["report"][0]["lv"].as_array().unwrap().clone()
}

/// `pvs`' report: each PV's device, VG, first extent's offset and uuid.
fn pvs_report(devs: &[&str]) -> Value {
    let j = lvm(
        devs,
        "pvs",
        &["--reportformat", "json", "--units", "b", "--nosuffix", "-o", "pv_name,vg_name,pe_start,pv_uuid"],
    );
    serde_json::from_str(&j).unwrap()
}

fn num(v: &Value) -> u64 {
    v.as_str().unwrap().trim().parse().unwrap()
}

/// Writes `fs` into the LV `lv` where lvm2 reports its extents: each segment's
/// `seg_pe_ranges` (`/dev/loopN:A-B`, one range per stripe) on the PV whose loop device
/// is `pvs[i].0`, starting at `pvs[i].1` on the disk, after the PV's `pe_start`. Striped
/// segments follow dm-stripe's layout (chunk k on stripe k mod n).
fn place(disk: &Path, fs: &[u8], segs: &[Value], lv: &str, pvs: &[(&str, u64)], pe_start: u64, extent: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    for seg in segs.iter().filter(|s| s["lv_name"] == lv) {
        let (start, size) = (num(&seg["seg_start"]), num(&seg["seg_size"]));
        let ranges: Vec<u64> = seg["seg_pe_ranges"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .map(|r| {
                let (dev, ext) = r.split_once(':').unwrap();
                let first: u64 = ext.split('-').next().unwrap().parse().unwrap();
                let base = pvs.iter().find(|p| p.0 == dev).unwrap_or_else(|| panic!("{dev} not one of ours")).1;
                base + pe_start + first * extent
            })
            .collect();
        let chunk = num(&seg["stripe_size"]);
        let n = ranges.len() as u64;
        let step = if n == 1 { size } else { chunk };
        let mut off = 0;
        while off < size {
            let k = off / step;
            let at = ranges[(k % n) as usize] + (k / n) * step;
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&fs[(start + off) as usize..(start + off + step) as usize]).unwrap();
            off += step;
        }
    }
}

fn source_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("etc/deep")).unwrap();
    write_file(&root.join("etc/hostname"), format!("lvm-box-{seed}\n").as_bytes());
    write_file(&root.join("etc/deep/data"), &pseudo_random(3_000_000, seed));
    std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
}

fn mkfs_ext4(dir: &Path, src: &Path, name: &str, size: u64) -> Vec<u8> {
    let p = dir.join(name);
    tool_text("mkfs.ext4", &["-q", "-F", "-d", &s(src), &s(&p), &format!("{}K", size / 1024)]);
    let b = read(&p);
    std::fs::remove_file(&p).unwrap();
    b
}

/// A GPT disk (ESP with FAT, two LVM partitions) holding one VG over both PVs: `root`
/// linear and extended (two segments), `data` striped over both PVs, `other` empty.
struct LvmDisk {
    _dir: tempfile::TempDir,
    qcow2: std::path::PathBuf,
    raw: std::path::PathBuf,
    segs: Vec<Value>,
    pvs_json: Value,
    src_root: std::path::PathBuf,
    src_data: std::path::PathBuf,
}

fn lvm_disk(vg: &str) -> LvmDisk {
    let d = tmp();
    let raw = d.path().join("disk.raw");
    std::fs::File::create(&raw).unwrap().set_len(96 * MIB).unwrap();
    tool_text("sgdisk", &["-n1:2048:+8M", "-t1:ef00", "-n2:0:+40M", "-t2:8e00", "-n3:0:0", "-t3:8e00", &s(&raw)]);
    let (l2, p2) = part_loop(&raw, 2);
    let (l3, p3) = part_loop(&raw, 3);
    let devs = [l2.dev.as_str(), l3.dev.as_str()];
    let na = ["--driverloaded", "n", "-an", "-Zn", "-y"];
    lvm(&devs, "pvcreate", &devs);
    lvm(&devs, "vgcreate", &["-s", "1M", vg, devs[0], devs[1]]);
    lvm(&devs, "lvcreate", &[&na[..], &["-L", "8M", "-n", "root", vg, devs[0]]].concat());
    lvm(&devs, "lvcreate", &[&na[..], &["-L", "4M", "-n", "other", vg, devs[0]]].concat());
    lvm(&devs, "lvextend", &["--driverloaded", "n", "-L", "16M", &format!("{vg}/root"), devs[0]]);
    lvm(&devs, "lvcreate", &[&na[..], &["-i", "2", "-I", "64k", "-L", "8M", "-n", "data", vg]].concat());
    let segs = lvs_segments(&devs, vg);
    let pvs_json = pvs_report(&devs);
    let pe_start = num(&pvs_json["report"][0]["pv"][0]["pe_start"]);
    assert_eq!(pe_start, num(&pvs_json["report"][0]["pv"][1]["pe_start"]));
    let extent: u64 = lvm(&devs, "vgs", &["--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", vg])
        .trim()
        .parse()
        .unwrap();
    let pvs = [(devs[0], p2), (devs[1], p3)];

    let (src_root, src_data) = (d.path().join("src-root"), d.path().join("src-data"));
    source_tree(&src_root, 1);
    source_tree(&src_data, 2);
    let root_fs = mkfs_ext4(d.path(), &src_root, "root.ext4", 16 * MIB);
    place(&raw, &root_fs, &segs, "root", &pvs, pe_start, extent);
    let data_fs = mkfs_ext4(d.path(), &src_data, "data.ext4", 8 * MIB);
    place(&raw, &data_fs, &segs, "data", &pvs, pe_start, extent);
    drop((l2, l3));
    // A FAT ESP, so the root choice has a filesystem to pass over.
    let esp = d.path().join("esp.fat");
    tool_text("mkfs.fat", &["-C", &s(&esp), "8192"]);
    tool_text("dd", &[&format!("if={}", s(&esp)), &format!("of={}", s(&raw)), "bs=1M", "seek=1", "conv=notrunc"]);

    let qcow2 = d.path().join("disk.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&raw), &s(&qcow2)]);
    LvmDisk { qcow2, raw, segs, pvs_json, src_root, src_data, _dir: d }
}

fn same_tree(disk_spec: &str, src: &Path, out: &Path) {
    dc_ok(&["extract", disk_spec, &s(out)]);
    for f in ["etc/hostname", "etc/deep/data"] {
        assert_eq!(read(&out.join(f)), read(&src.join(f)), "{disk_spec}: {f}");
    }
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), Path::new("etc/hostname"));
}

#[test]
fn linear_and_striped_lvs_read_where_lvm2_maps_them() {
    let t = lvm_disk("dclvm1");
    let q = s(&t.qcow2);
    // root has two segments, data one striped segment over both PVs, as lvm2 made them.
    let rows = |lv: &str| t.segs.iter().filter(|r| r["lv_name"] == lv).collect::<Vec<_>>();
    assert_eq!(rows("root").len(), 2, "{:?}", t.segs);
    assert_eq!(rows("data")[0]["segtype"], "striped");
    assert_eq!(rows("data")[0]["seg_pe_ranges"].as_str().unwrap().split_whitespace().count(), 2);

    // ls/cat/extract through VG/LV and LV names, out of the qcow2.
    let ls = dc_ok(&["ls", &format!("{q}:dclvm1/root"), "/etc"]).stdout_str();
    assert!(ls.contains("hostname") && ls.contains("deep"), "{ls}");
    assert_eq!(dc_ok(&["cat", &format!("{q}:root"), "/link"]).stdout, b"lvm-box-1\n");
    let d = tmp();
    same_tree(&format!("{q}:dclvm1/root"), &t.src_root, &d.path().join("root"));
    same_tree(&format!("{q}:data"), &t.src_data, &d.path().join("data"));
    // Without a selector the LV named root is the disk's tree, not the ESP.
    same_tree(&q, &t.src_root, &d.path().join("chosen"));

    // info lists every LV and segment as lvs does: sizes, types, starts, and each
    // stripe's PV (by uuid, through pvs) and first extent.
    let info = dc_ok(&["info", "--output", "json", &q]).json();
    let ours = info["logical-volumes"].as_array().unwrap();
    let uuid_of = |dev: &str| {
        let pvs = t.pvs_json["report"][0]["pv"].as_array().unwrap();
        pvs.iter().find(|p| p["pv_name"] == dev).unwrap()["pv_uuid"].as_str().unwrap().to_string()
    };
    let mut rows = 0;
    for r in &t.segs {
        let lv =
            ours.iter().find(|l| l["vg"] == "dclvm1" && l["name"] == r["lv_name"]).unwrap_or_else(|| panic!("{r}"));
        assert_eq!(lv["size"].as_u64().unwrap(), num(&r["lv_size"]), "{r}");
        let segs = lv["segments"].as_array().unwrap();
        assert_eq!(segs.len() as u64, num(&r["seg_count"]), "{r}");
        let seg = segs.iter().find(|x| x["start"].as_u64() == Some(num(&r["seg_start"]))).unwrap();
        assert_eq!(seg["size"].as_u64().unwrap(), num(&r["seg_size"]), "{r}");
        assert_eq!(seg["type"], r["segtype"], "{r}");
        assert_eq!(seg["stripe-size"].as_u64().unwrap(), num(&r["stripe_size"]), "{r}");
        let ranges: Vec<(String, u64)> = r["seg_pe_ranges"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .map(|x| {
                let (dev, ext) = x.split_once(':').unwrap();
                (uuid_of(dev), ext.split('-').next().unwrap().parse().unwrap())
            })
            .collect();
        let stripes: Vec<(String, u64)> = seg["stripes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["pv-uuid"].as_str().unwrap().to_string(), x["extent"].as_u64().unwrap()))
            .collect();
        assert_eq!(stripes, ranges, "{r}");
        rows += 1;
    }
    assert_eq!(rows, 4);
    assert_eq!(ours.len(), 3, "{ours:?}");
    let human = dc_ok(&["info", &q]).stdout_str();
    assert!(human.contains("dclvm1/root (16 MiB, 2 segments)"), "{human}");
    // A wrong name lists the LVs too.
    dc(&["ls", &format!("{q}:nothing")])
        .expect_diskcast_error()
        .expect_stderr_all(&["dclvm1/root (16 MiB, 2 segments)", "dclvm1/data (8 MiB, 1 segment)"]);
    assert_eq!(t.pvs_json["report"][0]["pv"].as_array().unwrap().len(), 2);
    // An LV with no filesystem says so, naming the LV.
    dc(&["ls", &format!("{q}:dclvm1/other")]).expect_diskcast_error().expect_stderr_all(&["dclvm1/other"]);
}

#[test]
fn a_vg_whose_pv_is_missing_refuses_the_lvs_on_it() {
    let t = lvm_disk("dclvm2");
    // Wipe partition 3's PV label: the VG's metadata (on partition 2 too) still names it.
    patch(&t.raw, part_range(&t.raw, 3).0, &[0u8; 2048]);
    let r = s(&t.raw);
    // root lies on partition 2 only and still reads; data is striped onto the lost PV.
    assert_eq!(dc_ok(&["cat", &format!("{r}:dclvm2/root"), "/etc/hostname"]).stdout, b"lvm-box-1\n");
    let uuid = t.pvs_json["report"][0]["pv"][1]["pv_uuid"].as_str().unwrap().to_string();
    dc(&["ls", &format!("{r}:dclvm2/data")]).expect_diskcast_error().expect_stderr_all(&[
        "dclvm2/data",
        "not on this disk",
        &uuid,
    ]);
}

/// Rewrites the committed metadata text of the PV at `pv` (bytes into `disk`) with
/// `edit` applied, and fixes the text's and the header's CRCs with Python's zlib (LVM's
/// CRC is CRC-32 seeded with 0xf597a6cf, not inverted at the end), or with `bad_crc`
/// leaves the text's CRC stale.
fn rewrite_metadata(disk: &Path, pv: u64, edit: &str, bad_crc: bool) {
    let script = format!(
        r#"
import struct, sys, zlib
def crc(b): return (~zlib.crc32(b, (~0xf597a6cf) & 0xffffffff)) & 0xffffffff
f = open(sys.argv[1], 'r+b'); pv = {pv}
f.seek(pv); head = f.read(2048)
lab = next(i for i in range(4) if head[i*512:i*512+8] == b'LABELONE') * 512
hdr = lab + struct.unpack_from('<I', head, lab + 20)[0]
at = hdr + 40
while struct.unpack_from('<Q', head, at)[0]: at += 16
at += 16
mda, mda_size = struct.unpack_from('<QQ', head, at)
f.seek(pv + mda); h = bytearray(f.read(512))
off, size, ck, fl = struct.unpack_from('<QQII', h, 40)
f.seek(pv + mda + off); text = f.read(size).rstrip(b'\0').decode()
new = (lambda text: {edit})(text).encode() + b'\0'
f.seek(pv + mda + off); f.write(new)
struct.pack_into('<QQII', h, 40, off, len(new), crc(new) ^ ({bad}), fl)
struct.pack_into('<I', h, 0, crc(bytes(h[4:])))
f.seek(pv + mda); f.write(h)
"#,
        bad = if bad_crc { 1 } else { 0 }
    );
    tool_text("python3", &["-c", &script, &s(disk)]);
}

#[test]
fn hostile_and_unsupported_metadata_is_refused_naming_the_field() {
    let t = lvm_disk("dclvm3");
    let pv = part_range(&t.raw, 2).0;
    let d = tmp();
    let case = |name: &str, edit: &str, bad: bool, words: &[&str]| {
        let img = d.path().join(format!("{name}.raw"));
        std::fs::copy(&t.raw, &img).unwrap();
        // Partition 3's PV carries the same metadata: wipe its label so ours is the one read.
        patch(&img, part_range(&img, 3).0, &[0u8; 2048]);
        rewrite_metadata(&img, pv, edit, bad);
        dc_bounded(&["ls", &format!("{}:dclvm3/root", s(&img))], 20, 512 << 20)
            .run
            .expect_diskcast_error()
            .expect_stderr_all(words);
    };
    case("crc", "text", true, &["raw_locn.checksum"]);
    case("deep", "text.replace('logical_volumes {', 'logical_volumes {' + 'x {' * 5000, 1)", false, &["MAX_DEPTH"]);
    case("past", "text.replace('\"pv0\", 0', '\"pv0\", 100000', 1)", false, &["dclvm3/root", "past its end"]);
    case(
        "thin",
        "text.replace('type = \"striped\"', 'type = \"thin\"', 1)",
        false,
        &["LV dclvm3/root is a thin volume", "linear"],
    );
    case("raid", "text.replace('type = \"striped\"', 'type = \"raid1\"', 1)", false, &["dclvm3/root is a RAID volume"]);
}

#[test]
fn a_whole_disk_pv_gives_its_one_linux_lv_and_lists_several() {
    let d = tmp();
    let raw = d.path().join("pv.raw");
    std::fs::File::create(&raw).unwrap().set_len(48 * MIB).unwrap();
    let lo = Loop::attach(&raw, false);
    let dev = lo.dev.clone();
    let devs = [dev.as_str()];
    let na = ["--driverloaded", "n", "-an", "-Zn", "-y"];
    lvm(&devs, "pvcreate", &devs);
    lvm(&devs, "vgcreate", &["-s", "1M", "dclvm4", devs[0]]);
    lvm(&devs, "lvcreate", &[&na[..], &["-L", "12M", "-n", "sys", "dclvm4"]].concat());
    lvm(&devs, "lvcreate", &[&na[..], &["-L", "12M", "-n", "home", "dclvm4"]].concat());
    let segs = lvs_segments(&devs, "dclvm4");
    let pvs = pvs_report(&devs);
    let pe_start = num(&pvs["report"][0]["pv"][0]["pe_start"]);
    drop(lo);
    let src = d.path().join("src");
    source_tree(&src, 3);
    let fs = mkfs_ext4(d.path(), &src, "sys.ext4", 12 * MIB);
    // The loop device is gone; `place` takes its name only to match lvs' ranges.
    place(&raw, &fs, &segs, "sys", &[(devs[0], 0)], pe_start, MIB);
    let q = d.path().join("pv.qcow2");
    qemu_img(&["convert", "-O", "qcow2", &s(&raw), &s(&q)]);
    // No partition table, no LV named root: the one LV with a Linux filesystem.
    let out = d.path().join("out");
    same_tree(&s(&q), &src, &out);
    // With a second Linux LV the choice is refused, listing both.
    let home = mkfs_ext4(d.path(), &src, "home.ext4", 12 * MIB);
    place(&raw, &home, &segs, "home", &[(devs[0], 0)], pe_start, MIB);
    dc(&["ls", &s(&raw)]).expect_diskcast_error().expect_stderr_all(&[
        "several LVs with Linux filesystems",
        "dclvm4/sys",
        "dclvm4/home",
        ":VG/LV",
    ]);
    assert_eq!(dc_ok(&["cat", &format!("{}:dclvm4/home", s(&raw)), "/link"]).stdout, b"lvm-box-3\n");
}
