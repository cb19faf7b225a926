//! A shell script written for qemu-img, run twice: once with qemu-img, once with diskcast
//! in its place (a `qemu-img` on PATH that is diskcast). Every JSON it saves is compared
//! field for field, and so is every line of text it saves. Only what must differ is
//! normalised, each named in [`normalise`] with the reason; diskcast may print keys
//! qemu-img leaves out, only those in [`EXTRA_KEYS`].
//! qemu-io writes the data in both runs: it is never the tool under test.
//! `snapshot -l`'s creation dates differ between the two runs and are replaced by DATE.

use crate::support::*;
use serde_json::Value;
use std::path::Path;

const SCRIPT: &str = r#"set -eu
qemu-img create -q -f qcow2 base.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x5a 0 4M' -c 'write -z 8M 1M' -c 'write -P 0xa5 60M 4M' base.qcow2 >/dev/null
qemu-img convert -p -O qcow2 -o cluster_size=128k,compression_type=zlib -c base.qcow2 small.qcow2 >/dev/null
qemu-img convert -p -O raw base.qcow2 flat.raw >/dev/null
qemu-img convert -O qcow2 flat.raw plain.qcow2
qemu-img info --output=json base.qcow2 > info-base.json
qemu-img info --output=json small.qcow2 > info-small.json
qemu-img info --output=json flat.raw > info-raw.json
qemu-img map --output=json base.qcow2 > map-base.json
qemu-img map --output=json small.qcow2 > map-small.json
qemu-img map --output=json plain.qcow2 > map-plain.json
qemu-img map --output=json flat.raw > map-raw.json
qemu-img check --output=json base.qcow2 > check-base.json
qemu-img check --output=json small.qcow2 > check-small.json
qemu-img measure --output=json -O qcow2 flat.raw > measure.json
qemu-img measure --output=json -O qcow2 -o cluster_size=1M base.qcow2 > measure-1m.json
qemu-img measure --output=json -O qcow2 --size 10G > measure-size.json
qemu-img compare base.qcow2 small.qcow2 > compare.txt
qemu-img compare flat.raw plain.qcow2 >> compare.txt
if qemu-img compare -q base.qcow2 flat.raw; then echo same >> compare.txt; fi
qemu-io -f raw -c 'write -P 0x01 32M 4k' flat.raw >/dev/null
if qemu-img compare base.qcow2 flat.raw >> compare.txt; then echo same >> compare.txt; else echo "differ: $?" >> compare.txt; fi
qemu-img resize plain.qcow2 +64M > resize.txt
qemu-img resize -f raw --shrink flat.raw 48M >> resize.txt
qemu-img info --output=json plain.qcow2 > info-resized.json
qemu-img info --output=json flat.raw > info-raw-resized.json
qemu-img snapshot -c first plain.qcow2
qemu-img snapshot -c second plain.qcow2
qemu-img snapshot -l plain.qcow2 | sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}/DATE/' > snapshot.txt
qemu-img snapshot -a first plain.qcow2
qemu-img snapshot -d second plain.qcow2
qemu-img snapshot -l plain.qcow2 | sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}/DATE/' >> snapshot.txt
qemu-img check --output=json plain.qcow2 > check-snapshot.json
"#;

/// What each JSON holds (JSON files) and the text files, in the order the script writes them.
const JSON: [&str; 15] = [
    "info-base.json",
    "info-small.json",
    "info-raw.json",
    "map-base.json",
    "map-small.json",
    "map-plain.json",
    "map-raw.json",
    "check-base.json",
    "check-small.json",
    "measure.json",
    "measure-1m.json",
    "measure-size.json",
    "info-resized.json",
    "info-raw-resized.json",
    "check-snapshot.json",
];
const TEXT: [&str; 3] = ["compare.txt", "resize.txt", "snapshot.txt"];

/// Keys diskcast prints that qemu-img does not, by file prefix: `check` always prints its
/// counters and messages (qemu-img drops those that are 0 or empty); `info` also gives the
/// compression type at the top level.
const EXTRA_KEYS: [(&str, &str); 6] = [
    ("check-", ".corruptions"),
    ("check-", ".leaks"),
    ("check-", ".messages"),
    ("check-", ".fragmented-clusters"),
    ("check-", ".compressed-clusters"),
    ("info-", ".compression-type"),
];

/// The script in `dir`, with `shim` (a directory holding a `qemu-img`) first on PATH
/// when given.
fn run_script(dir: &Path, shim: Option<&Path>) {
    std::fs::write(dir.join("script.sh"), SCRIPT).unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("script.sh").current_dir(dir).stdin(std::process::Stdio::null());
    if let Some(shim) = shim {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", s(shim)));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "the qemu-img script failed ({}):\n{}{}",
        if shim.is_some() { "diskcast as qemu-img" } else { "qemu-img" },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The differences that must be, removed from both sides; each says why.
fn normalise(file: &str, v: &mut Value) {
    // The bytes allocated to the qcow2 `create` made (then filled by qemu-io): where a
    // new image's metadata sits is the writer's choice (qemu-img: header, refcount table
    // and block in one run; diskcast: the same clusters with the L1 table apart, a hole
    // between), so the blocks the file occupies differ by that layout.
    // The same for plain.qcow2 (`info-resized.json`), written by each tool's `convert`:
    // diskcast's writer threads place clusters in the order they finish, so under load a
    // block of the file can be a hole in one run and allocated in another (seen: 4 KiB).
    if file == "info-base.json" || file == "info-resized.json" {
        v.as_object_mut().map(|o| o.remove("actual-size"));
        drop_child_key(v, "actual-size");
    }
    // The file under a compressed qcow2 (its `children` entry's virtual size is the file's
    // length): qemu-img ends the file right after the last compressed cluster's bytes,
    // diskcast at the end of the host cluster they are in (both inside image-end-offset).
    if file == "info-small.json" {
        drop_child_key(v, "virtual-size");
    }
    // Where a plain (uncompressed) qcow2 written by each tool keeps each guest cluster is
    // that writer's choice: diskcast writes clusters from several threads, so its host
    // offsets differ and runs qemu-img reports as one extent can split where the host
    // offsets stop being contiguous. The guest view (start, length, data, zero...) must
    // agree: offsets are dropped and neighbouring extents that then agree are merged.
    if file == "map-plain.json" {
        let mut merged: Vec<Value> = Vec::new();
        for mut e in v.as_array().cloned().unwrap_or_default() {
            e.as_object_mut().map(|o| o.remove("offset"));
            if let Some(last) = merged.last_mut() {
                let same = ["present", "zero", "data", "compressed", "depth"].iter().all(|k| last[k] == e[k]);
                let (start, len) = (last["start"].as_u64().unwrap(), last["length"].as_u64().unwrap());
                if same && start + len == e["start"].as_u64().unwrap() {
                    last["length"] = (len + e["length"].as_u64().unwrap()).into();
                    continue;
                }
            }
            merged.push(e);
        }
        *v = Value::Array(merged);
    }
}

/// `key` removed from the info of each of `info`'s children (the file under the image).
fn drop_child_key(info: &mut Value, key: &str) {
    for c in info["children"].as_array_mut().into_iter().flatten() {
        c["info"].as_object_mut().map(|o| o.remove(key));
    }
}

/// Every field of qemu-img's JSON in ours with the same value, and no key of ours
/// missing from qemu-img's but those [`EXTRA_KEYS`] allows.
fn differences(file: &str, theirs: &Value, ours: &Value, at: &str, out: &mut Vec<String>) {
    match (theirs, ours) {
        (Value::Object(t), Value::Object(o)) => {
            for (k, tv) in t {
                match o.get(k) {
                    Some(ov) => differences(file, tv, ov, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}: missing (qemu-img: {tv})")),
                }
            }
            for k in o.keys().filter(|k| !t.contains_key(*k)) {
                let path = format!("{at}.{k}");
                if !EXTRA_KEYS.iter().any(|(prefix, p)| file.starts_with(prefix) && *p == path) {
                    out.push(format!("{path}: only diskcast prints it ({})", o[k]));
                }
            }
        }
        (Value::Array(t), Value::Array(o)) if t.len() == o.len() => {
            for (i, (tv, ov)) in t.iter().zip(o).enumerate() {
                differences(file, tv, ov, &format!("{at}[{i}]"), out);
            }
        }
        (t, o) if t != o => out.push(format!("{at}: {o}, qemu-img: {t}")),
        _ => {}
    }
}

#[test]
fn qemu_img_script_prints_the_same_json_with_diskcast_in_its_place() {
    let (ours, theirs, shim) = (tmp(), tmp(), tmp());
    std::os::unix::fs::symlink(diskcast_bin(), shim.path().join("qemu-img")).unwrap();
    run_script(theirs.path(), None);
    run_script(ours.path(), Some(shim.path()));
    let mut problems = Vec::new();
    for file in JSON {
        let load = |dir: &Path| -> Value {
            let mut v: Value = serde_json::from_slice(&read(&dir.join(file)))
                .unwrap_or_else(|e| panic!("{file} in {} is not JSON: {e}", dir.display()));
            normalise(file, &mut v);
            v
        };
        let (t, o) = (load(theirs.path()), load(ours.path()));
        let mut out = Vec::new();
        differences(file, &t, &o, "", &mut out);
        problems.extend(out.into_iter().map(|p| format!("{file}: {p}")));
    }
    for file in TEXT {
        let (t, o) = (read(&theirs.path().join(file)), read(&ours.path().join(file)));
        if t != o {
            problems.push(format!(
                "{file}: diskcast printed\n{}\nqemu-img printed\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&t)
            ));
        }
    }
    assert!(problems.is_empty(), "the script's outputs differ:\n  {}", problems.join("\n  "));
    // The images the script left, judged by qemu-img itself.
    for name in ["base.qcow2", "small.qcow2", "plain.qcow2"] {
        qemu_check_clean(&ours.path().join(name));
        qemu_compare(&ours.path().join(name), "qcow2", &theirs.path().join(name), "qcow2");
    }
    qemu_compare(&ours.path().join("flat.raw"), "raw", &theirs.path().join("flat.raw"), "raw");
}
