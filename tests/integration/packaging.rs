//! What a package ships besides the binary: shell completions, man pages and a
//! `--version` naming the commit. Each is judged by the program that consumes it: bash,
//! fish, zsh and elvish load and run the completion scripts, groff, man and mandoc render
//! and lint the pages, git says which commit a build came from.

use crate::support::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `tool` with `args` (stdin empty), failing the test when it is missing or fails;
/// its stdout and stderr.
fn tool(tool: &str, args: &[&str]) -> (String, String) {
    tool_env(tool, args, &[])
}

fn tool_env(tool: &str, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = Command::new(tool)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required (scripts/setup.sh installs it): {e}"));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{tool} {args:?} failed ({}):\n{stdout}\n{stderr}", out.status);
    (stdout, stderr)
}

/// Every page `diskcast man` should write: one per command and subcommand, from `--help`.
fn expected_pages() -> BTreeSet<String> {
    let mut pages = BTreeSet::from(["diskcast.1".to_string()]);
    for c in commands_in_help(&[]) {
        pages.insert(format!("diskcast-{c}.1"));
        for sub in commands_in_help(&[&c]) {
            pages.insert(format!("diskcast-{c}-{sub}.1"));
        }
    }
    pages
}

/// The bash script loads, registers a function for `diskcast`, and that function, driven
/// as bash's completion drives it (COMP_WORDS, COMP_CWORD), completes commands,
/// subcommands, flags and the values of `--output`; hidden aliases are not offered.
#[test]
fn bash_completion_completes_commands_and_flags() {
    let d = tmp();
    let script = d.path().join("diskcast.bash");
    write_file(&script, &dc_ok(&["completions", "bash"]).stdout);
    // $1 the script, the rest the words typed so far (the last is being completed).
    let driver = r#"
source "$1"; shift
spec=$(complete -p diskcast) || exit 3
fn=${spec##*-F }; fn=${fn%% *}
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
"$fn" diskcast "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
echo "spec: $spec"
printf 'reply: %s\n' "${COMPREPLY[@]}"
"#;
    let script = s(&script);
    let complete = |words: &[&str]| -> (String, BTreeSet<String>) {
        let mut args = vec!["-c", driver, "driver", &script];
        args.extend_from_slice(words);
        let (out, err) = tool("bash", &args);
        assert!(err.is_empty(), "bash printed errors for {words:?}:\n{err}");
        let spec = out.lines().find_map(|l| l.strip_prefix("spec: ")).unwrap_or_default().to_string();
        (spec, out.lines().filter_map(|l| l.strip_prefix("reply: ")).map(str::to_string).collect())
    };
    let (spec, all) = complete(&["diskcast", ""]);
    assert!(spec.starts_with("complete ") && spec.ends_with(" diskcast") && spec.contains(" -F "), "{spec}");
    let commands = commands_in_help(&[]);
    assert!(commands.len() > 20, "{commands:?}");
    for c in &commands {
        assert!(all.contains(c), "`diskcast <TAB>` does not offer {c}: {all:?}");
    }
    let co: BTreeSet<String> = commands.iter().filter(|c| c.starts_with("co")).cloned().collect();
    assert_eq!(complete(&["diskcast", "co"]).1, co);
    let iso = commands_in_help(&["iso"]);
    assert!(iso.len() == 3 && iso.is_subset(&complete(&["diskcast", "iso", ""]).1), "{iso:?}");
    assert_eq!(complete(&["diskcast", "convert", "--salv"]).1, BTreeSet::from(["--salvage".to_string()]));
    let values = complete(&["diskcast", "info", "--output", ""]).1;
    assert_eq!(values, BTreeSet::from(["human".to_string(), "json".to_string()]));
    // `--output` of mkfs is a hidden alias of --out, not offered.
    let mkfs = complete(&["diskcast", "mkfs", "--ou"]).1;
    assert_eq!(mkfs, BTreeSet::from(["--out".to_string(), "--output-format".to_string()]));
}

/// fish and zsh parse their scripts (`-n`), and fish's own `complete -C` answers from
/// it; elvish gets every command from the completer its script registers.
#[test]
fn fish_zsh_and_elvish_take_their_scripts() {
    let d = tmp();
    let fish = d.path().join("diskcast.fish");
    write_file(&fish, &dc_ok(&["completions", "fish"]).stdout);
    tool("fish", &["-n", &s(&fish)]);
    let (out, _) = tool("fish", &["-c", &format!("source {}; complete -C 'diskcast co'", s(&fish))]);
    let offered: BTreeSet<&str> = out.lines().filter_map(|l| l.split('\t').next()).collect();
    let co: BTreeSet<String> = commands_in_help(&[]).into_iter().filter(|c| c.starts_with("co")).collect();
    assert_eq!(offered, co.iter().map(String::as_str).collect(), "{out}");
    let (out, _) = tool("fish", &["-c", &format!("source {}; complete -C 'diskcast info --output '", s(&fish))]);
    let values: BTreeSet<&str> = out.lines().filter_map(|l| l.split('\t').next()).collect();
    assert_eq!(values, BTreeSet::from(["human", "json"]), "{out}");

    let zsh = d.path().join("_diskcast");
    write_file(&zsh, &dc_ok(&["completions", "zsh"]).stdout);
    tool("zsh", &["-n", &s(&zsh)]);
    let text = std::fs::read_to_string(&zsh).unwrap();
    assert!(text.starts_with("#compdef diskcast"), "{}", &text[..text.len().min(200)]);

    let elvish = d.path().join("diskcast.elv");
    write_file(&elvish, &dc_ok(&["completions", "elvish"]).stdout);
    // The script run by elvish itself, without a terminal: its editor module exists only
    // in an interactive shell (driving one on a pty hung in a fresh Debian chroot, where
    // `timeout` could not stop it: an interactive elvish ignores SIGTERM), so the script is
    // evaluated in a namespace standing in for `edit:` with the one function it calls,
    // and the completer it registers is called as the editor would call it.
    let drive = d.path().join("drive.elv");
    let line = format!(
        "var c = (ns [&arg-completer=[&]])\n\
         var e = (ns [&completion:=$c &complex-candidate~={{|stem &display=''| put [&stem=$stem &display=$display] }}])\n\
         eval (slurp < {}) &ns=(ns [&edit:=$e])\n\
         $c[arg-completer][diskcast] diskcast '' | each {{|x| echo CAND:$x[stem]:END }}\n",
        s(&elvish)
    );
    write_file(&drive, line.as_bytes());
    let run = Command::new("timeout")
        .args(["-s", "KILL", "60", "elvish", "-norc", &s(&drive)])
        .stdin(Stdio::null())
        .output()
        .expect("elvish is required (scripts/setup.sh installs it)");
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "elvish failed:\n{out}\n{}", String::from_utf8_lossy(&run.stderr));
    let offered: BTreeSet<String> =
        out.split("CAND:").skip(1).filter_map(|c| c.split_once(":END").map(|(w, _)| w.to_string())).collect();
    for c in commands_in_help(&[]) {
        assert!(offered.contains(&c), "elvish's completer does not offer {c}: {offered:?}\n{out}");
    }
    // No shell here runs PowerShell scripts (Debian packages none); clap_complete makes it.
    let ps = dc_ok(&["completions", "powershell"]).stdout_str();
    assert!(ps.contains("Register-ArgumentCompleter") && ps.contains("'diskcast;convert'"), "{ps}");
}

/// `diskcast man DIR` writes one page per command and subcommand; groff renders each
/// without a warning, mandoc's linter finds nothing at warning level, `man -l` shows
/// them, and every long flag of a command's --help is on its page.
#[test]
fn man_pages_render_clean_and_match_help() {
    let d = tmp();
    let dir = d.path().join("man1");
    let listed = dc_ok(&["man", &s(&dir)]).stdout_str();
    let written: BTreeSet<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(written, expected_pages());
    assert_eq!(listed.lines().count(), written.len(), "{listed}");
    assert!(stray_temps(&dir).is_empty());
    for page in &written {
        let path = dir.join(page);
        let (_, warnings) = tool("groff", &["-man", "-Tutf8", "-ww", "-z", &s(&path)]);
        assert!(warnings.is_empty(), "groff warns about {page}:\n{warnings}");
        let (lint, lint_err) = tool("mandoc", &["-Tlint", "-W", "warning", &s(&path)]);
        assert!(lint.is_empty() && lint_err.is_empty(), "mandoc -Tlint on {page}:\n{lint}{lint_err}");
        // Plain ASCII, no hyphenation, long lines: flags read as typed.
        let (text, _) = tool("groff", &["-man", "-Tascii", "-ww", "-rLL=300n", "-rHY=0", "-P-cbou", &s(&path)]);
        let words: Vec<&str> = page.trim_end_matches(".1").split('-').skip(1).collect();
        let mut args = words.clone();
        args.push("--help");
        let help = dc_ok(&args).stdout_str();
        // The long flag of each option line (`  -o, --out <OUT>`, `      --salvage`).
        let flags: BTreeSet<&str> = help
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with('-'))
            .filter_map(|l| l.split([',', ' ', '=', '[']).find(|w| w.starts_with("--") && w.len() > 2))
            .collect();
        assert!(flags.contains("--help"), "{help}");
        let options = text.split("OPTIONS").nth(1).unwrap_or_default();
        for f in &flags {
            assert!(options.contains(f), "{page} lacks {f} of `diskcast {}`", words.join(" "));
        }
    }
    let (shown, err) =
        tool_env("man", &["-l", "-P", "cat", &s(&dir.join("diskcast-convert.1"))], &[("MANWIDTH", "100")]);
    assert!(err.is_empty(), "man -l warns:\n{err}");
    assert!(shown.contains("NAME") && shown.contains("diskcast-convert") && shown.contains("Examples:"), "{shown}");
    assert!(shown.contains(dc_ok(&["--version"]).stdout_str().trim()), "the page does not name the version:\n{shown}");
}

/// The version names the commit the binary was built from, as git says (CI builds from
/// a clone), and only the version when the tree has no git metadata.
#[test]
fn version_names_the_commit() {
    let shown = dc_ok(&["--version"]).stdout_str();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ws = s(&workspace);
    let version = env!("CARGO_PKG_VERSION");
    let git = Command::new("git").args(["-C", &ws, "rev-parse", "--short=7", "HEAD"]).output().unwrap();
    if git.status.success() {
        let hash = String::from_utf8_lossy(&git.stdout).trim().to_string();
        let (date, _) = tool_env(
            "git",
            &["-C", &ws, "show", "-s", "--format=%cd", "--date=format-local:%Y-%m-%d", "HEAD"],
            &[("TZ", "UTC")],
        );
        assert_eq!(shown.trim(), format!("diskcast {version} ({hash} {})", date.trim()));
    } else {
        assert_eq!(shown.trim(), format!("diskcast {version}"));
    }
}

/// The build script alone, run as Cargo runs it: in a git clone it names the clone's
/// HEAD (and follows a new commit), in a `git archive` tarball only the version, and a
/// tarball unpacked inside another repository does not take that repository's commit.
#[test]
fn build_script_versions_clones_and_tarballs() {
    let d = tmp();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let exe = d.path().join("build-script");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs");
    tool(&rustc, &["--edition", "2024", "-o", &s(&exe), &s(&src)]);
    let run = |manifest: &Path| -> (String, Vec<String>) {
        let out =
            Command::new(&exe).env("CARGO_PKG_VERSION", "9.8.7").env("CARGO_MANIFEST_DIR", manifest).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version = text.lines().find_map(|l| l.strip_prefix("cargo:rustc-env=DISKCAST_VERSION=")).unwrap();
        let watched = text.lines().filter_map(|l| l.strip_prefix("cargo:rerun-if-changed=")).map(String::from);
        (version.to_string(), watched.collect())
    };
    let git = |dir: &Path, args: &[&str]| -> String {
        let mut all = vec!["-C", dir.to_str().unwrap(), "-c", "user.name=t", "-c", "user.email=t@example.org"];
        all.extend_from_slice(args);
        tool_env("git", &all, &[("GIT_COMMITTER_DATE", "2024-02-29T23:30:00-05:00"), ("TZ", "UTC")]).0.trim().into()
    };
    let origin = d.path().join("origin");
    std::fs::create_dir_all(origin.join("crates/cli")).unwrap();
    write_file(&origin.join("crates/cli/Cargo.toml"), b"[package]\nname = \"x\"\n");
    git(&origin, &["init", "-q", "-b", "main"]);
    git(&origin, &["add", "."]);
    git(&origin, &["commit", "-q", "-m", "one"]);
    let clone = d.path().join("clone");
    tool("git", &["clone", "-q", &s(&origin), &s(&clone)]);
    let head = git(&clone, &["rev-parse", "--short=7", "HEAD"]);
    // 23:30 at UTC-5 is the next day in UTC.
    let (version, watched) = run(&clone.join("crates/cli"));
    assert_eq!(version, format!("9.8.7 ({head} 2024-03-01)"));
    let watches = |p: &Path| watched.iter().any(|w| Path::new(w).canonicalize().ok() == p.canonicalize().ok());
    assert!(watches(&clone.join(".git/HEAD")) && watches(&clone.join(".git/refs/heads/main")), "{watched:?}");

    git(&clone, &["commit", "-q", "--allow-empty", "-m", "two"]);
    let next = git(&clone, &["rev-parse", "--short=7", "HEAD"]);
    assert_ne!(next, head);
    assert_eq!(run(&clone.join("crates/cli")).0, format!("9.8.7 ({next} 2024-03-01)"));

    let tarball = d.path().join("x.tar");
    git(&clone, &["archive", "-o", &s(&tarball), "--prefix=diskcast-9.8.7/", "HEAD"]);
    let unpacked = d.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    tool("tar", &["-xf", &s(&tarball), "-C", &s(&unpacked)]);
    let (version, watched) = run(&unpacked.join("diskcast-9.8.7/crates/cli"));
    assert_eq!(version, "9.8.7");
    assert_eq!(watched, vec!["build.rs".to_string()]);
    // The same tarball unpacked inside another repository (the clone).
    tool("tar", &["-xf", &s(&tarball), "-C", &s(&clone)]);
    assert_eq!(run(&clone.join("diskcast-9.8.7/crates/cli")).0, "9.8.7");
}

/// The workspace's root (where `scripts/` is).
fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Lintian tags the package still draws, each for a reason the package cannot fix by
/// itself: the project names no maintainer address or copyright holder yet
/// (`[package.metadata.deb]` maintainer, `Cargo.toml` authors), and a Debian changelog
/// needs that address too. Any other tag fails the test.
const LINTIAN_KNOWN: [&str; 3] = ["malformed-contact", "no-changelog", "copyright-without-copyright-notice"];

/// `scripts/deb.sh` builds the package with cargo-deb (a release build); dpkg-deb shows
/// its control fields and files, lintian finds nothing beyond [`LINTIAN_KNOWN`], apt
/// resolves its dependencies on this machine (simulated), and dpkg installs it into a
/// throwaway root (`--root`: its own database, the host's untouched) where the binary
/// runs, `man` renders its pages and bash loads its completion; dpkg then removes it.
#[test]
fn debian_package_builds_installs_and_runs() {
    let ws = workspace();
    let started = std::time::Instant::now();
    let mut deb_sh = Command::new("bash");
    // Without the variables cargo sets for a test (CARGO_MANIFEST_DIR, OUT_DIR...): build
    // scripts that watch them (ring's) would see a change and rebuild the release tree.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let set_for_tests = ["CARGO", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"]
            .contains(&k.as_str())
            || ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"].iter().any(|p| k.starts_with(p));
        if set_for_tests {
            deb_sh.env_remove(&k);
        }
    }
    let out = deb_sh.arg(ws.join("scripts/deb.sh")).current_dir(&ws).stdin(Stdio::null()).output().expect("bash");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scripts/deb.sh failed (cargo-deb: scripts/setup.sh installs it):\n{log}");
    eprintln!("scripts/deb.sh took {:.0} s", started.elapsed().as_secs_f64());
    let version = env!("CARGO_PKG_VERSION");
    let deb = ws.join(format!("target/debian/diskcast_{version}-1_amd64.deb"));
    assert!(deb.is_file(), "no {} after scripts/deb.sh:\n{log}", deb.display());
    let deb = s(&deb);

    let (info, _) = tool("dpkg-deb", &["--info", &deb]);
    for field in ["Package: diskcast", &format!("Version: {version}-1"), "Architecture: amd64", "Depends: libc6"] {
        assert!(info.contains(field), "dpkg-deb --info lacks {field:?}:\n{info}");
    }
    let (contents, _) = tool("dpkg-deb", &["--contents", &deb]);
    let files: BTreeSet<&str> =
        contents.lines().filter_map(|l| l.split_whitespace().nth(5)).map(|p| p.trim_start_matches('.')).collect();
    let mut want: BTreeSet<String> = [
        "/usr/bin/diskcast",
        "/usr/share/bash-completion/completions/diskcast",
        "/usr/share/zsh/vendor-completions/_diskcast",
        "/usr/share/fish/vendor_completions.d/diskcast.fish",
        "/usr/share/doc/diskcast/README.md",
        "/usr/share/doc/diskcast/copyright",
        "/usr/share/lintian/overrides/diskcast",
    ]
    .map(String::from)
    .into();
    want.extend(expected_pages().iter().map(|p| format!("/usr/share/man/man1/{p}.gz")));
    let missing: Vec<&String> = want.iter().filter(|w| !files.contains(w.as_str())).collect();
    assert!(missing.is_empty(), "the package lacks {missing:?}:\n{contents}");

    let lintian = Command::new("lintian")
        .args(["--tag-display-limit", "0", "--suppress-tags", &LINTIAN_KNOWN.join(","), &deb])
        .stdin(Stdio::null())
        .output()
        .expect("lintian is required (scripts/setup.sh installs it)");
    let report = String::from_utf8_lossy(&lintian.stdout);
    assert!(
        lintian.status.success(),
        "lintian: {}\n{report}{}",
        lintian.status,
        String::from_utf8_lossy(&lintian.stderr)
    );
    let tags: Vec<String> = report
        .lines()
        .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':' && "EWIPX".contains(&l[..1]))
        .map(String::from)
        .collect();
    assert!(tags.is_empty(), "lintian finds more than the known tags {LINTIAN_KNOWN:?}:\n{}", tags.join("\n"));

    // Its dependencies resolve on this machine, as apt would install it (nothing installed).
    tool("apt-get", &["install", "--simulate", "-qq", &deb]);

    let d = tmp();
    let root = d.path().join("root");
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let r = s(&root);
    // libc6 is this machine's (apt resolved it above); the throwaway database lacks it.
    tool("dpkg", &["--root", &r, "--force-depends", "--force-script-chrootless", "-i", &deb]);
    let (listed, _) = tool("dpkg", &["--root", &r, "-L", "diskcast"]);
    assert!(listed.lines().any(|l| l == "/usr/bin/diskcast"), "{listed}");
    let bin = root.join("usr/bin/diskcast");
    let (shown, _) = tool(&s(&bin), &["--version"]);
    assert_eq!(shown, dc_ok(&["--version"]).stdout_str(), "the packaged binary is not this build's");
    let page = root.join("usr/share/man/man1/diskcast-convert.1.gz");
    let (text, err) = tool_env("man", &["-l", "-P", "cat", &s(&page)], &[("MANWIDTH", "100")]);
    assert!(err.is_empty() && text.contains("diskcast-convert"), "man -l {}:\n{text}{err}", page.display());
    let completion = root.join("usr/share/bash-completion/completions/diskcast");
    let (spec, _) = tool("bash", &["-c", &format!("source '{}' && complete -p diskcast", s(&completion))]);
    assert!(spec.contains(" -F ") && spec.trim_end().ends_with(" diskcast"), "{spec}");
    tool("dpkg", &["--root", &r, "--force-script-chrootless", "-r", "diskcast"]);
    assert!(!bin.exists() && !page.exists(), "dpkg -r left the files");
}

/// README's first command: scripts/demo.sh runs its four jobs (conversion, container
/// image to a VM disk booted under QEMU, ISO extraction, USB stick), each judged by its
/// reference tool inside the script; here with this build's binary (DISKCAST), so no
/// release build is made.
#[test]
fn demo_script_runs_every_job() {
    let ws = workspace();
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .args(["-k", "10", "600", "bash"])
        .arg(ws.join("scripts/demo.sh"))
        .env("DISKCAST", diskcast_bin())
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scripts/demo.sh failed ({}):\n{text}", out.status);
    eprintln!("scripts/demo.sh took {:.0} s", started.elapsed().as_secs_f64());
    assert_eq!(text.lines().filter(|l| l.starts_with("OK: ")).count(), 4, "{text}");
    assert!(text.lines().any(|l| l.starts_with("DISKCAST_DEMO_BOOTED kernel=")), "{text}");
    assert!(text.contains("demo: all 4 jobs done"), "{text}");
}
