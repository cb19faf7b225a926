//! The command line itself: usage errors, size suffixes, help text, and errors that name
//! what the user typed.

use crate::support::*;

/// Usage errors exit 1 as qemu-img's do; `--help` and `--version` exit 0.
#[test]
fn usage_errors_exit_1() {
    dc(&["convert", "--no-such-flag", "a", "b"]).expect_code(1).expect_stderr_any(&["--no-such-flag"]);
    dc(&["convert", "only-one-arg"]).expect_code(1);
    dc(&["frobnicate"]).expect_code(1);
    dc(&["check"]).expect_code(1);
    dc(&["--help"]).expect_ok();
    dc(&["--version"]).expect_ok();
}

/// The top-level help names every format and filesystem the registries have, from the
/// registries.
#[test]
fn top_level_help_lists_every_format() {
    let help = dc_ok(&["--help"]).stdout_str();
    let formats = dc_ok(&["formats", "--output", "json"]).json();
    for f in formats.as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        assert!(help.contains(name), "--help does not list {name}:\n{help}");
    }
}

/// `1g` is a size as `1G` is, as qemu-img accepts it.
#[test]
fn sizes_take_lower_case_suffixes() {
    let d = tmp();
    let p = d.path().join("lower.qcow2");
    dc_ok(&["create", "-f", "qcow2", &s(&p), "1g"]);
    assert_eq!(qemu_info(&p)["virtual-size"], 1u64 << 30);
    dc_ok(&["measure", "-O", "qcow2", "--size", "64m"]);
}

/// `-c` to a raw stdout is refused exactly as to a raw file: the stream path validates
/// the driver's options too, and nothing is written to stdout.
#[test]
fn stdout_validates_like_a_file() {
    let d = tmp();
    let src = d.path().join("a.raw");
    write_index_pattern(&src, MIB, 0);
    let to_file = dc(&["convert", "-c", "-O", "raw", &s(&src), &s(&d.path().join("b.raw"))]).expect_code(1);
    let to_stdout = dc(&["convert", "-c", "-O", "raw", &s(&src), "-"]).expect_code(1);
    assert!(to_stdout.stdout.is_empty());
    assert!(
        to_file.stderr.contains("compressed") && to_stdout.stderr.contains("compressed"),
        "{}",
        to_stdout.describe()
    );
    dc(&["convert", "-O", "vmdk", &s(&src), "-"]).expect_code(1).expect_stderr_all(&["subformat=streamOptimized"]);
}

/// An error creating the output names the target the user gave, not the file being
/// written (here the name is one byte too long for the filesystem, which only the final
/// link into place finds out).
#[test]
fn output_errors_name_the_target() {
    let d = tmp();
    let src = d.path().join("a.raw");
    write_index_pattern(&src, MIB, 0);
    let name = format!("{}.raw", "x".repeat(252));
    let dst = d.path().join(&name);
    let r = dc(&["convert", "-O", "qcow2", &s(&src), &s(&dst)]).expect_code(1).expect_diskcast_error();
    let first = r.stderr.lines().find(|l| l.starts_with("diskcast: ")).unwrap();
    assert!(first.starts_with(&format!("diskcast: {}", s(&dst))), "{}", r.describe());
    assert_no_output(&dst);
}
