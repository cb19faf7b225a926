//! Helpers for the OCI tests: building images with umoci and skopeo, and describing a
//! tree and an unpacked directory the same way so they can be compared line by line.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use diskcast_tree::{Kind, NodeId, Tree};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a tool (failing the test if it is missing or fails) and returns its stdout.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new("timeout").arg("300").arg(tool).args(args).output().unwrap_or_else(|e| {
        panic!("{tool} is required for this test and could not run: {e} (scripts/setup.sh installs it)")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `crates/oci/tests/fixtures/NAME` (from this crate's tests or the CLI's, which share
/// this module: both crates live in `crates/`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../oci/tests/fixtures").join(name)
}

/// The multi-layer test image (see fixtures/mkimage.sh) as an OCI layout at `dir`, tag `t`.
pub fn make_image(dir: &Path) {
    run("bash", &[fixture("mkimage.sh").to_str().unwrap(), dir.to_str().unwrap(), "t"]);
}

/// `umoci unpack --rootless` of `image` (`DIR:TAG`) into `bundle`; returns the rootfs.
pub fn umoci_unpack(image: &str, bundle: &Path) -> PathBuf {
    run("umoci", &["unpack", "--rootless", "--image", image, bundle.to_str().unwrap()]);
    bundle.join("rootfs")
}

fn sha256_reader(mut r: impl Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// How a comparison treats device nodes: umoci's rootless unpack makes empty files.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// Devices stay devices.
    Real,
    /// Devices read as empty regular files (umoci --rootless).
    AsEmptyFiles,
}

/// One line per path: type, permissions, owner, content hash and size (files), target
/// (symlinks), device numbers, the first name of a hard-linked file, `user.` xattrs.
pub fn tree_manifest(tree: &Tree, devices: Devices) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut first_name: HashMap<NodeId, String> = HashMap::new();
    let counts = tree.link_counts();
    for (path, id) in tree.walk(NodeId::ROOT) {
        if path.is_empty() {
            continue;
        }
        let p = String::from_utf8_lossy(&path).into_owned();
        let n = tree.node(id);
        let mode = n.meta.mode & 0o7777;
        let owner = format!("{}:{}", n.meta.uid, n.meta.gid);
        let mut line = match &n.kind {
            Kind::Dir(_) => format!("d {mode:o} {owner}"),
            Kind::File(f) => format!("- {mode:o} {owner} {} {}", sha256_reader(f.reader().unwrap()), f.size),
            Kind::Symlink(t) => format!("l {owner} -> {}", String::from_utf8_lossy(t)),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } if devices == Devices::AsEmptyFiles => {
                let _ = (major, minor);
                format!("- {mode:o} {owner} {} 0", sha256_reader(&b""[..]))
            }
            Kind::CharDev { major, minor } => format!("c {mode:o} {owner} {major}:{minor}"),
            Kind::BlockDev { major, minor } => format!("b {mode:o} {owner} {major}:{minor}"),
            Kind::Fifo => format!("p {mode:o} {owner}"),
            Kind::Socket => format!("s {mode:o} {owner}"),
        };
        line.push_str(&format!(" t={}", n.meta.mtime.sec));
        if matches!(n.kind, Kind::File(_)) && counts[id.index()] > 1 {
            let first = first_name.entry(id).or_insert_with(|| p.clone());
            line.push_str(&format!(" link={first}"));
        }
        let mut xattrs: Vec<String> = n
            .xattrs
            .iter()
            .filter(|x| x.name.starts_with(b"user.") && x.name != b"user.rootlesscontainers")
            .map(|x| format!("{}={}", String::from_utf8_lossy(&x.name), hex(&x.value)))
            .collect();
        xattrs.sort();
        if !xattrs.is_empty() {
            line.push_str(&format!(" xattrs[{}]", xattrs.join(",")));
        }
        out.insert(p, line);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `user.` xattrs of every path under `root`, read with getfattr (an independent tool).
fn host_xattrs(root: &Path) -> HashMap<String, Vec<(String, String)>> {
    let out = Command::new("getfattr")
        .args(["-R", "-P", "-d", "-m", "^user\\.", "-e", "hex", "--absolute-names"])
        .arg(root)
        .output()
        .expect("getfattr is required (package attr)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut map: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut cur = String::new();
    let prefix = format!("{}/", root.display());
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            cur = f.strip_prefix(&prefix).unwrap_or(f).to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            map.entry(cur.clone()).or_default().push((k.to_string(), v.trim_start_matches("0x").to_string()));
        }
    }
    map
}

/// umoci's rootless unpack keeps the real owner in `user.rootlesscontainers` (a protobuf
/// with uid = field 1, gid = field 2, both varints).
fn rootless_owner(value_hex: &str) -> (u32, u32) {
    let bytes: Vec<u8> =
        (0..value_hex.len()).step_by(2).map(|i| u8::from_str_radix(&value_hex[i..i + 2], 16).unwrap()).collect();
    let (mut uid, mut gid) = (0, 0);
    let mut i = 0;
    while i < bytes.len() {
        let key = bytes[i];
        i += 1;
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let b = bytes[i];
            i += 1;
            v |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        match key >> 3 {
            1 => uid = v as u32,
            2 => gid = v as u32,
            _ => {}
        }
    }
    (uid, gid)
}

/// The same lines for a directory on the host (an unpacked rootfs).
pub fn dir_manifest(root: &Path) -> BTreeMap<String, String> {
    let xattrs = host_xattrs(root);
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, String> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut paths = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    paths.sort();
    for p in paths {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let x = xattrs.get(&rel).cloned().unwrap_or_default();
        let (uid, gid) = x
            .iter()
            .find(|(k, _)| k == "user.rootlesscontainers")
            .map(|(_, v)| rootless_owner(v))
            .unwrap_or((md.uid(), md.gid()));
        let owner = format!("{uid}:{gid}");
        let mode = md.permissions().mode() & 0o7777;
        let ft = md.file_type();
        let mut line = if ft.is_dir() {
            format!("d {mode:o} {owner}")
        } else if ft.is_symlink() {
            format!("l {owner} -> {}", std::fs::read_link(&p).unwrap().to_string_lossy())
        } else if ft.is_file() {
            format!("- {mode:o} {owner} {} {}", sha256_reader(std::fs::File::open(&p).unwrap()), md.len())
        } else if ft.is_fifo() {
            format!("p {mode:o} {owner}")
        } else if ft.is_char_device() {
            format!(
                "c {mode:o} {owner} {}:{}",
                (md.rdev() >> 8) & 0xfff,
                (md.rdev() & 0xff) | ((md.rdev() >> 12) & 0xfff00)
            )
        } else if ft.is_block_device() {
            format!(
                "b {mode:o} {owner} {}:{}",
                (md.rdev() >> 8) & 0xfff,
                (md.rdev() & 0xff) | ((md.rdev() >> 12) & 0xfff00)
            )
        } else {
            format!("s {mode:o} {owner}")
        };
        line.push_str(&format!(" t={}", md.mtime()));
        if ft.is_file() && md.nlink() > 1 {
            let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone());
            line.push_str(&format!(" link={first}"));
        }
        let mut xs: Vec<String> =
            x.iter().filter(|(k, _)| k != "user.rootlesscontainers").map(|(k, v)| format!("{k}={v}")).collect();
        xs.sort();
        if !xs.is_empty() {
            line.push_str(&format!(" xattrs[{}]", xs.join(",")));
        }
        out.insert(rel, line);
    }
    out
}

/// Asserts two manifests are equal, listing every difference.
pub fn assert_same(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>, what: &str) {
    let diffs = differences(ours, theirs);
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(ours.len() > 10, "{what}: suspiciously few paths ({})", ours.len());
}

fn differences(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (p, l) in ours {
        match theirs.get(p) {
            None => diffs.push(format!("only ours:   {p}: {l}")),
            Some(t) if t != l => diffs.push(format!("differs:     {p}:\n   ours   {l}\n   theirs {t}")),
            _ => {}
        }
    }
    for (p, l) in theirs {
        if !ours.contains_key(p) {
            diffs.push(format!("only theirs: {p}: {l}"));
        }
    }
    diffs
}

/// [`assert_same`] for small trees (no minimum path count).
pub fn assert_same_min(ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>, what: &str) {
    let diffs = differences(ours, theirs);
    assert!(diffs.is_empty(), "{what}: {} differences:\n{}", diffs.len(), diffs.join("\n"));
    assert!(!ours.is_empty(), "{what}: no paths");
}

/// A tar header block (ustar) for hand-made hostile layers.
pub fn tar_header(name: &[u8], typ: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14500000000\0");
    h[156] = typ;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A member: header, data, padding.
pub fn tar_member(name: &[u8], typ: u8, data: &[u8], link: &[u8]) -> Vec<u8> {
    let mut v = tar_header(name, typ, data.len() as u64, link);
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

/// A PAX extended header carrying `records`.
pub fn tar_pax(records: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = format!(" {k}={v}\n");
        let mut len = rest.len() + 1;
        while format!("{len}{rest}").len() != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len}{rest}").as_bytes());
    }
    tar_member(b"PaxHeaders/x", b'x', &body, b"")
}

/// The end-of-archive marker.
pub fn tar_end() -> Vec<u8> {
    vec![0u8; 1024]
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// Writes an OCI layout by hand at `dir` (tag `t`) whose layers are `layers` (blob bytes
/// with their media types); `diff_ids` are computed from `uncompressed`.
pub fn write_layout(dir: &Path, layers: &[(Vec<u8>, &str)], uncompressed: &[Vec<u8>]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |b: &[u8]| {
        let h = sha256_hex(b);
        std::fs::write(dir.join("blobs/sha256").join(&h), b).unwrap();
        (format!("sha256:{h}"), b.len())
    };
    let diff_ids: Vec<String> = uncompressed.iter().map(|u| format!("\"sha256:{}\"", sha256_hex(u))).collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let (cd, cs) = put(config.as_bytes());
    let ls: Vec<String> = layers
        .iter()
        .map(|(b, mt)| {
            let (d, s) = put(b);
            format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":{s}}}"#)
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{}]}}"#,
        ls.join(",")
    );
    let (md, ms) = put(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"org.opencontainers.image.ref.name":"t"}}}}]}}"#
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
}

/// Rewrites the image tagged `tag` in the OCI layout `dir` (made by umoci or skopeo) so
/// that its manifest lists its layers in `order` (indexes into the current list, repeats
/// allowed), with the config's diff_ids and layer history to match. The config, manifest
/// and index are written again with their digests recomputed; layer blobs stay as they
/// are.
pub fn relist_layers(dir: &Path, tag: &str, order: &[usize]) {
    use serde_json::Value;
    let blob = |d: &Value| dir.join("blobs/sha256").join(d.as_str().unwrap().strip_prefix("sha256:").unwrap());
    let put = |v: &Value| {
        let b = serde_json::to_vec(v).unwrap();
        let h = sha256_hex(&b);
        std::fs::write(dir.join("blobs/sha256").join(&h), &b).unwrap();
        (Value::from(format!("sha256:{h}")), Value::from(b.len()))
    };
    let mut index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no image tagged {tag} in {}", dir.display()));
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(blob(&desc["digest"])).unwrap()).unwrap();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest["config"]["digest"])).unwrap()).unwrap();
    let pick = |list: &Value| Value::Array(order.iter().map(|&i| list[i].clone()).collect());
    manifest["layers"] = pick(&manifest["layers"]);
    config["rootfs"]["diff_ids"] = pick(&config["rootfs"]["diff_ids"]);
    if let Some(history) = config.get("history").and_then(Value::as_array) {
        let with_layer: Vec<Value> =
            history.iter().filter(|h| h.get("empty_layer") != Some(&Value::Bool(true))).cloned().collect();
        config["history"] = pick(&Value::Array(with_layer));
    }
    let (d, n) = put(&config);
    manifest["config"]["digest"] = d;
    manifest["config"]["size"] = n;
    let (d, n) = put(&manifest);
    desc["digest"] = d;
    desc["size"] = n;
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A layout of uncompressed tar layers.
pub fn write_plain_layout(dir: &Path, tars: &[Vec<u8>]) {
    let layers: Vec<(Vec<u8>, &str)> =
        tars.iter().map(|t| (t.clone(), "application/vnd.oci.image.layer.v1.tar")).collect();
    write_layout(dir, &layers, tars);
}

/// A registry process, killed (by its PID) when dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The registry answers `/v2/` (200, or 401 when it wants credentials).
fn http_ok(addr: &str, auth: bool) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut buf = [0u8; 32];
    let want: &[u8] = if auth { b"401" } else { b"200" };
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf.starts_with(b"HTTP/1.") && &buf[9..12] == want)
}

/// Starts Debian's docker-registry on a free port of 127.0.0.1 with storage under `dir`.
pub fn start_registry(dir: &Path) -> Registry {
    start_registry_with(dir, None)
}

/// [`start_registry`], with Basic auth against an htpasswd file (bcrypt hashes) when given.
pub fn start_registry_with(dir: &Path, htpasswd: Option<&Path>) -> Registry {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: \"{addr}\"}}\n{}",
            storage.display(),
            htpasswd
                .map(|p| format!("auth: {{htpasswd: {{realm: diskcast-test, path: {}}}}}\n", p.display()))
                .unwrap_or_default()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("docker-registry is required for this test (scripts/setup.sh installs it)");
    let reg = Registry { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_ok(&reg.addr, htpasswd.is_some()) {
        assert!(
            Instant::now() < deadline,
            "registry did not come up: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    reg
}

/// An rpm database made by Debian's rpm (see fixtures/mkrpmdb.sh) in `dir`: `n` tiny
/// packages and one gpg-pubkey.
pub fn make_rpmdb(dir: &Path, n: usize) {
    run("bash", &[fixture("mkrpmdb.sh").to_str().unwrap(), dir.to_str().unwrap(), &n.to_string()]);
}

/// What `rpm -qa` lists from the database in `dbdir`, one sorted line per package:
/// `NAME|EPOCH|VERSION-RELEASE|ARCH|LONGSIZE|SUMMARY|LICENSE|SOURCERPM`, with rpm's
/// `(none)` for absent tags.
pub fn rpm_qa(dbdir: &Path) -> Vec<String> {
    let qf = "%{NAME}|%{EPOCH}|%{VERSION}-%{RELEASE}|%{ARCH}|%{LONGSIZE}|%{SUMMARY}|%{LICENSE}|%{SOURCERPM}\n";
    let out = run("rpm", &["--define", "_db_backend sqlite", "--dbpath", dbdir.to_str().unwrap(), "-qa", "--qf", qf]);
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// One package in [`rpm_qa`]'s format, from its fields.
#[allow(clippy::too_many_arguments)]
pub fn rpm_line(
    name: &str,
    epoch: Option<u64>,
    version: &str,
    arch: &str,
    size: Option<u64>,
    summary: Option<&str>,
    license: Option<&str>,
    source: Option<&str>,
) -> String {
    let none = |s: Option<String>| s.unwrap_or_else(|| "(none)".into());
    format!(
        "{name}|{}|{version}|{}|{}|{}|{}|{}",
        none(epoch.map(|e| e.to_string())),
        if arch.is_empty() { "(none)" } else { arch },
        none(size.map(|s| s.to_string())),
        none(summary.map(str::to_string)),
        none(license.map(str::to_string)),
        none(source.map(str::to_string)),
    )
}

/// rpm's older Berkeley DB `Packages` at `out`, written by db5.3_load from the headers of
/// the rpmdb.sqlite `src` (see fixtures/mkrpmbdb.sh); `lorder` 1234 or 4321.
pub fn make_rpm_bdb(src: &Path, out: &Path, page_size: u32, lorder: u32) {
    run(
        "bash",
        &[
            fixture("mkrpmbdb.sh").to_str().unwrap(),
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            &page_size.to_string(),
            &lorder.to_string(),
        ],
    );
}

/// The head of one plain-HTTP request on `c` (10 s to arrive, 64 KiB at most): its
/// request line and its headers with lower-case names. `None` for a TLS ClientHello (the
/// test servers speak plain HTTP only) or a connection that ends first.
pub fn read_http_head(c: &mut TcpStream) -> Option<(String, Vec<(String, String)>)> {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match c.read(&mut b) {
            Ok(1) if head.is_empty() && b[0] == 0x16 => return None,
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    Some((line, headers))
}
