//! OVA packages and GCE's image tar. Everything diskcast writes is judged by other tools:
//! GNU tar and bsdtar list and extract the archives, coreutils' `sha256sum -c` checks the
//! manifest, Python's xml.etree and the Common OVF Tool (`cot info`) read the descriptor,
//! qemu-img checks and compares the disk. Everything diskcast reads is made by them: a
//! streamOptimized VMDK by qemu-img, the manifest by `sha256sum --tag`, the package by
//! GNU tar, bsdtar or Python's tarfile.

use crate::support::*;
use std::path::{Path, PathBuf};

/// A 100 MiB qcow2 by qemu-img, written by qemu-io at three places (one near the end).
fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src.qcow2");
    qemu_img(&["create", "-f", "qcow2", &s(&src), "100M"]).expect_ok();
    qemu_io("qcow2", &src, &["write -P 0x5a 1M 3M", "write -P 0x11 50M 64k", "write -P 0xc3 99M 512k"]);
    src
}

/// Guest bytes qemu-img map says hold data.
fn qemu_data_bytes(img: &Path) -> u64 {
    let map = qemu_img(&["map", "--output=json", &s(img)]).expect_ok().json();
    map.as_array().unwrap().iter().filter(|e| e["data"] == true).map(|e| e["length"].as_u64().unwrap()).sum()
}

/// `tar`/`bsdtar` listing: the member names in archive order.
fn names(tool: &str, archive: &Path, z: bool) -> Vec<String> {
    let flags = if z { "-tzf" } else { "-tf" };
    tool_text(tool, &[flags, &s(archive)]).lines().map(str::to_string).collect()
}

/// Reads the descriptor with Python's xml.etree and checks what OVF 1.0's envelope
/// requires (DSP0243 / DSP8023: References, DiskSection, NetworkSection, VirtualSystem,
/// each section's Info first, hardware items with InstanceID and ResourceType, the disk
/// item's Parent a controller and its HostResource the DiskSection's disk, the NIC's
/// Connection a network of the NetworkSection). Prints the facts as JSON.
const OVF_CHECK: &str = r#"
import json, sys, xml.etree.ElementTree as ET
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == OVF + "Envelope", root.tag
assert root.get(OVF + "version") in (None, "1.0"), root.get(OVF + "version")
def one(parent, tag):
    found = parent.findall(OVF + tag)
    assert len(found) == 1, (tag, len(found))
    return found[0]
def section(parent, tag):
    sec = one(parent, tag)
    assert sec[0].tag == OVF + "Info", (tag, "Info is not the first child")
    return sec
files = one(root, "References").findall(OVF + "File")
disks = section(root, "DiskSection").findall(OVF + "Disk")
nets = [n.get(OVF + "name") for n in section(root, "NetworkSection").findall(OVF + "Network")]
vs = one(root, "VirtualSystem")
assert vs.get(OVF + "id"), "VirtualSystem has no ovf:id"
assert vs[0].tag == OVF + "Info"
section(vs, "OperatingSystemSection")
hw = section(vs, "VirtualHardwareSection")
items = []
for it in hw.findall(OVF + "Item"):
    d = {c.tag.replace(RASD, ""): c.text for c in it}
    # The CIM schema's sequence is alphabetical: importers that validate need that order.
    keys = [c.tag.replace(RASD, "") for c in it]
    assert keys == sorted(keys), keys
    assert "InstanceID" in d and "ResourceType" in d and "ElementName" in d, d
    items.append(d)
by_type = {}
for d in items:
    by_type.setdefault(d["ResourceType"], []).append(d)
disk_items = by_type["17"]
assert len(disk_items) == 1
ctl = [d for d in items if d["InstanceID"] == disk_items[0]["Parent"]]
assert len(ctl) == 1 and ctl[0]["ResourceType"] in ("6", "20"), ctl
assert disk_items[0]["HostResource"] == "ovf:/disk/" + disks[0].get(OVF + "diskId")
nic = by_type["10"][0]
assert nic["Connection"] in nets, (nic, nets)
assert disks[0].get(OVF + "fileRef") == files[0].get(OVF + "id")
print(json.dumps({
    "href": files[0].get(OVF + "href"),
    "size": int(files[0].get(OVF + "size")),
    "capacity": int(disks[0].get(OVF + "capacity")),
    "populated": int(disks[0].get(OVF + "populatedSize")),
    "format": disks[0].get(OVF + "format"),
    "cpus": int(by_type["3"][0]["VirtualQuantity"]),
    "memory_mib": int(by_type["4"][0]["VirtualQuantity"]),
    "memory_units": by_type["4"][0]["AllocationUnits"],
    "controller": [ctl[0]["ResourceType"], ctl[0].get("ResourceSubType")],
    "firmware": [c.get("{http://www.vmware.com/schema/ovf}value") for c in hw
                 if c.get("{http://www.vmware.com/schema/ovf}key") == "firmware"],
}))
"#;

fn ovf_facts(ovf: &Path) -> serde_json::Value {
    serde_json::from_str(&tool_text("/usr/bin/python3", &["-c", OVF_CHECK, &s(ovf)])).unwrap()
}

/// `convert -O ova`: GNU tar and bsdtar list the descriptor, the manifest, the disk in
/// that order (DSP0243's); `sha256sum -c` accepts the manifest; the descriptor is a
/// well-formed OVF 1.0 envelope whose sizes are the file's and the disk's; `cot info`
/// reads the same VM; the VMDK is a clean streamOptimized image equal to the source.
#[test]
fn convert_writes_an_ova_that_tar_sha256sum_python_cot_and_qemu_img_accept() {
    let t = tmp();
    let src = source(t.path());
    let ova = t.path().join("app.ova");
    dc_ok(&["convert", "-O", "ova", "--cpus", "4", "--memory", "3G", &s(&src), &s(&ova)]);
    let want = ["app.ovf", "app.mf", "app-disk1.vmdk"];
    assert_eq!(names("tar", &ova, false), want);
    assert_eq!(names("bsdtar", &ova, false), want);
    let verbose = tool_text("tar", &["-tvf", &s(&ova)]);
    assert!(verbose.lines().all(|l| l.starts_with("-rw-r--r-- 0/0")), "{verbose}");
    for tool in ["tar", "bsdtar"] {
        let x = t.path().join(tool);
        std::fs::create_dir(&x).unwrap();
        tool_text(tool, &["-xf", &s(&ova), "-C", &s(&x)]);
        let check = tool_text("sh", &["-c", &format!("cd {} && sha256sum -c --strict app.mf", s(&x))]);
        assert_eq!(check.lines().filter(|l| l.ends_with(": OK")).count(), 2, "{check}");
        let vmdk = x.join("app-disk1.vmdk");
        let check = qemu_img(&["check", "-f", "vmdk", &s(&vmdk)]).expect_ok();
        assert!(check.stdout_str().contains("No errors were found"), "{}", check.describe());
        let info = qemu_info(&vmdk);
        assert_eq!(info["format-specific"]["data"]["create-type"], "streamOptimized", "{info}");
        qemu_compare(&src, "qcow2", &vmdk, "vmdk");
        let f = ovf_facts(&x.join("app.ovf"));
        assert_eq!(f["href"], "app-disk1.vmdk");
        assert_eq!(f["size"].as_u64().unwrap(), file_len(&vmdk), "{f}");
        assert_eq!(f["capacity"].as_u64().unwrap(), 100 * MIB, "{f}");
        assert_eq!(f["populated"].as_u64().unwrap(), qemu_data_bytes(&src), "{f}");
        assert_eq!(f["format"], "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized");
        assert_eq!((f["cpus"].as_u64(), f["memory_mib"].as_u64()), (Some(4), Some(3072)), "{f}");
        assert_eq!(f["memory_units"], "byte * 2^20");
        assert_eq!(f["controller"], serde_json::json!(["20", "vmware.sata.ahci"]), "{f}");
    }
    // The Common OVF Tool reads the package on its own.
    let cot = tool_text("cot", &["info", &s(&ova)]);
    for want in ["app-disk1.vmdk", "harddisk @ SATA 0:0", "vmx-13", "E1000", "VM Network", "100 MiB"] {
        assert!(cot.contains(want), "cot info lacks {want:?}:\n{cot}");
    }
    assert!(cot.lines().any(|l| l.contains("None (default)") && l.contains(" 4 ") && l.contains("3 GiB")), "{cot}");

    // The name alone picks it; -O of another format contradicts it; --profile esxi
    // puts the disk on pvscsi.
    let named = t.path().join("named.ova");
    dc_ok(&["convert", &s(&src), &s(&named)]);
    assert_eq!(names("tar", &named, false), ["named.ovf", "named.mf", "named-disk1.vmdk"]);
    dc(&["convert", "-O", "qcow2", &s(&src), &s(&t.path().join("x.ova"))])
        .expect_code(1)
        .expect_stderr_all(&["contradicts", "x.ova"]);
    let esxi = t.path().join("esxi.ova");
    dc_ok(&["convert", "--profile", "esxi", &s(&src), &s(&esxi)]);
    let x = t.path().join("esxi");
    std::fs::create_dir(&x).unwrap();
    tool_text("tar", &["-xf", &s(&esxi), "-C", &s(&x)]);
    assert_eq!(ovf_facts(&x.join("esxi.ovf"))["controller"], serde_json::json!(["6", "VirtualSCSI"]));
    dc(&["convert", "--profile", "azure", &s(&src), &s(&t.path().join("az.ova"))])
        .expect_code(1)
        .expect_stderr_all(&["VMware and VirtualBox"]);
    // And diskcast reads back what it wrote.
    let back = t.path().join("back.qcow2");
    dc_ok(&["convert", "-O", "qcow2", &s(&ova), &s(&back)]);
    qemu_compare(&src, "qcow2", &back, "qcow2");
    // The OVA's disk passes esxi's format rule; the blank test disk has nothing to boot.
    let r = dc(&["check", "--profile", "esxi", &s(&esxi)]).expect_code(4);
    let verdict = r.stdout_str();
    assert!(verdict.contains("no-partition-table") && !verdict.contains("vmdk-create-type"), "{verdict}");
}

/// Writes the package `ova` with `tool` from the files in `dir` (in this order).
fn pack(tool: &str, ova: &Path, dir: &Path, files: &[&str]) {
    let mut args = vec!["--format".to_string(), "ustar".into(), "-cf".into(), s(ova), "-C".into(), s(dir)];
    args.extend(files.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tool_text(tool, &args);
}

/// A hand-written OVF 1.0 descriptor (as ovftool writes one) for `vmdk` of `capacity`.
fn descriptor(vmdk: &Path, capacity: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:size="{}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
  </VirtualSystem>
</Envelope>
"#,
        file_len(vmdk),
        capacity >> 20
    )
}

/// An OVA made by GNU tar and by bsdtar around a streamOptimized VMDK made by qemu-img,
/// with a manifest made by `sha256sum --tag`, is read in place: `info`, `convert`
/// (qemu-img compares the result with the source), `check`. A manifest that does not
/// match, a member the manifest lacks and a member path with `..` are refused, naming
/// the file, and nothing is written.
#[test]
fn ovas_made_by_tar_are_read_and_tampered_ones_refused() {
    let t = tmp();
    let src = source(t.path());
    let d = t.path().join("pkg");
    std::fs::create_dir(&d).unwrap();
    let vmdk = d.join("vm-disk1.vmdk");
    qemu_img(&["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", &s(&src), &s(&vmdk)]).expect_ok();
    std::fs::write(d.join("vm.ovf"), descriptor(&vmdk, 100 * MIB)).unwrap();
    let manifest = tool_text("sh", &["-c", &format!("cd {} && sha256sum --tag vm.ovf vm-disk1.vmdk", s(&d))]);
    std::fs::write(d.join("vm.mf"), &manifest).unwrap();
    for tool in ["tar", "bsdtar"] {
        let ova = t.path().join(format!("{tool}.ova"));
        pack(tool, &ova, &d, &["vm.ovf", "vm.mf", "vm-disk1.vmdk"]);
        let info = dc_ok(&["info", "--output", "json", &s(&ova)]).json();
        assert_eq!(info["format"], "ova", "{info}");
        assert_eq!(info["virtual-size"].as_u64(), Some(100 * MIB), "{info}");
        assert_eq!(info["format-specific"]["data"]["disk"], "vm-disk1.vmdk", "{info}");
        let back = t.path().join(format!("{tool}.qcow2"));
        dc_ok(&["convert", "-O", "qcow2", &s(&ova), &s(&back)]);
        qemu_compare(&src, "qcow2", &back, "qcow2");
        dc_ok(&["check", &s(&ova)]);
    }

    // A manifest whose digest for the disk is wrong.
    let bad = d.join("bad");
    std::fs::create_dir(&bad).unwrap();
    for f in ["vm.ovf", "vm-disk1.vmdk"] {
        std::fs::copy(d.join(f), bad.join(f)).unwrap();
    }
    let mut lines: Vec<String> = manifest.lines().map(str::to_string).collect();
    let disk_line = lines.iter_mut().find(|l| l.contains("vm-disk1.vmdk")).unwrap();
    let flipped = if disk_line.ends_with('0') { '1' } else { '0' };
    disk_line.pop();
    disk_line.push(flipped);
    std::fs::write(bad.join("vm.mf"), lines.join("\n") + "\n").unwrap();
    let tampered = t.path().join("tampered.ova");
    pack("tar", &tampered, &bad, &["vm.ovf", "vm.mf", "vm-disk1.vmdk"]);
    let out = t.path().join("out.qcow2");
    dc(&["convert", "-O", "qcow2", &s(&tampered), &s(&out)]).expect_code(1).expect_stderr_all(&[
        "vm-disk1.vmdk",
        "manifest",
        "vm.mf",
    ]);
    assert_no_output(&out);
    // GNU tar and sha256sum agree it is damaged.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    tool_text("tar", &["-xf", &s(&tampered), "-C", &s(&x)]);
    let r =
        std::process::Command::new("sh").args(["-c", &format!("cd {} && sha256sum -c vm.mf", s(&x))]).output().unwrap();
    assert!(!r.status.success(), "sha256sum accepted the tampered manifest");

    // The disk's bytes changed after the manifest was made (a byte of the package).
    let changed = t.path().join("changed.ova");
    pack("tar", &changed, &d, &["vm.ovf", "vm.mf", "vm-disk1.vmdk"]);
    let padded = |p: PathBuf| file_len(&p).div_ceil(512) * 512;
    // The middle of the disk member: past three headers, the descriptor and the manifest.
    let at = 3 * 512 + padded(d.join("vm.ovf")) + padded(d.join("vm.mf")) + file_len(&vmdk) / 2;
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&changed).unwrap(), &mut byte, at).unwrap();
    patch(&changed, at, &[byte[0] ^ 0xff]);
    dc(&["info", &s(&changed)]).expect_code(1).expect_stderr_all(&["vm-disk1.vmdk", "SHA256"]);

    // A member the manifest does not list.
    let extra = t.path().join("extra.ova");
    std::fs::write(d.join("notes.txt"), b"not in the manifest").unwrap();
    pack("tar", &extra, &d, &["vm.ovf", "vm.mf", "vm-disk1.vmdk", "notes.txt"]);
    dc(&["info", &s(&extra)]).expect_code(1).expect_stderr_all(&["no digest for notes.txt"]);

    // A path trick: a member named ../vm-disk1.vmdk (Python's tarfile writes it as asked).
    let trick = t.path().join("trick.ova");
    let py = format!(
        "import tarfile\nwith tarfile.open('{}', 'w', format=tarfile.USTAR_FORMAT) as t:\n    \
         t.add('{}', arcname='vm.ovf')\n    t.add('{}', arcname='../vm-disk1.vmdk')\n",
        s(&trick),
        s(&d.join("vm.ovf")),
        s(&vmdk)
    );
    tool_text("/usr/bin/python3", &["-c", &py]);
    dc(&["info", &s(&trick)]).expect_code(1).expect_stderr_all(&["../vm-disk1.vmdk", "not a plain file name"]);
}

/// An OVF 1.0 descriptor for two disks, written by Python's xml.etree (References,
/// DiskSection with capacities in bytes, one VirtualSystem): the disks in DiskSection
/// order are `second.vmdk` then `first.vmdk`, the reverse of the member order, so the
/// choice follows the descriptor, not the tar.
const TWO_DISK_OVF_PY: &str = r#"
import os, sys
import xml.etree.ElementTree as ET
d, out = sys.argv[1], sys.argv[2]
OVF = "http://schemas.dmtf.org/ovf/envelope/1"
ET.register_namespace("ovf", OVF)
q = lambda t: "{%s}%s" % (OVF, t)
env = ET.Element(q("Envelope"))
refs = ET.SubElement(env, q("References"))
disks = ET.SubElement(env, q("DiskSection"))
ET.SubElement(disks, q("Info")).text = "Virtual disk information"
for i, (name, cap) in enumerate([("second.vmdk", sys.argv[4]), ("first.vmdk", sys.argv[3])], 1):
    ET.SubElement(refs, q("File"), {q("href"): name, q("id"): "file%d" % i, q("size"): str(os.path.getsize(os.path.join(d, name)))})
    ET.SubElement(disks, q("Disk"), {q("capacity"): cap, q("capacityAllocationUnits"): "byte", q("diskId"): "vmdisk%d" % i, q("fileRef"): "file%d" % i, q("format"): "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"})
vs = ET.SubElement(env, q("VirtualSystem"), {q("id"): "vm"})
ET.SubElement(vs, q("Info")).text = "A virtual machine"
ET.ElementTree(env).write(out, xml_declaration=True, encoding="UTF-8")
"#;

/// `--disk N` reads another disk than the first of a multi-disk OVA: GNU tar packs two
/// streamOptimized VMDKs made by qemu-img (of different sizes and contents), an OVF
/// descriptor written by Python and a `sha256sum --tag` manifest. `info` lists both
/// disks in the descriptor's order; `convert --disk N` gives what `qemu-img compare`
/// finds equal to each source; `check --disk 2` checks the second; a disk the package
/// does not have, and `--disk` on an image that is not an OVA, are refused.
#[test]
fn disk_n_chooses_a_disk_of_a_multi_disk_ova() {
    let t = tmp();
    let d = t.path().join("pkg");
    std::fs::create_dir(&d).unwrap();
    let first_src = source(t.path());
    let second_src = t.path().join("second.qcow2");
    qemu_img(&["create", "-f", "qcow2", &s(&second_src), "48M"]).expect_ok();
    qemu_io("qcow2", &second_src, &["write -P 0x77 0 2M", "write -P 0x3c 47M 1M"]);
    for (src, name) in [(&first_src, "first.vmdk"), (&second_src, "second.vmdk")] {
        let vmdk = d.join(name);
        qemu_img(&["convert", "-O", "vmdk", "-o", "subformat=streamOptimized", &s(src), &s(&vmdk)]).expect_ok();
    }
    let ovf = d.join("two.ovf");
    let (cap1, cap2) = ((100 * MIB).to_string(), (48 * MIB).to_string());
    tool_text("/usr/bin/python3", &["-c", TWO_DISK_OVF_PY, &s(&d), &s(&ovf), &cap1, &cap2]);
    let manifest = tool_text("sh", &["-c", &format!("cd {} && sha256sum --tag two.ovf second.vmdk first.vmdk", s(&d))]);
    std::fs::write(d.join("two.mf"), manifest).unwrap();
    let ova = t.path().join("two.ova");
    pack("tar", &ova, &d, &["two.ovf", "two.mf", "first.vmdk", "second.vmdk"]);

    let info = dc_ok(&["info", "--output", "json", &s(&ova)]).json();
    let data = &info["format-specific"]["data"];
    assert_eq!(data["disk"], "second.vmdk", "the descriptor's first disk: {info}");
    assert_eq!(info["virtual-size"].as_u64(), Some(48 * MIB), "{info}");
    let listed: Vec<(u64, &str, u64)> = data["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["index"].as_u64().unwrap(), d["file"].as_str().unwrap(), d["capacity"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed, [(1, "second.vmdk", 48 * MIB), (2, "first.vmdk", 100 * MIB)], "{info}");
    let human = dc_ok(&["info", "--disk", "2", &s(&ova)]).stdout_str();
    assert!(human.contains("disk: first.vmdk") && human.contains("file: second.vmdk"), "{human}");

    for (n, src) in [("1", &second_src), ("2", &first_src)] {
        let out = t.path().join(format!("disk{n}.qcow2"));
        dc_ok(&["convert", "--disk", n, "-O", "qcow2", &s(&ova), &s(&out)]);
        qemu_compare(src, "qcow2", &out, "qcow2");
    }
    // Without --disk: the first disk, as before.
    let plain = t.path().join("plain.qcow2");
    dc_ok(&["convert", "-O", "qcow2", &s(&ova), &s(&plain)]);
    qemu_compare(&second_src, "qcow2", &plain, "qcow2");
    dc_ok(&["check", "--disk", "2", &s(&ova)]);

    let out = t.path().join("none.qcow2");
    dc(&["convert", "--disk", "3", "-O", "qcow2", &s(&ova), &s(&out)]).expect_code(1).expect_stderr_all(&[
        "--disk 3",
        "2 disks",
        "1 vmdisk1 (second.vmdk)",
        "2 vmdisk2 (first.vmdk)",
    ]);
    assert_no_output(&out);
    dc(&["convert", "--disk", "2", "-O", "raw", &s(&first_src), &s(&out)]).expect_code(1).expect_stderr_all(&[
        "--disk 2",
        "is a qcow2 image",
        "drop --disk",
    ]);
    assert_no_output(&out);
    dc(&["check", "--disk", "2", &s(&first_src)]).expect_code(1).expect_stderr_all(&["drop --disk"]);
    // With two images, --disk applies to the OVA among them; with none, it is refused.
    dc_ok(&["compare", "--disk", "2", &s(&ova), &s(&first_src)]);
    // (compare exits 2 on an error, as qemu-img compare does.)
    dc(&["compare", "--disk", "2", &s(&first_src), &s(&second_src)]).expect_code(2).expect_stderr_all(&[
        "src.qcow2 is a qcow2 image",
        "second.qcow2 is a qcow2 image",
        "drop --disk",
    ]);
    dc(&["info", "--disk", "0", &s(&ova)]).expect_code(1).expect_stderr_all(&["--disk", "0 is not in 1.."]);
}

/// `--profile gce`: a gzip'd old GNU tar holding only `disk.raw` (GNU tar's type `S`
/// sparse member, magic `ustar  `), a whole number of GiB; GNU tar and bsdtar extract
/// it, qemu-img finds it equal to the source (the tail reads as zeros), and GNU tar
/// keeps it sparse.
#[test]
fn gce_profile_writes_disk_raw_in_a_sparse_gnu_tar_gz_of_whole_gib() {
    let t = tmp();
    let src = t.path().join("src.qcow2");
    qemu_img(&["create", "-f", "qcow2", &s(&src), "1536M"]).expect_ok();
    qemu_io("qcow2", &src, &["write -P 0x5a 0 1M", "write -P 0x11 700M 64k", "write -P 0xc3 1535M 1M"]);
    let out = t.path().join("disk.tar.gz");
    dc_ok(&["convert", "--profile", "gce", &s(&src), &s(&out)]);
    tool_text("gzip", &["-t", &s(&out)]);
    assert_eq!(names("tar", &out, true), ["disk.raw"]);
    assert_eq!(names("bsdtar", &out, true), ["disk.raw"]);
    // The member header, read by Python's gzip module: old GNU magic, type S.
    let py = format!(
        "import gzip\nh = gzip.open('{}').read(512)\nprint(h[257:265] == b'ustar  \\x00', chr(h[156]))",
        s(&out)
    );
    assert_eq!(tool_text("/usr/bin/python3", &["-c", &py]).trim(), "True S");
    for (tool, flags) in [("tar", "-xzSf"), ("bsdtar", "-xzf")] {
        let x = t.path().join(tool);
        std::fs::create_dir(&x).unwrap();
        tool_text(tool, &[flags, &s(&out), "-C", &s(&x)]);
        let raw = x.join("disk.raw");
        assert_eq!(file_len(&raw), 2 * GIB, "{tool}: size not rounded up to a whole GiB");
        assert!(allocated(&raw) < 64 * MIB, "{tool} extracted {} bytes: not sparse", allocated(&raw));
        // qemu-img compare: sizes differ, the larger image's tail must read as zeros.
        qemu_compare(&raw, "raw", &src, "qcow2");
    }
    // A name that is not a tar.gz is refused before anything is read.
    dc(&["convert", "--profile", "gce", &s(&src), &s(&t.path().join("disk.img"))])
        .expect_code(1)
        .expect_stderr_all(&["tar.gz"]);
    dc(&["convert", "--profile", "gce", "-O", "qcow2", &s(&src), &s(&out)]).expect_code(1);
}

/// `diskcast vm` into both archives (no boot here: the esxi OVA's disk boots on pvscsi
/// in vm_bus.rs). gce: GNU tar extracts a `disk.raw` of a whole number of GiB whose GPT
/// `sgdisk -v` finds sound (the backup header at the disk's end: the root partition was
/// grown to the GiB boundary). An OVA without a profile: its disk on SATA, UEFI firmware
/// stated, read by `cot info`.
#[test]
fn vm_writes_a_gce_tar_and_an_ova() {
    let t = tmp();
    let tar = crate::vm_bus::guest(t.path(), "unused", &[]);
    let k = s(&test_kernel());
    let gce = t.path().join("image.tar.gz");
    let summary =
        dc_ok(&["vm", &s(&tar), "-o", &s(&gce), "--profile", "gce", "--kernel", &k, "--output", "json"]).json();
    let size = summary["virtual-size"].as_u64().unwrap();
    assert_eq!(size % GIB, 0, "{summary}");
    let x = t.path().join("gce");
    std::fs::create_dir(&x).unwrap();
    tool_text("tar", &["-xzSf", &s(&gce), "-C", &s(&x)]);
    let raw = x.join("disk.raw");
    assert_eq!(file_len(&raw), size);
    let v = tool_text("sgdisk", &["-v", &s(&raw)]);
    assert!(v.contains("No problems found"), "{v}");
    dc(&["vm", &s(&tar), "-o", &s(&t.path().join("image.qcow2")), "--profile", "gce", "--kernel", &k])
        .expect_code(1)
        .expect_stderr_all(&["tar.gz"]);

    let ova = t.path().join("plain.ova");
    dc_ok(&["vm", &s(&tar), "-o", &s(&ova), "--kernel", &k, "--memory", "1G"]);
    let x = t.path().join("ova");
    std::fs::create_dir(&x).unwrap();
    tool_text("bsdtar", &["-xf", &s(&ova), "-C", &s(&x)]);
    let f = ovf_facts(&x.join("plain.ovf"));
    assert_eq!(f["controller"], serde_json::json!(["20", "vmware.sata.ahci"]), "{f}");
    assert_eq!(f["firmware"], serde_json::json!(["efi"]), "{f}");
    assert_eq!(f["memory_mib"].as_u64(), Some(1024), "{f}");
    let vmdk = x.join("plain-disk1.vmdk");
    assert_eq!(f["size"].as_u64().unwrap(), file_len(&vmdk));
    let info = qemu_info(&vmdk);
    assert_eq!(info["virtual-size"].as_u64(), f["capacity"].as_u64(), "{info}");
    let cot = tool_text("cot", &["info", &s(&ova)]);
    assert!(cot.contains("harddisk @ SATA 0:0") && cot.contains("1 GiB"), "{cot}");
}
