//! The filesystem registry (`diskcast_formats::filesystems`) drives `diskcast formats`,
//! `mkfs` and `mkdisk`: every filesystem it lists is listed with what diskcast does with
//! it, every builder it holds makes an image its reference checker accepts, and a
//! partition gets the MBR id of the filesystem it holds. Judged by e2fsck, fsck.fat,
//! fsck.exfat, xorriso, isoinfo, mtools, debugfs, sfdisk and sgdisk.

use crate::support::*;
use diskcast_testkit::run_utc;
use std::path::{Path, PathBuf};

/// A small tree: a file at the top, one in a subdirectory.
fn src_tree(dir: &Path) -> PathBuf {
    let root = dir.join("src");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("hello.txt"), b"hello registry\n").unwrap();
    std::fs::write(root.join("sub/data.bin"), pseudo_random(70_000, 16)).unwrap();
    root
}

#[test]
fn formats_lists_every_registered_filesystem_with_its_capabilities() {
    let registry = diskcast_formats::filesystems();
    let json = dc_ok(&["formats", "--output", "json"]).json();
    let list = json.as_array().unwrap();
    let listed: Vec<&serde_json::Value> = list.iter().filter(|f| f["kind"] == "filesystem").collect();
    assert_eq!(listed.len(), registry.iter().count(), "{json:#}");
    for fs in registry.iter() {
        let entry = listed.iter().find(|f| f["name"] == fs.name).unwrap_or_else(|| panic!("{} not listed", fs.name));
        assert_eq!(entry["read"], fs.reader.is_some(), "{}", fs.name);
        let writes: Vec<&str> = fs.builders.iter().map(|b| b.name()).collect();
        assert_eq!(entry["write"], serde_json::json!(writes), "{}", fs.name);
        match fs.partition {
            Some(p) => assert_eq!(entry["partition"]["mbr"], p.mbr, "{}", fs.name),
            None => assert!(entry["partition"].is_null(), "{}", fs.name),
        }
    }
    let names: Vec<&str> = registry.iter().map(|f| f.name).collect();
    assert_eq!(names, ["iso9660", "ext4", "fat", "exfat", "squashfs", "xfs"]);
    // Block formats stay as they were, each now saying so.
    assert!(list.iter().any(|f| f["kind"] == "block" && f["name"] == "qcow2"), "{json:#}");

    let human = dc_ok(&["formats"]).stdout_str();
    let line = |name: &str| {
        human.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name}:\n{human}"))
    };
    assert!(line("ext4").contains("read, write;"), "{human}");
    assert!(line("fat").contains("read, write as fat32, fat16; partition type fat, MBR id 0x0c"), "{human}");
    assert!(line("exfat").contains("MBR id 0x07"), "{human}");
    assert!(line("squashfs").ends_with("read; partition type linux, MBR id 0x83"), "{human}");
    assert!(line("xfs").ends_with("read; partition type linux, MBR id 0x83"), "{human}");
    assert!(line("iso9660").ends_with("read, write"), "{human}");
    // mkfs --help names every builder, so a new one cannot be left out of it.
    let help = dc_ok(&["mkfs", "--help"]).stdout_str();
    for (_, b) in registry.builders() {
        assert!(help.contains(b.name()), "mkfs --help does not name {}:\n{help}", b.name());
    }
}

/// How a reference tool judges an image of `builder`: the checker passes and the tool
/// reads `hello.txt` back.
fn judge(builder: &str, img: &Path) {
    let i = s(img);
    match builder {
        "ext4" => {
            tool_text("e2fsck", &["-fn", &i]);
            assert_eq!(run_utc("debugfs", &["-R", "cat /hello.txt", &i]), "hello registry\n");
        }
        "fat32" | "fat16" => {
            let fsck = tool_text("fsck.fat", &["-n", "-v", &i]);
            let bits = if builder == "fat32" { "32" } else { "16" };
            assert!(fsck.contains(&format!("FAT{bits}")) || fsck.contains(&format!("{bits} bit")), "{fsck}");
            assert_eq!(run_utc("mtype", &["-i", &i, "::hello.txt"]), "hello registry\n");
        }
        "exfat" => {
            let fsck = tool_text("fsck.exfat", &["-n", &i]);
            assert!(fsck.contains("clean"), "{fsck}");
        }
        "iso9660" => {
            let pvd = tool_text("isoinfo", &["-d", "-i", &i]);
            assert!(pvd.contains("Volume id: CDROM") && pvd.contains("Rock Ridge signatures version 1 found"), "{pvd}");
            assert_eq!(tool_out("isoinfo", &["-R", "-i", &i, "-x", "/hello.txt"]), "hello registry\n");
            let found = tool_text("xorriso", &["-indev", &i, "-find", "/", "-type", "f"]);
            assert!(found.contains("'/sub/data.bin'") && found.contains("'/hello.txt'"), "{found}");
        }
        other => panic!("no reference checker for builder {other}: add one here"),
    }
}

#[test]
fn every_registered_builder_makes_an_image_its_reference_checker_accepts() {
    let dir = tmp();
    let src = src_tree(dir.path());
    let registry = diskcast_formats::filesystems();
    let mut judged = Vec::new();
    for (fs, b) in registry.builders() {
        let img = dir.path().join(format!("{}.img", b.name()));
        let r = dc_ok(&["mkfs", b.name(), &s(&src), "-o", &s(&img)]);
        assert!(r.stderr.contains(&format!("wrote {}", s(&img))), "{}", r.stderr);
        judge(b.name(), &img);
        // Our own reader of the same registry entry reads it back.
        let ls = dc_ok(&["ls", "-R", &s(&img)]).stdout_str();
        assert!(ls.contains("sub/data.bin"), "{} ({}): {ls}", b.name(), fs.name);
        assert_eq!(dc_ok(&["cat", &s(&img), "sub/data.bin"]).stdout, pseudo_random(70_000, 16));
        std::fs::remove_file(&img).unwrap();
        judged.push(b.name());
    }
    assert_eq!(judged, ["iso9660", "ext4", "fat32", "fat16", "exfat"]);
    // A disc is as large as its content.
    let img = dir.path().join("sized.iso");
    dc(&["mkfs", "iso9660", &s(&src), "-o", &s(&img), "--size", "10M"])
        .expect_code(1)
        .expect_stderr_all(&["ISO 9660 disc is as large as its content"]);
    assert_no_output(&img);
    dc(&["mkfs", "squashfs", &s(&src), "-o", &s(&img)])
        .expect_code(1)
        .expect_stderr_all(&["unknown filesystem \"squashfs\" (squashfs is read only); diskcast writes: iso9660"]);
}

/// exFAT in a basic data partition on MBR gets 0x07 (exFAT/NTFS), as fdisk users and
/// Windows set it; FAT32 keeps 0x0c, ext4 0x83, and an ESP is 0xef whatever FAT it holds.
/// On GPT the exFAT partition is basic data.
#[test]
fn mkdisk_gives_each_partition_the_mbr_id_of_its_filesystem() {
    let dir = tmp();
    let src = src_tree(dir.path());
    let out = dir.path().join("mbr.img");
    dc_ok(&[
        "mkdisk",
        "-o",
        &s(&out),
        "--table",
        "mbr",
        "--part",
        &format!("fat:exfat:16M:{}", s(&src)),
        "--part",
        &format!("fat:fat32:34M:{}", s(&src)),
        "--part",
        "esp:fat16:8M",
        "--part",
        &format!("linux:ext4:auto:{}", s(&src)),
    ]);
    let dump = run_utc("sfdisk", &["--dump", &s(&out)]);
    let types: Vec<&str> =
        dump.lines().filter_map(|l| l.split("type=").nth(1)).map(|t| t.split(',').next().unwrap().trim()).collect();
    assert_eq!(types, ["7", "c", "ef", "83"], "{dump}");
    let exfat = dir.path().join("p1.img");
    let start = 2048 * 512;
    {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 16 * MIB as usize];
        std::fs::File::open(&out).unwrap().read_exact_at(&mut buf, start).unwrap();
        std::fs::write(&exfat, buf).unwrap();
    }
    let fsck = tool_text("fsck.exfat", &["-n", &s(&exfat)]);
    assert!(fsck.contains("clean"), "{fsck}");
    // The 0x07 partition reads back by number, and as a basic data ("fat") partition
    // beside the 0x0c one, so `:fat` names both.
    let ls = dc_ok(&["ls", &format!("{}:1", s(&out)), "sub"]).stdout_str();
    assert!(ls.contains("data.bin"), "{ls}");
    dc(&["cat", &format!("{}:fat", s(&out)), "hello.txt"]).expect_code(1).expect_stderr_all(&[
        "\"fat\" names several partitions",
        "1 fat",
        "2 fat",
    ]);

    let gpt = dir.path().join("gpt.img");
    dc_ok(&["mkdisk", "-o", &s(&gpt), "--part", &format!("data=fat:exfat:16M:{}", s(&src))]);
    let info = tool_text("sgdisk", &["-i", "1", &s(&gpt)]);
    assert!(info.contains("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7 (Microsoft basic data)"), "{info}");
    assert!(tool_text("sgdisk", &["-v", &s(&gpt)]).contains("No problems found"));
}
