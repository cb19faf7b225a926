//! The VHDX log: a pending log is refused unless replay is allowed; our replay and qemu's
//! give the same image.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use diskcast_block::ErrorKind;

#[test]
fn pending_log_is_refused_then_replayed_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let src = patterned(dir.path(), "src.vhdx", "14M", "block_size=1M");
    add_pending_log(&src);
    let ours = dir.path().join("ours.vhdx");
    let theirs = dir.path().join("theirs.vhdx");
    std::fs::copy(&src, &ours).unwrap();
    std::fs::copy(&src, &theirs).unwrap();
    let before = std::fs::read(&ours).unwrap();

    // (a) Without replay: refused, with the way out in the message, and nothing written.
    let e = open(&ours).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    let msg = e.to_string();
    for want in ["pending log", "without replaying", "--replay-log", "qemu-img check -r all"] {
        assert!(msg.contains(want), "{msg}");
    }
    assert_eq!(std::fs::read(&ours).unwrap(), before, "refusing must not write");
    let rep = diskcast_vhdx::check::check(diskcast_block::source::open_file(&ours).unwrap()).unwrap();
    assert_eq!(rep.corruptions, 1, "{:?}", rep.messages);
    assert!(rep.messages[0].contains("pending log"));
    // qemu agrees the image needs a replay.
    let q = std::process::Command::new("qemu-img").args(["info", theirs.to_str().unwrap()]).output().unwrap();
    assert!(!q.status.success());
    assert!(String::from_utf8_lossy(&q.stderr).contains("log that needs to be replayed"));

    // (b) qemu replays one copy, we replay the other.
    let _ = std::process::Command::new("qemu-img").args(["check", "-r", "all", theirs.to_str().unwrap()]).output();
    qemu_img(&["info", theirs.to_str().unwrap()]);
    let img = open_with(&ours, true, true).unwrap();
    assert_eq!(img.info().specific["log-replayed"], true);
    let data = read_all(img.as_ref());
    drop(img);
    assert!(data[..4096].iter().all(|&b| b == 0), "zero descriptor not applied");
    assert!(data[8192..12288].iter().all(|&b| b == 0xab), "data descriptor not applied");
    assert!(data[12 << 20..(12 << 20) + 4096].iter().all(|&b| b == 0xcd), "BAT sector not applied");
    assert!(data[(13 << 20) - 4096..13 << 20].iter().all(|&b| b == 0xce));
    assert_eq!(std::fs::metadata(&ours).unwrap().len(), std::fs::metadata(&theirs).unwrap().len());
    assert_qemu_compare(&theirs, "vhdx", &ours, "vhdx");
    assert_qemu_check_clean(&ours);
    assert_same(&data, &qemu_raw(&theirs, "vhdx", dir.path()), "ours vs qemu-replayed");
    // The log is closed now: a plain open works, and our check is clean.
    let again = open(&ours).unwrap();
    assert!(again.info().specific.get("log-replayed").is_none());
    assert_eq!(diskcast_vhdx::check::check(diskcast_block::source::open_file(&ours).unwrap()).unwrap().corruptions, 0);
}

#[test]
fn a_pending_log_in_an_image_that_is_not_a_file_cannot_be_replayed() {
    use diskcast_block::gate::Gate;
    use diskcast_block::registry::OpenContext;
    use diskcast_block::source::MemSource;
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "m.vhdx", "14M", "block_size=1M");
    add_pending_log(&p);
    let reg = registry();
    let gate = Gate::new();
    let ctx = OpenContext::new(&reg, &gate).with_log_replay(true);
    let mem = std::sync::Arc::new(MemSource::new("m.vhdx in memory", std::fs::read(&p).unwrap()));
    let e = reg.open_source(mem, Some("vhdx"), &ctx).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("cannot replay the pending log"), "{e}");
    assert_eq!(e.file(), Some(std::path::Path::new("m.vhdx in memory")));
}

#[test]
fn log_guid_without_valid_entries_is_not_pending() {
    // A log GUID whose log holds no entry with that GUID has nothing to replay (qemu opens
    // such an image read-only too).
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "g.vhdx", "14M", "block_size=1M");
    set_log_guid(&p, uuid::Uuid::new_v4());
    assert_matches_qemu(&p, dir.path());
}

#[test]
fn a_log_entry_with_a_bad_crc_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "c.vhdx", "14M", "block_size=1M");
    add_pending_log(&p);
    let log_off = le64(&read_bytes(&p, active_header(&p), 80), 72);
    let b = read_bytes(&p, log_off + 4096 + 100, 1);
    patch(&p, log_off + 4096 + 100, &[b[0] ^ 0xff]);
    // No valid entry remains: the image reads as it was before the log (like qemu).
    assert_matches_qemu(&p, dir.path());
}

#[test]
fn wrapped_sequence_replays_from_the_head_tail_and_skips_stale_entries() {
    // Entry A (seq 10) in the last two sectors of the 1 MiB log, entry B (seq 11, tail = A)
    // wrapping to sector 0, and a stale entry C (seq 3) elsewhere. The spec's active
    // sequence is A..B: both are replayed, C is not.
    let dir = tempfile::tempdir().unwrap();
    let p = patterned(dir.path(), "w.vhdx", "14M", "block_size=1M");
    let (bat_off, _) = region(&p, &BAT_GUID_LE);
    let block0 = le64(&read_bytes(&p, bat_off, 8), 0) >> 20 << 20;
    let len = std::fs::metadata(&p).unwrap().len();
    let log_off = le64(&read_bytes(&p, active_header(&p), 80), 72);
    let guid = uuid::Uuid::new_v4();
    let a_pos = 254 * 4096;
    let a = log_entry(guid, 10, a_pos, len, len, &[Desc::Data(block0 + 16384, vec![0x61; 4096])]);
    let b = log_entry(guid, 11, a_pos, len, len, &[Desc::Data(block0 + 20480, vec![0x62; 4096])]);
    let c = log_entry(guid, 3, 10 * 4096, len, len, &[Desc::Data(block0 + 24576, vec![0x63; 4096])]);
    patch(&p, log_off + u64::from(a_pos), &a);
    patch(&p, log_off, &b);
    patch(&p, log_off + 10 * 4096, &c);
    set_log_guid(&p, guid);
    assert_eq!(open(&p).unwrap_err().kind(), ErrorKind::Refused);
    let replayed = read_all(open_with(&p, true, true).unwrap().as_ref());
    assert!(replayed[16384..20480].iter().all(|&x| x == 0x61), "entry A not replayed");
    assert!(replayed[20480..24576].iter().all(|&x| x == 0x62), "entry B not replayed");
    assert!(!replayed[24576..28672].contains(&0x63), "stale entry C replayed");
    assert_qemu_check_clean(&p);
}

/// The entries the in-place editor writes (`log::encode_entry`) are byte for byte the
/// ones the crafting helper makes, which qemu replays in the test above: the same
/// header, descriptors, split data sectors and CRC-32C.
#[test]
fn encoded_entries_are_the_ones_qemu_replays() {
    use diskcast_vhdx::log::{Op, encode_entry};
    let guid = uuid::Uuid::new_v4();
    let sector = |b: u8| (0..4096u32).map(|i| b ^ i.to_le_bytes()[0]).collect::<Vec<u8>>();
    // 130 descriptors: the descriptors spill into a second sector.
    let mut descs = vec![Desc::Zero(1 << 20, 8192)];
    let mut ops = vec![Op::Zero { file_offset: 1 << 20, len: 8192 }];
    for i in 0..129u8 {
        let at = (3 << 20) + u64::from(i) * 4096;
        descs.push(Desc::Data(at, sector(i)));
        ops.push(Op::Data { file_offset: at, data: sector(i) });
    }
    let seq = 0x1_0000_0007;
    let ours = encode_entry(guid, seq, 4096, 5 << 20, 6 << 20, &ops).unwrap();
    assert!(
        ours == log_entry(guid, seq, 4096, 5 << 20, 6 << 20, &descs),
        "encode_entry differs from the crafted entry"
    );
}
