//! `diskcast vulndb update` and `inspect --vuln-db DIR` on what it fetched, with no
//! network: a Python `http.server` subclass on loopback serves `ECOSYSTEM/all.zip` files
//! (zips made by Python's zipfile) with an `ETag` (answering `If-None-Match` with 304),
//! `Last-Modified`, and 500s or a non-zip on demand. The root has a gem `gem install`
//! installed and a Composer `installed.json`; the findings expected are decided by Ruby's
//! `Gem::Version` and composer/semver's `VersionParser`/`Comparator`, their CVSS v4.0
//! score by Red Hat's `cvss` library, the CycloneDX document by cyclonedx-python-lib.

use crate::inspect::{CYCLONEDX_CHECK, assert_python_accepts};
use crate::oci_common::run;
use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The server: files under its root; `ROOT/FAIL` present makes every answer a 500; every
/// request is logged (`GET PATH If-None-Match -> STATUS`) to the log file.
const SERVER: &str = r#"
import hashlib, http.server, io, os, sys
root, log = sys.argv[1], sys.argv[2]
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def log_message(self, *a):
        pass
    def note(self, status):
        with open(log, "a") as f:
            f.write(f"GET {self.path} {self.headers.get('If-None-Match')} -> {status}\n")
    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.exists(os.path.join(root, "FAIL")):
            self.note(500); self.send_error(500); return None
        if not os.path.isfile(path):
            self.note(404); self.send_error(404); return None
        data = open(path, "rb").read()
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            self.note(304)
            self.send_response(304); self.send_header("ETag", etag); self.end_headers()
            return None
        self.note(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", self.date_time_string(os.stat(path).st_mtime))
        self.end_headers()
        return io.BytesIO(data)
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// The server process, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(root: &Path, log: &Path) -> Server {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", SERVER, &s(root), &s(log)])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("server printed {line:?}"));
        Server { child, url: format!("http://127.0.0.1:{port}/"), log: log.to_path_buf() }
    }

    /// The statuses answered since the last call.
    fn statuses(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines().map(|l| l.rsplit(' ').next().unwrap().to_string()).collect()
    }
}

/// `dir/all.zip` holding one `ID.json` per advisory, written by Python's zipfile.
fn write_zip(dir: &Path, advisories: &[Value]) {
    std::fs::create_dir_all(dir).unwrap();
    let files: Vec<Value> =
        advisories.iter().map(|a| json!([format!("{}.json", a["id"].as_str().unwrap()), a.to_string()])).collect();
    let script = "import json, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    \
                  for name, text in json.loads(sys.argv[2]):\n        z.writestr(name, text)\n";
    run("/usr/bin/python3", &["-c", script, &s(&dir.join("all.zip")), &Value::Array(files).to_string()]);
}

/// The CVSS v4.0 vector every advisory here carries.
const V4: &str = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:L/VA:N/SC:N/SI:N/SA:N";

/// An advisory of one `introduced`/`fixed` range (fixed may be absent) or a version list.
fn adv(id: &str, ecosystem: &str, name: &str, introduced: &str, fixed: Option<&str>, versions: &[&str]) -> Value {
    let mut events = vec![json!({"introduced": introduced})];
    if let Some(f) = fixed {
        events.push(json!({"fixed": f}));
    }
    let mut affected = json!({"package": {"ecosystem": ecosystem, "name": name}});
    if versions.is_empty() {
        affected["ranges"] = json!([{"type": "ECOSYSTEM", "events": events}]);
    } else {
        affected["versions"] = json!(versions);
    }
    json!({"id": id, "modified": "2026-01-01T00:00:00Z", "affected": [affected],
           "severity": [{"type": "CVSS_V4", "score": V4}]})
}

/// The reference tool's `<=>` of each pair: Ruby's `Gem::Version`, or composer/semver's
/// `Comparator` on `VersionParser::normalize`d versions.
fn reference_cmp(tool: &str, pairs: &[(&str, &str)]) -> Vec<i32> {
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let (program, script) = match tool {
        "ruby" => (
            "ruby",
            "STDIN.each_line { |l| a, b = l.chomp.split(\"\\t\"); puts(Gem::Version.new(a) <=> Gem::Version.new(b)) }",
        ),
        _ => (
            "php",
            "require '/usr/share/php/Composer/Semver/autoload.php';\nuse Composer\\Semver\\{VersionParser, Comparator};\n\
             $p = new VersionParser();\nwhile (($l = fgets(STDIN)) !== false) {\n  [$a, $b] = explode(\"\\t\", rtrim($l, \"\\n\"));\n  \
             $x = $p->normalize($a); $y = $p->normalize($b);\n  echo Comparator::lessThan($x, $y) ? -1 : (Comparator::equalTo($x, $y) ? 0 : 1), \"\\n\";\n}\n",
        ),
    };
    let dir = tmp();
    let file = dir.path().join("pairs");
    std::fs::write(&file, input).unwrap();
    let out = Command::new(program)
        .args(if program == "ruby" { ["-e", script] } else { ["-r", script] })
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup.sh installs it)"));
    assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect()
}

/// The ids of the advisories that affect `version`, as the reference tool orders it.
fn affected_ids(tool: &str, version: &str, advs: &[Value]) -> BTreeSet<String> {
    let mut pairs = Vec::new();
    for a in advs {
        let aff = &a["affected"][0];
        for v in aff["versions"].as_array().into_iter().flatten() {
            pairs.push((version.to_string(), v.as_str().unwrap().to_string()));
        }
        for e in aff["ranges"][0]["events"].as_array().into_iter().flatten() {
            for k in ["introduced", "fixed"] {
                if let Some(v) = e[k].as_str().filter(|v| *v != "0") {
                    pairs.push((version.to_string(), v.to_string()));
                }
            }
        }
    }
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let answers = reference_cmp(tool, &refs);
    let cmp = |other: &str| answers[pairs.iter().position(|p| p.1 == other).unwrap()];
    advs.iter()
        .filter(|a| {
            let aff = &a["affected"][0];
            if let Some(list) = aff["versions"].as_array() {
                return list.iter().any(|v| cmp(v.as_str().unwrap()) == 0);
            }
            let events = aff["ranges"][0]["events"].as_array().unwrap();
            let intro = events[0]["introduced"].as_str().unwrap();
            let from = intro == "0" || cmp(intro) >= 0;
            let below = events.get(1).and_then(|e| e["fixed"].as_str()).is_none_or(|f| cmp(f) < 0);
            from && below
        })
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// A root with rack 2.2.3.pre1 (built by `gem build`, installed by `gem install`) and
/// symfony/http-kernel v5.4.0-RC1 in a Composer 2 `installed.json`.
fn make_root(t: &Path) -> std::path::PathBuf {
    let root = t.join("root");
    let work = t.join("gemwork");
    std::fs::create_dir_all(&work).unwrap();
    write_file(
        &work.join("rack.gemspec"),
        b"Gem::Specification.new do |s|\n  s.name = \"rack\"\n  s.version = \"2.2.3.pre1\"\n  s.summary = \"t\"\n  \
          s.authors = [\"t\"]\n  s.files = []\n  s.license = \"MIT\"\nend\n",
    );
    let built = Command::new("gem").args(["build", "rack.gemspec"]).current_dir(&work).output().unwrap();
    assert!(built.status.success(), "gem build: {}", String::from_utf8_lossy(&built.stderr));
    run(
        "gem",
        &[
            "install",
            "--local",
            "--no-document",
            "--ignore-dependencies",
            "--install-dir",
            &s(&root.join("usr/share/gems")),
            &s(&work.join("rack-2.2.3.pre1.gem")),
        ],
    );
    let installed = json!({"packages": [{"name": "symfony/http-kernel", "version": "v5.4.0-RC1",
        "version_normalized": "5.4.0.0-RC1", "type": "library", "license": ["MIT"]}], "dev": false});
    std::fs::create_dir_all(root.join("app/vendor/composer")).unwrap();
    write_file(&root.join("app/vendor/composer/installed.json"), installed.to_string().as_bytes());
    root
}

/// What the directory holds, recursively, as relative names.
fn names(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn update_fetches_once_keeps_the_old_database_on_errors_and_inspect_reads_it() {
    let t = tmp();
    let root = make_root(t.path());
    let served = t.path().join("bucket");
    let gems = vec![
        adv("GEM-T-1", "RubyGems", "rack", "2.2.0", Some("2.2.3"), &[]),
        adv("GEM-T-2", "RubyGems", "rack", "0", Some("2.2.3.a"), &[]),
        adv("GEM-T-3", "RubyGems", "rack", "2.2.3.beta", Some("2.2.3.rc1"), &[]),
        adv("GEM-T-4", "RubyGems", "rack", "0", None, &["2.2.3.pre.1", "2.2.2"]),
        adv("GEM-T-5", "RubyGems", "rack", "2.2.3.pre2", None, &[]),
    ];
    let php = vec![
        adv("PHP-T-1", "Packagist", "symfony/http-kernel", "5.4.0-beta1", Some("5.4.0"), &[]),
        adv("PHP-T-2", "Packagist", "symfony/http-kernel", "0", Some("v5.4.0-rc1"), &[]),
        adv("PHP-T-3", "Packagist", "symfony/http-kernel", "5.4.0-RC1", Some("5.4.0-patch1"), &[]),
        adv("PHP-T-4", "Packagist", "symfony/http-kernel", "5.4.0.0-dev", Some("5.4.0-alpha"), &[]),
        adv("PHP-T-5", "Packagist", "symfony/http-kernel", "0", None, &["5.4.0.0-RC1"]),
    ];
    write_zip(&served.join("RubyGems"), &gems);
    write_zip(&served.join("Packagist"), &php);
    let server = Server::start(&served, &t.path().join("requests.log"));
    let db = t.path().join("osv");
    let update = |extra: &[&str]| {
        let db = s(&db);
        let mut args: Vec<&str> = vec!["vulndb", "update", "--url", &server.url, "--output", "json"];
        args.extend_from_slice(extra);
        args.push(&db);
        dc(&args)
    };
    let both = ["--ecosystem", "RubyGems", "--ecosystem", "Packagist"];

    // First run: both fetched, byte for byte, and the zips open in Python.
    let j = update(&both).expect_ok().json();
    let statuses: Vec<&str> =
        j["databases"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["updated", "updated"], "{j}");
    assert_eq!(server.statuses(), ["200", "200"]);
    for e in ["RubyGems", "Packagist"] {
        assert_eq!(
            std::fs::read(db.join(e).join("all.zip")).unwrap(),
            std::fs::read(served.join(e).join("all.zip")).unwrap()
        );
        run(
            "/usr/bin/python3",
            &[
                "-c",
                "import sys, zipfile; assert zipfile.ZipFile(sys.argv[1]).testzip() is None",
                &s(&db.join(e).join("all.zip")),
            ],
        );
    }
    assert_eq!(j["databases"][0]["members"], 5, "{j}");

    // Second run: the server answers 304 to our ETag, nothing is written.
    let j = update(&both).expect_ok().json();
    let statuses: Vec<&str> =
        j["databases"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["unchanged", "unchanged"], "{j}");
    assert_eq!(server.statuses(), ["304", "304"]);
    let text =
        dc(&["vulndb", "update", "--url", &server.url, "--ecosystem", "RubyGems", &s(&db)]).expect_ok().stdout_str();
    assert!(text.starts_with("RubyGems: unchanged"), "{text}");
    server.statuses();

    // inspect reads the directory of zips; findings as Ruby and composer/semver decide.
    let want: BTreeSet<String> =
        affected_ids("ruby", "2.2.3.pre1", &gems).into_iter().chain(affected_ids("php", "v5.4.0-RC1", &php)).collect();
    assert!(want.len() >= 5 && want.len() < 10, "{want:?}");
    let r = dc(&["inspect", "--output", "json", "--vuln-db", &s(&db), &s(&root)]).expect_code(3);
    let got: BTreeSet<String> =
        r.json()["vulnerabilities"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, want);
    // The score Red Hat's cvss library gives the vector, rated with v3's bands.
    let score: f64 = run(
        "/usr/bin/python3",
        &["-c", "import sys; from cvss import CVSS4; print(CVSS4(sys.argv[1]).scores()[0])", V4],
    )
    .trim()
    .parse()
    .unwrap();
    let f = &r.json()["vulnerabilities"][0];
    assert_eq!((f["score"].as_f64(), f["method"].as_str()), (Some(score), Some("CVSSv4")));
    assert_eq!(
        f["severity"],
        if score >= 9.0 {
            "critical"
        } else if score >= 7.0 {
            "high"
        } else {
            "medium"
        }
    );

    // CycloneDX rates them by the v4.0 method, and cyclonedx-python-lib accepts the document.
    let doc = dc(&["inspect", "--output", "cyclonedx-json", "--vuln-db", &s(&db), &s(&root)]).expect_code(3);
    assert_python_accepts(t.path(), CYCLONEDX_CHECK, &doc.stdout, "cyclonedx-json");
    for v in doc.json()["vulnerabilities"].as_array().unwrap() {
        assert_eq!(
            (v["ratings"][0]["method"].as_str(), v["ratings"][0]["score"].as_f64()),
            (Some("CVSSv4"), Some(score))
        );
    }

    // A changed zip is fetched again; the other stays.
    let mut more = gems.clone();
    more.push(adv("GEM-T-6", "RubyGems", "rack", "0", None, &[]));
    write_zip(&served.join("RubyGems"), &more);
    let j = update(&both).expect_ok().json();
    let statuses: Vec<&str> =
        j["databases"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["updated", "unchanged"], "{j}");
    assert_eq!(server.statuses(), ["200", "304"]);
    let before = std::fs::read(db.join("RubyGems/all.zip")).unwrap();
    let files = names(&db);

    // Server errors (tried three times), then an answer that is no zip: refused, the old
    // database intact, nothing left beside it.
    write_zip(&served.join("RubyGems"), &gems);
    write_file(&served.join("FAIL"), b"");
    update(&["--ecosystem", "RubyGems"]).expect_code(1).expect_stderr_all(&[
        "http 500",
        "after 3 attempts",
        "unchanged",
    ]);
    assert_eq!(server.statuses(), ["500", "500", "500"]);
    std::fs::remove_file(served.join("FAIL")).unwrap();
    write_file(&served.join("RubyGems/all.zip"), b"<html>not a zip</html>");
    update(&["--ecosystem", "RubyGems"]).expect_code(1).expect_stderr_all(&["not a zip", "unchanged"]);
    assert_eq!(server.statuses(), ["200"]);
    assert_eq!(std::fs::read(db.join("RubyGems/all.zip")).unwrap(), before);
    assert_eq!(names(&db), files);
    let r = dc(&["inspect", "--output", "json", "--vuln-db", &s(&db), &s(&root)]).expect_code(3);
    assert!(r.json()["vulnerabilities"].as_array().unwrap().iter().any(|f| f["id"] == "GEM-T-6"));

    // Names that are no ecosystem, and URLs that are not HTTP, are refused before anything.
    for bad in ["../x", "a/b", ".git"] {
        dc(&["vulndb", "update", "--url", &server.url, "--ecosystem", bad, &s(&db)])
            .expect_code(1)
            .expect_stderr_all(&["--ecosystem"]);
    }
    dc(&["vulndb", "update", "--url", "file:///etc", &s(&db)]).expect_code(1).expect_stderr_all(&["--url"]);
    assert!(server.statuses().is_empty());
}
