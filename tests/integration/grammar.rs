//! One flag grammar for every command (docs/cli.md): `-f`/`-O` formats, `-o` format
//! options in qemu-img's commands and the output file elsewhere (long `--out`),
//! `--output human|json` only ever the report format. Old spellings stay as hidden
//! aliases; here they still work (judged by fsck.fat, tar, isoinfo and wimlib) and are
//! absent from --help. Also: plurals in messages and error chains without repeats.

use crate::support::*;
use diskcast_testkit::{run, run_utc};
use std::collections::BTreeSet;

/// qemu-img's verbs, where `-o` is format options as in qemu-img.
const QEMU_VERBS: [&str; 4] = ["amend", "convert", "create", "measure"];

/// Every command and subcommand, as the words that run it (`["iso", "create"]`).
fn all_commands() -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for c in commands_in_help(&[]) {
        let subs = commands_in_help(&[&c]);
        if subs.is_empty() {
            all.push(vec![c]);
        } else {
            all.extend(subs.into_iter().map(|s| vec![c.clone(), s]));
        }
    }
    all
}

/// The help line of short flag `-x` (`  -o, --out <OUT>`), if the command has one.
fn short_flag_line(help: &str, short: char) -> Option<String> {
    let prefix = format!("-{short},");
    let alone = format!("-{short} ");
    help.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(&prefix) || l.starts_with(&alone) || *l == format!("-{short}"))
        .map(str::to_string)
}

/// Whether `help` lists an option `--output` (exactly, not `--output-format`).
fn shows_output_flag(help: &str) -> bool {
    help.lines().map(str::trim_start).any(|l| l.starts_with("--output <"))
}

/// The grammar, command by command: `-O` is always `--output-format`, `-f` (with a long
/// name) always `--format`, `-o` is `--format-options` in qemu-img's verbs and `--out`
/// everywhere else, and `--output` takes human and json wherever it exists and is
/// refused (never taken as a file) where a command has no report.
#[test]
fn every_command_follows_the_flag_grammar() {
    let commands = all_commands();
    assert!(commands.len() > 25, "{commands:?}");
    for words in &commands {
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        let name = w.join(" ");
        let help = dc_ok(&[&w[..], &["--help"]].concat()).stdout_str();
        if let Some(l) = short_flag_line(&help, 'O') {
            assert!(l.starts_with("-O, --output-format <"), "diskcast {name}: {l}");
        }
        if let Some(l) = short_flag_line(&help, 'f').filter(|l| l.contains("--")) {
            assert!(l.starts_with("-f, --format <"), "diskcast {name}: {l}");
        }
        if let Some(l) = short_flag_line(&help, 'o') {
            // bench's -o is qemu-img bench's offset of the first request.
            let want = match w[0] {
                "bench" => "-o, --offset <",
                v if QEMU_VERBS.contains(&v) => "-o, --format-options <",
                _ => "-o, --out <",
            };
            assert!(l.starts_with(want), "diskcast {name}: {l}");
        }
        let report = |value: &str| dc(&[&w[..], &["--output", value, "--help"]].concat());
        if shows_output_flag(&help) {
            report("human").expect_ok();
            report("json").expect_ok();
        } else {
            report("json").expect_code(1);
        }
    }
}

/// `--output FILE` (mkfs, mkdisk, extract, iso create, iso remaster) and `--out-dir`
/// (wim split), the spellings before the grammar was one, still work as hidden aliases
/// and do what `-o`/`--out` do; `--output json` where there is no report is refused,
/// naming `-o/--out`, and writes nothing.
#[test]
fn old_output_spellings_still_work_and_are_hidden() {
    let d = tmp();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    write_file(&tree.join("hello.txt"), b"hello\n");
    let p = |name: &str| s(&d.path().join(name));

    // mkfs: the old and the new spelling write the same filesystem, which fsck.fat takes.
    let epoch = Some("1700000000");
    dc_epoch(epoch, &["mkfs", "fat32", &s(&tree), "--output", &p("old.img")]).expect_ok();
    dc_epoch(epoch, &["mkfs", "fat32", &s(&tree), "--out", &p("new.img")]).expect_ok();
    assert_same_bytes(&d.path().join("new.img"), &d.path().join("old.img"));
    run_utc("fsck.fat", &["-n", &p("old.img")]);
    let refused = dc(&["mkfs", "fat32", &s(&tree), "--output", "json"]).expect_code(1);
    assert!(refused.stderr.contains("-o/--out") && refused.stderr.contains("report format"), "{}", refused.describe());
    assert!(!d.path().join("json").exists() && !std::path::Path::new("json").exists());
    dc(&["mkdisk", "--part", "swap:none:1M", "--output", &p("disk.img")]).expect_ok();
    assert!(run("sgdisk", &["-p", &p("disk.img")]).contains("8200"));

    // extract -o: a tar that GNU tar lists.
    dc_ok(&["extract", &s(&tree), "--output", &p("tree.tar")]);
    assert!(run("tar", &["-tf", &p("tree.tar")]).contains("hello.txt"));

    // iso create and remaster: discs whose files isoinfo lists.
    dc_ok(&["iso", "create", &s(&tree), "--output", &p("a.iso"), "-V", "OLD"]);
    dc_ok(&["iso", "remaster", &p("a.iso"), "--remove", "/hello.txt", "--output", &p("b.iso")]);
    assert!(run("isoinfo", &["-f", "-R", "-i", &p("a.iso")]).contains("/hello.txt"));
    assert!(!run("isoinfo", &["-f", "-R", "-i", &p("b.iso")]).contains("/hello.txt"));

    // wim split --out-dir: parts wimlib reads.
    let wim = d.path().join("x.wim");
    run("wimlib-imagex", &["capture", &s(&tree), &s(&wim), "one"]);
    std::fs::create_dir(d.path().join("parts")).unwrap();
    dc_ok(&["wim", "split", &s(&wim), "--out-dir", &p("parts"), "--size", "1M"]);
    assert!(run("wimlib-imagex", &["info", &p("parts/x.swm")]).contains("one"));

    for (cmd, hidden, shown) in [
        (&["mkfs"][..], "--output", "-o, --out <OUT>"),
        (&["mkdisk"], "--output", "-o, --out <OUT>"),
        (&["extract"], "--output", "-o, --out <OUT.tar>"),
        (&["iso", "create"], "--output", "-o, --out <OUT.iso>"),
        (&["iso", "remaster"], "--output", "-o, --out <OUT.iso>"),
        (&["wim", "split"], "--out-dir", "-o, --out <DIR>"),
    ] {
        let help = dc_ok(&[cmd, &["--help"]].concat()).stdout_str();
        assert!(help.contains(shown), "{cmd:?} --help lacks {shown}:\n{help}");
        let mentions = help.match_indices(hidden).any(|(i, _)| {
            let next = help[i + hidden.len()..].chars().next();
            !matches!(next, Some('-' | 'a'..='z'))
        });
        assert!(!mentions, "{cmd:?} --help shows {hidden}:\n{help}");
    }
}

/// `--format-options` is `-o`'s long name in qemu-img's verbs: qemu-img sees the
/// cluster size it sets.
#[test]
fn format_options_is_the_long_name_of_o() {
    let d = tmp();
    let a = d.path().join("a.qcow2");
    dc_ok(&["create", "-f", "qcow2", "--format-options", "cluster_size=128K", &s(&a), "4M"]);
    assert_eq!(qemu_info(&a)["cluster-size"], 131072);
    let b = d.path().join("b.qcow2");
    dc_ok(&["convert", "-O", "qcow2", "--format-options=cluster_size=256K", &s(&a), &s(&b)]);
    assert_eq!(qemu_info(&b)["cluster-size"], 262144);
    let m =
        dc_ok(&["measure", "-O", "qcow2", "--format-options", "cluster_size=2M", "--size", "1G", "--output", "json"]);
    let o = dc_ok(&["measure", "-O", "qcow2", "-o", "cluster_size=2M", "--size", "1G", "--output", "json"]);
    assert_eq!(m.json(), o.json());
}

/// `inspect --output human` is its text table, as `human` is every other command's.
#[test]
fn inspect_output_human_is_the_table() {
    let d = tmp();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    write_file(&d.path().join("etc/os-release"), b"ID=debian\nVERSION_ID=\"12\"\n");
    let human = dc_ok(&["inspect", "--output", "human", &s(d.path())]);
    let table = dc_ok(&["inspect", "--output", "table", &s(d.path())]);
    assert_eq!(human.stdout, table.stdout);
}

/// A count of one takes the singular (`1 partition`), judged against sgdisk's count.
#[test]
fn counts_of_one_are_singular() {
    let d = tmp();
    let disk = d.path().join("one.img");
    let r = dc_ok(&["mkdisk", "-o", &s(&disk), "--part", "swap:none:1M"]);
    assert!(run("sgdisk", &["-p", &s(&disk)]).lines().filter(|l| l.contains(" 8200 ")).count() == 1);
    assert!(r.stderr.contains(", 1 partition)"), "{}", r.describe());
    let two = d.path().join("two.img");
    let r = dc_ok(&["mkdisk", "-o", &s(&two), "--part", "swap:none:1M", "--part", "linux:none:1M"]);
    assert!(r.stderr.contains(", 2 partitions)"), "{}", r.describe());
    let e = dc(&["mkdisk", "-o", &s(&d.path().join("x.img")), "--part", "swap:none:1M", "--bootable", "2"]);
    assert!(e.expect_code(1).stderr.contains("has 1 partition "), "bootable 2 of 1");
}

/// A cause the message already holds is not printed again: a registry that refuses the
/// connection gives `...: Connection refused (os error 111)` once, not twice.
#[test]
fn error_chains_print_each_cause_once() {
    let r = dc(&["ls", "docker://127.0.0.1:1/none:latest", "--tls-verify=false"]).expect_code(1);
    let line = r.stderr.lines().find(|l| l.starts_with("diskcast: ")).unwrap_or_else(|| panic!("{}", r.describe()));
    assert!(line.contains("refused"), "{line}");
    let parts: Vec<&str> = line.split(": ").collect();
    let unique: BTreeSet<&str> = parts.iter().copied().collect();
    assert_eq!(parts.len(), unique.len(), "a cause repeats: {line}");
}
